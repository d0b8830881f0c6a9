"""Inference throughput on image files: foodvision's evaluation and embedding extraction against a plain PyTorch loop.

All sides read the same JPEG files (generated photos, 512x384 by default, see `benchmarks/loader.py`) and run the same model
and weights (a bundle of `--arch` at `--size` px, random weights: speed does not depend on them), at the same batch size and
number of loader processes; decoding, resizing and normalisation are included.

- ours, evaluation: `foodvision.evaluate.predict_paths(bundle, paths, bs, num_workers)`, what `evaluate_run` calls: the
  bundle's own preprocessing per image, then class probabilities on the CPU;
- ours, embeddings: `foodvision.similar.embed_paths(paths, bundle_embedder(bundle), bs, num_workers)`, what label-issue finding
  calls: the body and pooling of the same model, features to numpy;
- both of ours are `foodvision.batches.map_batches`, the one batch loop of training, evaluation, finding and serving; on a
  GPU it runs in bf16 autocast with channels_last (`load_bundle(device='cuda')`), so the like-for-like plain loop there is
  `--plain-amp`;
- plain: a `torch.utils.data.DataLoader` over the files (Pillow decode, the same validation resize, uint8 tensors), the
  batch normalised on the device, `model(x)` under `torch.inference_mode()`, softmax (or the pooled features) to the CPU.
  With `--plain-amp` (GPU) the plain loop also uses bf16 autocast and channels_last, as a hand-written GPU loop would.

The sides alternate `--repeats` times; the best pass of each is kept. Prints a Markdown table with the ratios (goal >= 0.9).

Usage:
  python benchmarks/infer_throughput.py --device cpu --arch resnet18 --size 128 --n 128 --bs 32 --threads 1   # CPU figure
  python benchmarks/infer_throughput.py --device cuda --arch resnet50 --size 224 --n 4096 --bs 256 --workers 8
  python benchmarks/infer_throughput.py --device cuda --arch resnet50 --size 224 --n 4096 --bs 256 --workers 8 --plain-amp
"""
import argparse
import os
import platform
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from loader import photo_store  # noqa: E402


class Files(torch.utils.data.Dataset):
    "Image files to uint8 CHW tensors with the bundle's validation resize."
    def __init__(self, paths, size, resize): self.paths, self.size, self.resize = list(paths), size, resize
    def __len__(self): return len(self.paths)
    def __getitem__(self, i):
        from PIL import Image
        from foodvision.bundle import resize_like_fastai
        with Image.open(self.paths[i]) as im: im = resize_like_fastai(im.convert('RGB'), self.size, self.resize)
        return torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1)


def plain_loop(model, paths, cfg, device, bs, workers, amp:bool, features:bool):
    "Images/s of a hand-written inference loop (probabilities, or pooled features with `features`)."
    dl = torch.utils.data.DataLoader(Files(paths, cfg['size'], cfg['resize']), batch_size=bs, num_workers=workers,
                                     pin_memory=device.type == 'cuda')
    mean = torch.tensor(cfg['mean'], device=device).view(1, 3, 1, 1) * 255
    std = torch.tensor(cfg['std'], device=device).view(1, 3, 1, 1) * 255
    fmt = torch.channels_last if amp else torch.contiguous_format
    out = []
    t = time.perf_counter()
    with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
        for xb in dl:
            x = ((xb.to(device, non_blocking=True).float() - mean) / std).contiguous(memory_format=fmt)
            y = model(x).float()
            out.append((y.flatten(1) if features else y.softmax(1)).cpu())
    return len(paths) / (time.perf_counter() - t)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--arch', default='resnet18', help='timm architecture (default resnet18)')
    ap.add_argument('--size', type=int, default=224, help='model input side (default 224)')
    ap.add_argument('--n', type=int, default=256, help='photos to run through (default 256)')
    ap.add_argument('--photo', default='512x384', help='photo width x height (default 512x384)')
    ap.add_argument('--bs', type=int, default=64, help='batch size (default 64, as evaluate_run and embed_paths use)')
    ap.add_argument('--workers', type=int, default=0, help='loader processes for all sides (default 0, as evaluate_run and embed_paths on a CPU)')
    ap.add_argument('--device', default=None, help='default: the GPU when present')
    ap.add_argument('--plain-amp', action='store_true', help='plain loop in bf16 autocast + channels_last (GPU)')
    ap.add_argument('--threads', type=int, default=None, help='CPU threads for torch (default: its own)')
    ap.add_argument('--repeats', type=int, default=2, help='alternating passes per side (default 2); the best is kept')
    ap.add_argument('--store', default=None, help='keep the generated photos in this folder and reuse them')
    args = ap.parse_args(argv)
    warnings.filterwarnings('ignore')
    if args.threads: torch.set_num_threads(args.threads)
    from foodvision.bundle import build_model, load_bundle, save_bundle
    from foodvision.evaluate import predict_paths
    from foodvision.similar import _body_and_pool, bundle_embedder, embed_paths
    from foodvision.draw import SYNTH_CLASSES
    from foodvision.batches import resolve_device
    from foodvision.weights import norm_stats

    device = resolve_device(args.device)
    w, h = (int(v) for v in args.photo.lower().split('x'))
    work = Path(tempfile.mkdtemp(prefix='fv-infer-'))
    try:
        store = photo_store(Path(args.store) if args.store else work/'store', args.n, w, h)
        paths = store.items(status=None).path.tolist()[:args.n]
        mean, std = norm_stats(args.arch)
        torch.manual_seed(0)
        save_bundle(build_model(args.arch, len(SYNTH_CLASSES)), work/'bundle', arch=args.arch, vocab=list(SYNTH_CLASSES),
                    size=args.size, mean=mean, std=std, resize='random_crop')
        bundle = load_bundle(work/'bundle', device=device)
        embedder = bundle_embedder(bundle)
        cfg = bundle.config
        plain_model = bundle.model if not args.plain_amp else bundle.model.to(memory_format=torch.channels_last)
        plain_body = _body_and_pool(plain_model, cfg['head'].get('pool', True))
        sides = {
            'ours: evaluation (`predict_paths`)': lambda: len(paths) / _timed(lambda: predict_paths(bundle, paths, bs=args.bs, num_workers=args.workers), device),
            'plain: probabilities': lambda: plain_loop(plain_model, paths, cfg, device, args.bs, args.workers, args.plain_amp, False),
            'ours: embeddings (`embed_paths`)': lambda: len(paths) / _timed(lambda: embed_paths(paths, embedder, bs=args.bs, num_workers=args.workers), device),
            'plain: pooled features': lambda: plain_loop(plain_body, paths, cfg, device, args.bs, args.workers, args.plain_amp, True),
        }
        for fn in sides.values(): fn() if device.type == 'cuda' else None  # GPU warm-up (cuDNN autotuning, allocator)
        rates = {k: [] for k in sides}
        for _ in range(args.repeats):
            for k, fn in sides.items(): rates[k].append(fn())
        # the same model on both paths: probabilities and features agree
        p_ours = predict_paths(bundle, paths[:8], bs=8)
        f_ours = embed_paths(paths[:8], embedder, bs=8)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    best = {k: max(v) for k, v in rates.items()}
    name = torch.cuda.get_device_name(device) if device.type == 'cuda' else f'CPU ({torch.get_num_threads()} threads)'
    cmd = 'python benchmarks/infer_throughput.py' + ''.join(' ' + a for a in (argv if argv is not None else sys.argv[1:]))
    print(f"`{cmd}`  \n{name}, torch {torch.__version__}, Python {platform.python_version()}, load average "
          f"{os.getloadavg()[0]:.1f}; {len(paths)} photos {w}x{h} JPEG; {args.arch} at {args.size} px, batch {args.bs}, "
          f"{args.workers} loader processes; plain loop {'bf16 + channels_last' if args.plain_amp else 'fp32'}, "
          f"ours {'bf16 + channels_last' if device.type == 'cuda' else 'fp32'}; "
          f"passes (img/s): {({k.split(' (')[0]: [round(v, 1) for v in vs] for k, vs in rates.items()})}; "
          f"checked: probabilities {tuple(p_ours.shape)}, features {f_ours.shape}\n")
    print('| task | device | ours img/s | plain img/s | ours / plain |')
    print('|---|---|---:|---:|---:|')
    (e, pe), (m, pm) = list(best.items())[:2], list(best.items())[2:]
    print(f"| evaluation (`predict_paths`) | {name} | {e[1]:.1f} | {pe[1]:.1f} | {e[1] / pe[1]:.2f} |")
    print(f"| embeddings (`embed_paths`) | {name} | {m[1]:.1f} | {pm[1]:.1f} | {m[1] / pm[1]:.2f} |")
    return 0


def _timed(fn, device)->float:
    t = time.perf_counter(); fn()
    if device.type == 'cuda': torch.cuda.synchronize()
    return time.perf_counter() - t


if __name__ == '__main__':
    sys.exit(main())
