"""The data flywheel, measured: which photos to label first, and how much of the inbox auto-labelling may take.

A thin script over `foodvision.inbox.simulate_flywheel` (the simulation) and `foodvision.report.flywheel_chart` (the
picture); `foodvision demo --flywheel` runs the same function and puts the same figure and tables in its report.

On a generated store (clean labels, `foodvision.synth.synth_store`) 10% of the training tier starts labelled and the rest
waits in the inbox (`Store.add_to_inbox`); the valid and test tiers are labelled. Each round, every strategy of
`foodvision.inbox.acquisition_order` (random is the baseline) picks `--budget` inbox photos, the oracle (the generated
photos' true labels) labels them through `Store.label_inbox`, and the model is retrained the same way for every strategy:
a logistic-regression probe on frozen pretrained tf_efficientnet_lite0 features (the demo's 'probe' schedule, computed once
per photo). The clean test accuracy is recorded against the number of labelled training photos. The pretrained features
also serve as the diversity embedding.

After the last round, guarded auto-labelling (`foodvision.inbox.autolabel`, THE policy `foodvision.review.AcceptPolicy`)
runs on what is left of each strategy's inbox at each `--thresholds`: the oracle reviews `--review` random photos of the
band, and the rest of the band is labelled only if the Wilson lower bound of their precision reaches `--target`. Its
coverage and its measured precision (against the truth) are reported; each trial is undone before the next.

Usage: python benchmarks/flywheel.py [--n 3000] [--size 64] [--feature-size 96] [--start 0.1] [--budget 50] [--rounds 16]
                                     [--strategies random,margin,entropy,diversity,class_need,hybrid] [--review 100]
                                     [--thresholds 0.9,0.95,0.99] [--target 0.95] [--C 0.05] [--seed 0] [--out benchmarks/results]
Writes <out>/flywheel.png (accuracy vs labels, one curve per strategy) and <out>/flywheel.json; prints Markdown tables.
"""

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--n', type=int, default=3000); ap.add_argument('--size', type=int, default=64)
    ap.add_argument('--feature-size', type=int, default=96); ap.add_argument('--start', type=float, default=0.1)
    ap.add_argument('--budget', type=int, default=50); ap.add_argument('--rounds', type=int, default=16)
    ap.add_argument('--strategies', default='random,margin,entropy,diversity,class_need,hybrid')
    ap.add_argument('--review', type=int, default=100); ap.add_argument('--thresholds', default='0.9,0.95,0.99')
    ap.add_argument('--target', type=float, default=0.95); ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--C', type=float, default=0.05, help='inverse regularisation of the probe (strong: few labels, calibrated probabilities)')
    ap.add_argument('--out', default='benchmarks/results')
    args = ap.parse_args()
    args.strategies, args.thresholds = args.strategies.split(','), [float(t) for t in args.thresholds.split(',')]
    import torch
    from foodvision.inbox import InboxError, simulate_flywheel
    from foodvision.report import flywheel_chart
    from foodvision.similar import timm_embedder
    from foodvision.store import Store
    from foodvision.synth import synth_store
    t0, out = time.monotonic(), Path(args.out); out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix='fv-flywheel-') as d:
        root = Path(d)
        src = Store.create(root/'src'); synth_store(src, n=args.n, size=args.size, seed=args.seed)
        t_store = time.monotonic() - t0
        try:
            res = simulate_flywheel(src, root/'flywheel', strategies=args.strategies, start=args.start, budget=args.budget,
                                    rounds=args.rounds, review=args.review, thresholds=args.thresholds, target=args.target,
                                    C=args.C, seed=args.seed, embedder=timm_embedder(size=args.feature_size),
                                    log=lambda m: print(f"[{time.monotonic() - t0:6.0f}s] {m}", flush=True))
        except InboxError as e: sys.exit(str(e))
    seconds = time.monotonic() - t0
    flywheel_chart(res, out/'flywheel.png')
    env = dict(machine=platform.machine(), cores=os.cpu_count(), torch=torch.__version__, gpu=torch.cuda.is_available())
    result = {**res.to_dict(), 'args': vars(args), 'settings': res.settings, 'env': env,
              'seconds': dict(total=round(seconds, 1), store=round(t_store, 1), features=res.seconds['features'])}
    del result['stores']  # temporary folders, gone
    (out/'flywheel.json').write_text(json.dumps(result, indent=1))
    n_train = res.settings["train"]
    print(f"\n{args.n} generated photos at {args.size} px ({n_train} train); start {args.start:.0%} of train labelled; "
          f"budget {args.budget} x {args.rounds} rounds; lite0 features at {args.feature_size} px; total {seconds / 60:.1f} min\n")
    print(f"Training on all {n_train} labels: test accuracy {res.full_accuracy:.3f}; {res.goal_share:.0%} of it: {res.goal:.3f}\n")
    print(res.curve_table().to_markdown(index=False, floatfmt='.3f'))
    print('\nGuarded auto-labelling (target: Wilson lower bound >= %.2f, %d reviewed at random from the band):\n' % (args.target, args.review))
    print(res.autolabel_table().to_markdown(index=False, floatfmt='.3f'))
    print(f"\nplot: {out/'flywheel.png'}; numbers: {out/'flywheel.json'}")


if __name__ == '__main__':
    main()
