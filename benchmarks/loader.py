"""Loader throughput alone: images/s of foodvision's training DataLoader (decode + crop/resize + augment), stock vs fast.

The store is filled with generated photos of realistic size and weight: a synthetic food scene (`foodvision.draw`) upscaled to
`--photo` (default 512x384) with sensor noise, saved as JPEG quality 90, about 48 KB at 512x384, so decoding costs what a real
photo's would. Both sides iterate `food_dls(...).train` over the same store with the same size, batch size, worker count and
device; the only difference is `fast`:

- stock (`fast=False`): fastai's own pipeline, `PILImage.create` then `RandomResizedCrop` (Pillow resize) then `ToTensor`;
- fast (`fast=True`, the default): `OpenImage` (guarded open, JPEG decoded at reduced size when every random crop keeps its
  full resolution) then `FastRandomResizedCrop` (same crops, torch's uint8 antialiased resize).

Batch augmentation (`aug_transforms`) runs on `--device` (on the GPU in real training; `--no-aug` leaves it out). Each pass
is a full epoch including the loader processes' start-up; the sides alternate and the best pass of each is kept.

Usage:
  python benchmarks/loader.py                                   # 512x384 JPEGs, 224 px, batch 64, every core, CPU
  python benchmarks/loader.py --size 128 --photo 1600x1200      # bigger photos: reduced-size decoding kicks in
  python benchmarks/loader.py --n 4096 --bs 128 --device cuda   # on a GPU machine: compare with the training step's images/s
"""
import argparse
import io
import os
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path


def photo_jpeg(label:str, seed:int, index:int, w:int=512, h:int=384, quality:int=90)->bytes:
    "A synthetic food photo of class `label`, `w` x `h`, with sensor noise, as JPEG bytes (same arguments, same bytes)."
    import numpy as np
    from PIL import Image
    from foodvision.draw import synth_image
    rng = np.random.default_rng([seed, index, 7])
    im = synth_image(label, seed, index, size=128).resize((w, h), Image.Resampling.BICUBIC)
    a = np.asarray(im, dtype=np.float32) + rng.standard_normal((h, w, 3), dtype=np.float32) * 5
    buf = io.BytesIO()
    Image.fromarray(np.clip(a, 0, 255).astype(np.uint8)).save(buf, 'JPEG', quality=quality)
    return buf.getvalue()


def _photo_job(job): return photo_jpeg(*job)


def photo_store(path, n:int, w:int=512, h:int=384, splits=(0.85, 0.15, 0.0), seed:int=0, workers:int|None=None):
    "A store at `path` holding `n` generated photos (reused as is when it already holds them)."
    from multiprocessing import get_context
    import numpy as np
    from foodvision.store import Store
    from foodvision.draw import SYNTH_CLASSES
    store = Store.create(path, exist_ok=True)
    have = len(store.items(status=None))
    if have >= n: return store
    rng = np.random.default_rng(seed)
    labels = [SYNTH_CLASSES[i % len(SYNTH_CLASSES)] for i in range(n)]
    counts = np.round(np.array(splits, dtype=float) / sum(splits) * n).astype(int); counts[0] = n - counts[1:].sum()
    tiers = rng.permutation(np.repeat(['train', 'valid', 'test'], counts))
    workers = workers or min(16, os.cpu_count() or 1)
    chunk = 2000
    with get_context('fork').Pool(workers) as pool:
        for start in range(have, n, chunk):
            jobs = [(labels[i], seed, i, w, h) for i in range(start, min(n, start + chunk))]
            blobs = pool.map(_photo_job, jobs, chunksize=16)
            store.add_images([dict(data=b, label=labels[i], split=str(tiers[i]), source='synth-photo', licence='CC0-1.0')
                              for i, b in zip(range(start, start + len(jobs)), blobs)], actor='import', reason='benchmark photos')
    return store


def loader_pass(dl)->float:
    "Images per second for one full pass over `dl` (start-up of its loader processes included)."
    import torch
    t = time.perf_counter(); n = 0
    for xb, yb in dl: n += len(xb)
    if xb.device.type == 'cuda': torch.cuda.synchronize()
    return n / (time.perf_counter() - t)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--n', type=int, default=512, help='photos in the store (default 512; 85%% train)')
    ap.add_argument('--photo', default='512x384', help='photo width x height (default 512x384)')
    ap.add_argument('--size', type=int, default=224, help='training image side (default 224)')
    ap.add_argument('--bs', type=int, default=64, help='batch size (default 64)')
    ap.add_argument('--workers', type=int, default=None, help="loader processes (default: food_dls's, one per available core)")
    ap.add_argument('--device', default='cpu', help='where batches go and batch augmentation runs (default cpu)')
    ap.add_argument('--no-aug', action='store_true', help='leave out the batch augmentation')
    ap.add_argument('--repeats', type=int, default=2, help='passes per side, alternating (default 2); the best is kept')
    ap.add_argument('--store', default=None, help='keep the generated store in this folder and reuse it next time')
    args = ap.parse_args(argv)
    warnings.filterwarnings('ignore')
    import torch
    from foodvision.batches import available_cpus
    from foodvision.data import food_dls

    w, h = (int(v) for v in args.photo.lower().split('x'))
    work = Path(args.store) if args.store else Path(tempfile.mkdtemp(prefix='fv-loader-'))
    try:
        t0 = time.perf_counter()
        store = photo_store(work, args.n, w, h)
        setup = time.perf_counter() - t0
        rates = {}
        for _ in range(args.repeats):
            for fast in (False, True):
                dls = food_dls(store, size=args.size, bs=args.bs, num_workers=args.workers, aug=not args.no_aug,
                               device=args.device, fast=fast)
                rates.setdefault(fast, []).append(loader_pass(dls.train))
        workers = dls.train.fake_l.num_workers
        n_store, n_train = len(store.items(status=None)), len(dls.train_ds)
    finally:
        if not args.store: shutil.rmtree(work, ignore_errors=True)
    stock, fast = max(rates[False]), max(rates[True])
    cmd = 'python benchmarks/loader.py' + ''.join(' ' + a for a in (argv if argv is not None else sys.argv[1:]))
    dev = torch.cuda.get_device_name() if torch.device(args.device).type == 'cuda' else 'CPU'
    print(f"`{cmd}`  \n{available_cpus()} available cores, {workers} loader processes, batches to {dev}; "
          f"load average {os.getloadavg()[0]:.1f}; store of {n_store} photos {w}x{h}, {n_train} training items (setup {setup:.0f} s); "
          f"passes: stock {[round(r) for r in rates[False]]}, fast {[round(r) for r in rates[True]]} img/s\n")
    print('| photo | px | batch | workers | batch aug | stock img/s | fast img/s | fast / stock |')
    print('|---|---:|---:|---:|---|---:|---:|---:|')
    print(f"| {w}x{h} JPEG | {args.size} | {args.bs} | {workers} | {'no' if args.no_aug else 'on ' + dev} | {stock:.0f} | {fast:.0f} | {fast / stock:.2f} |")
    return 0


if __name__ == '__main__':
    sys.exit(main())
