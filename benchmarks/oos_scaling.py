"""How the time of the two out-of-sample routes of `foodvision.scores` grows with the number of items.

- embedding route: `embed_paths` (resnet18 body + pooling, random weights: the same compute as a run's bundle) followed by
  `embedding_oof_probs` (K-fold logistic regression, C chosen from `C_GRID` by held-out log-loss, as `find_issues` does);
- fine-tune route: `finetune_oof_probs` (K `food_learner` trainings, resnet18 from scratch, each predicting its held-out fold).

Items are a seeded sample of the train and valid tiers of a store (e.g. the 100k store `benchmarks/scale.py` builds).
For each route it fits time = a * n^b on the measured sizes (least squares in log-log) and prints the extrapolation to
`--target` items, labelled as extrapolated.

Usage: python benchmarks/oos_scaling.py --store /tmp/scale/store-100000 [--sizes 1000,3000,10000] [--routes embedding,finetune]
                                        [--size 32] [--epochs 1] [--folds 5] [--target 100000] [--fixed-c]
Prints a Markdown table. Nothing here asserts a time.
"""
import argparse
import os
import platform
import resource
import time
import warnings

import numpy as np


def sample_items(store, n:int, seed:int=0):
    "`n` items of the train and valid tiers, classes in proportion, seeded."
    items = store.items()
    items = items[items.split.isin(['train', 'valid'])]
    if n > len(items): raise SystemExit(f"the store has only {len(items)} train/valid items, fewer than {n}")
    return items.sample(n, random_state=seed).sort_values('id').reset_index(drop=True)


def embedding_route(items, vocab, size:int, folds:int, C=None, bs:int=64)->dict:
    from foodvision.scores import embedding_oof_probs
    from foodvision.similar import embed_paths, timm_embedder
    t0 = time.perf_counter()
    feats = embed_paths(items.path, timm_embedder('resnet18', pretrained=False, size=size), bs)
    t1 = time.perf_counter()
    probs = embedding_oof_probs(feats, items.label, vocab, folds, C=C)
    t2 = time.perf_counter()
    assert probs.shape == (len(items), len(vocab))
    return dict(embed=t1 - t0, fit=t2 - t1, total=t2 - t0, dims=feats.shape[1])


def finetune_route(items, vocab, size:int, folds:int, epochs:int)->dict:
    from foodvision.scores import finetune_oof_probs
    from foodvision.train import TrainConfig
    cfg = TrainConfig(arch='resnet18', size=size, epochs=epochs, pretrained=False, bs=64, num_workers=0, device='cpu', seed=0)
    t0 = time.perf_counter()
    probs = finetune_oof_probs(items, vocab, cfg, folds, progress=False)
    assert probs.shape == (len(items), len(vocab))
    return dict(total=time.perf_counter() - t0)


def fit_power(ns, ts)->tuple:
    "a, b of t = a * n^b by least squares on log t."
    b, loga = np.polyfit(np.log(ns), np.log(ts), 1)
    return float(np.exp(loga)), float(b)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--store', required=True)
    p.add_argument('--sizes', default='1000,3000,10000')
    p.add_argument('--routes', default='embedding,finetune')
    p.add_argument('--size', type=int, default=32, help='image side in pixels')
    p.add_argument('--epochs', type=int, default=1, help='fine-tune route: epochs per fold')
    p.add_argument('--folds', type=int, default=5)
    p.add_argument('--target', type=int, default=100_000)
    p.add_argument('--fixed-c', action='store_true', help='embedding route: one C (0.01) instead of the grid of 5')
    a = p.parse_args(argv)
    warnings.filterwarnings('ignore')
    import torch
    from foodvision.store import Store
    store = Store(a.store)
    print(f"python {platform.python_version()}, torch {torch.__version__}, {torch.get_num_threads()} torch threads, "
          f"{os.cpu_count()} CPUs, load {tuple(round(x, 2) for x in os.getloadavg())}; {a.size} px, K={a.folds}, "
          f"fine-tune {a.epochs} epoch(s) per fold, embedding C {'0.01' if a.fixed_c else 'grid of 5'}")
    print("| route | items | seconds | detail | load (1 min) |\n|---|---:|---:|---|---:|")
    results = {}
    for n in [int(s) for s in a.sizes.split(',')]:
        items = sample_items(store, n)
        vocab = sorted(items.label.unique())
        for route in a.routes.split(','):
            if route == 'embedding':
                r = embedding_route(items, vocab, a.size, a.folds, 0.01 if a.fixed_c else None)
                detail = f"embed {r['embed']:.1f} s ({n / r['embed']:.0f} img/s), logistic regression {r['fit']:.1f} s ({r['dims']} dims)"
            else:
                r = finetune_route(items, vocab, a.size, a.folds, a.epochs)
                detail = f"{a.folds} trainings of {a.epochs} epoch(s): {r['total'] / a.folds:.1f} s per fold"
            results.setdefault(route, []).append((n, r['total']))
            print(f"| {route} | {n} | {r['total']:.1f} | {detail} | {os.getloadavg()[0]:.2f} |", flush=True)
    print()
    for route, pts in results.items():
        ns, ts = zip(*pts)
        if len(ns) < 2: continue
        a_, b_ = fit_power(ns, ts)
        print(f"{route}: t ≈ {a_:.3g} · n^{b_:.2f} s; EXTRAPOLATED to {a.target}: {a_ * a.target ** b_:.0f} s "
              f"({a_ * a.target ** b_ / 3600:.2f} h)")
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB; load now {tuple(round(x, 2) for x in os.getloadavg())}")


if __name__ == '__main__':
    main()
