"""Does the GPU default optimizer learn what fastai's Adam learns? `train_run` with `optimizer='fastai'` and `optimizer='torch'`
(torch's fused AdamW with fastai's hyperparameters, the GPU default since issue 7) on the same store, seeds and schedule.

The two follow the same update rule; torch alone also decays batch-norm and bias weights. This script trains both, side by
side and seed by seed, on the embedded food photos with clean labels and prints test accuracy, final losses and seconds per
run. On a CPU it measures learning, not speed (`benchmarks/gpu_train.py` measures the step).

Usage: python benchmarks/optimizer_parity.py [--n 1500] [--size 64] [--epochs 15] [--seeds 0,1] [--arch test_resnet]
Prints a Markdown table. Nothing here asserts anything.
"""
import argparse
import contextlib
import io
import json
import os
import platform
import sys
import tempfile
import time
import warnings
from pathlib import Path


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--n', type=int, default=1500, help='photos to generate (default 1500)')
    ap.add_argument('--size', type=int, default=64, help='image side (default 64)')
    ap.add_argument('--epochs', type=int, default=15, help='one-cycle epochs from scratch (default 15)')
    ap.add_argument('--lr', type=float, default=1e-2, help='learning rate (default 1e-2, as the demo)')
    ap.add_argument('--arch', default='test_resnet', help="timm architecture (default test_resnet, the demo's)")
    ap.add_argument('--seeds', default='0,1', help='training seeds (default 0,1)')
    ap.add_argument('--device', default=None, help='default: the GPU when present')
    args = ap.parse_args(argv)
    warnings.filterwarnings('ignore')
    import torch
    from foodvision.store import Store
    from foodvision.synth import synth_store
    from foodvision.train import TrainConfig, train_run

    with tempfile.TemporaryDirectory(prefix='fv-optimizer-') as work:
        store = Store.create(Path(work)/'food')
        synth_store(store, n=args.n, size=args.size, noise=0.0, seed=0)
        rows = []
        for seed in [int(s) for s in args.seeds.split(',')]:
            for optimizer in ('fastai', 'torch'):
                cfg = TrainConfig(arch=args.arch, size=args.size, epochs=args.epochs, lr=args.lr, pretrained=False, bs=64,
                                  item_tfms='squish', aug=False, num_workers=0, device=args.device, seed=seed, optimizer=optimizer)
                t = time.perf_counter()
                with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):  # fastai's bars
                    run = train_run(store, cfg, runs_dir=Path(work)/'runs')
                seconds = time.perf_counter() - t
                metrics = json.loads((run.path/'eval'/'metrics.json').read_text())
                last = (run.path/'metrics.csv').read_text().strip().splitlines()[-1].split(',')
                header = (run.path/'metrics.csv').read_text().splitlines()[0].split(',')
                log = dict(zip(header, last))
                rows.append((seed, optimizer, metrics['test']['accuracy'], metrics['valid']['accuracy'],
                             float(log['train_loss']), float(log['valid_loss']), seconds))
    cmd = 'python benchmarks/optimizer_parity.py' + ''.join(' ' + a for a in (argv if argv is not None else sys.argv[1:]))
    print(f"`{cmd}`  \ntorch {torch.__version__}, Python {platform.python_version()}, {os.cpu_count()} CPUs, load "
          f"{os.getloadavg()[0]:.1f}; {args.n} photos at {args.size} px, clean labels, {args.arch} from scratch, "
          f"{args.epochs} epochs at lr {args.lr}\n")
    print('| seed | optimizer | test acc | valid acc | final train loss | final valid loss | seconds |')
    print('|---:|---|---:|---:|---:|---:|---:|')
    for seed, opt, test, valid, tl, vl, s in rows:
        print(f"| {seed} | {opt} | {test:.3f} | {valid:.3f} | {tl:.3f} | {vl:.3f} | {s:.0f} |")
    return 0


if __name__ == '__main__':
    sys.exit(main())
