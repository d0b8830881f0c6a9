"""Per-image inference latency at batch 1 on the CPU: fastai's `learn.predict` against foodvision's PyTorch and ONNX Runtime paths.

All three serve the same model, weights and image size. A tiny run is trained with `train_run` on generated photos; its
fastai Learner, still in memory, is fastai's side. The run's bundle is what `load_predictor(..., backend='torch')` loads, and
`export_onnx` turns it into `model.onnx` — checked for parity on the test images — for `load_predictor(..., backend='onnx')`,
the path the app serves. Every path gets the same decoded PIL images, one per call (decoding excluded; resize, normalisation,
forward pass, softmax and top-k included); calls are interleaved round-robin so that a busy machine slows all three alike.
Prints p50 and p95 per path and the speed-up over learn.predict at p50, as a Markdown table with the command and the machine.

Usage:
  python benchmarks/inference_latency.py                          # resnet18, 128 px, 50 timed calls per path
  python benchmarks/inference_latency.py --size 224 --calls 100
"""
import argparse
import os
import platform
import shlex
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch


def cpu_name()->str:
    try:
        for line in Path('/proc/cpuinfo').read_text().splitlines():
            if line.startswith('model name'): return line.split(':', 1)[1].strip()
    except OSError: pass
    return platform.processor() or platform.machine()


def timed(fn, images, i)->float:
    t = time.perf_counter(); fn(images[i % len(images)]); return time.perf_counter() - t


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--arch', default='resnet18', help='timm architecture (default resnet18)')
    ap.add_argument('--size', type=int, default=128, help='model input side in pixels (default 128)')
    ap.add_argument('--calls', type=int, default=50, help='timed calls per path (default 50)')
    ap.add_argument('--warmup', type=int, default=5, help='untimed calls per path first (default 5)')
    ap.add_argument('--n', type=int, default=80, help='generated photos in the store (default 80)')
    ap.add_argument('--photo-size', type=int, default=192, help='side of the generated photos (default 192)')
    ap.add_argument('--threads', type=int, default=None, help='CPU threads for torch and ONNX Runtime (default: their own)')
    ap.add_argument('--keep', metavar='DIR', default=None, help='work in DIR and keep it (default: a temporary folder, removed)')
    args = ap.parse_args(argv)
    warnings.filterwarnings('ignore')

    from foodvision.imaging import open_image_checked
    from foodvision.infer import export_onnx, load_predictor
    from foodvision.store import Store
    from foodvision.synth import synth_store
    from foodvision.train import TrainConfig, train_run

    if args.threads: torch.set_num_threads(args.threads)
    work = Path(args.keep or tempfile.mkdtemp(prefix='fv-latency-'))
    try:
        t0 = time.perf_counter()
        store = Store.create(work/'food')
        synth_store(store, n=args.n, size=args.photo_size, seed=0)
        cfg = TrainConfig(arch=args.arch, epochs=1, size=args.size, bs=16, pretrained=False, num_workers=0, device='cpu')
        run = train_run(store, cfg, runs_dir=work/'runs', evaluate=False)
        learn = run.learn
        images = [open_image_checked(p).convert('RGB') for p in store.items(split='test').path]
        export_onnx(run.bundle, sample_images=images)
        from foodvision.bundle import read_config
        parity = read_config(run.bundle)['onnx']['parity']
        torch_path = load_predictor(run.bundle, backend='torch', threads=args.threads)
        onnx_path = load_predictor(run.bundle, backend='onnx', threads=args.threads)
        setup_s = time.perf_counter() - t0

        def fastai_predict(im):
            with learn.no_bar(): return learn.predict(im)
        paths = {'fastai `learn.predict`': fastai_predict,
                 "foodvision PyTorch (`load_predictor(backend='torch').predict`)": lambda im: torch_path.predict([im]),
                 "foodvision ONNX Runtime (`load_predictor(backend='onnx').predict`, the app's path)": lambda im: onnx_path.predict([im])}

        # the same model: learn.predict's probabilities against the bundle's on every test image
        fastai_probs = torch.stack([fastai_predict(im)[2] for im in images]).float()
        ours = torch_path.predict_proba(torch_path.preprocess(images))
        diff = float((fastai_probs - ours).abs().max())
        same_top1 = int((fastai_probs.argmax(1) == ours.argmax(1)).sum())

        names, fns = list(paths), list(paths.values())
        for i in range(args.warmup):
            for fn in fns: fn(images[i % len(images)])
        times = {name: [] for name in names}
        for i in range(args.calls):
            for k in range(len(fns)):  # rotate the order every call
                j = (i + k) % len(fns)
                times[names[j]].append(timed(fns[j], images, i))
    finally:
        if not args.keep: shutil.rmtree(work, ignore_errors=True)

    p50 = {n: float(np.percentile(t, 50)) * 1e3 for n, t in times.items()}
    p95 = {n: float(np.percentile(t, 95)) * 1e3 for n, t in times.items()}
    base = p50[names[0]]
    import fastai, onnxruntime, timm
    cmd = 'python benchmarks/inference_latency.py' + ''.join(' ' + shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    print(f"### Inference latency, batch 1, CPU — {args.arch} at {args.size} px\n")
    print(f"`{cmd}`  \n{cpu_name()}, {os.cpu_count()} logical CPUs, torch threads {torch.get_num_threads()}, "
          f"ONNX Runtime threads {args.threads or 'default'}; Python {platform.python_version()}, torch {torch.__version__}, "
          f"onnxruntime {onnxruntime.__version__}, fastai {fastai.__version__}, timm {timm.__version__}; "
          f"load average {os.getloadavg()[0]:.1f} at the end (other processes share these CPUs).  \n"
          f"{args.calls} timed calls per path after {args.warmup} warm-up calls, interleaved; {len(images)} test images "
          f"({args.photo_size} px photos), decoded once beforehand. Setup (store, 1-epoch run, export) took {setup_s:.0f} s.\n")
    print("| path | p50 ms | p95 ms | speed-up vs learn.predict (p50) |")
    print("|---|---:|---:|---:|")
    for n in names: print(f"| {n} | {p50[n]:.1f} | {p95[n]:.1f} | {base / p50[n]:.1f}× |")
    print(f"\nSame model: learn.predict vs the bundle, max |prob difference| {diff:.1e}, top-1 agreement {same_top1}/{len(images)}; "
          f"ONNX vs PyTorch parity: max |prob difference| {parity['max_abs_diff']:.1e}, "
          f"top-1 agreement {parity['top1_agree']}/{parity['n_images']}.")
    ratio = base / p50[names[2]]
    print(f"\nGoal (app path >= 3x faster than learn.predict at p50): {'met' if ratio >= 3 else 'NOT met'} ({ratio:.2f}×).")
    return 0


if __name__ == '__main__':
    sys.exit(main())
