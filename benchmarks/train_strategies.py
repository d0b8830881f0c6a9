"""Which way of training wins on the demo's data, on this machine? Side by side in one run, on one noisy store.

A store of generated food photos (`--n` at `--size` px, 20% of the training labels flipped) is trained on by each strategy;
each is scored on the clean test tier:
  - from scratch: `test_resnet`, one-cycle, 15 epochs at the stored size (the demo's old default);
  - fine-tuning `tf_efficientnet_lite0` from its packaged ImageNet weights, fastai's way (1 frozen + 3 epochs), at 64 and 96 px,
    with and without batch augmentation;
  - a probe: a head trained on the frozen pretrained features (`schedule='probe'`, 10 epochs), at 96 and 128 px.

Usage: python benchmarks/train_strategies.py [--n 3000] [--size 64] [--only NAME,NAME]
Prints a Markdown table: clean test accuracy, valid accuracy on the noisy labels, and wall seconds (training + evaluation).
"""
import argparse, json, os, platform, sys, tempfile, time, warnings
from pathlib import Path

STRATEGIES = {
    'scratch test_resnet 64 px': dict(arch='test_resnet', pretrained=False, epochs=15, size=64, lr=1e-2, aug=False),
    'fine-tune lite0 64 px': dict(epochs=3, size=64, lr=2e-3, aug=False),
    'fine-tune lite0 96 px': dict(epochs=3, size=96, lr=2e-3, aug=False),
    'fine-tune lite0 96 px + aug': dict(epochs=3, size=96, lr=2e-3, aug=True),
    'probe lite0 96 px': dict(schedule='probe', epochs=10, size=96, lr=1e-2, aug=False),
    'probe lite0 128 px': dict(schedule='probe', epochs=10, size=128, lr=1e-2, aug=False),
}

if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--n', type=int, default=3000); ap.add_argument('--size', type=int, default=64)
    ap.add_argument('--only', default=None, help='comma-separated strategy names')
    args = ap.parse_args()
    warnings.filterwarnings('ignore')
    from foodvision.store import Store
    from foodvision.synth import synth_store
    from foodvision.train import TrainConfig, train_run
    names = args.only.split(',') if args.only else list(STRATEGIES)
    rows, t_all = [], time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        store = Store.create(Path(tmp)/'store')
        synth_store(store, n=args.n, size=args.size, noise=0.2, seed=0)
        for name in names:
            t = time.perf_counter()
            run = train_run(store, TrainConfig(num_workers=0, item_tfms='squish', bs=64, **STRATEGIES[name]), runs_dir=Path(tmp)/'runs')
            m = json.loads((run.path/'eval'/'metrics.json').read_text())
            rows.append((name, m['test']['accuracy'], m['valid']['accuracy'], time.perf_counter() - t))
            print(f"  {name}: test {rows[-1][1]:.3f} ({rows[-1][3]:.0f} s)", file=sys.stderr, flush=True)
    import torch
    print(f"\n`{' '.join(['python', 'benchmarks/train_strategies.py', *sys.argv[1:]])}` — {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPU cores, torch {torch.__version__}; n={args.n} at {args.size} px, 20% symmetric noise; "
          f"total {(time.perf_counter() - t_all) / 60:.1f} min\n")
    print('| strategy | clean test accuracy | valid accuracy (noisy labels) | seconds |\n|---|---:|---:|---:|')
    for name, te, va, s in rows: print(f"| {name} | {te:.3f} | {va:.3f} | {s:.0f} |")
