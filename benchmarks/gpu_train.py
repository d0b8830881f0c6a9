"""Training-step throughput on one device: a plain PyTorch + timm loop against foodvision's fastai learner, side by side.

Both sides train the same module (timm's `--arch` under fastai's head, as `foodvision.train.food_learner` builds it and
`foodvision.bundle.build_model` rebuilds it from torch + timm alone) on the same synthetic batches already resident on the device,
with the same batch size, image size, precision (bf16 autocast on a GPU that has it, fp32 on CPU), memory format
(channels_last on GPU) and, with `--compile`, torch.compile. Data loading is excluded on both sides: this is the training
step (forward, loss, backward, optimizer step). `benchmarks/loader.py` measures the loader, `benchmarks/headline_job.py` both.

- plain: `model(x)`, cross-entropy, `backward()`, `torch.optim.AdamW(fused=True)` with the
  hyperparameters fastai's default Adam uses (betas 0.9/0.99, eps 1e-5, decoupled weight decay 0.01);
- ours: `food_learner(...)` exactly as `train_run` makes it (its callbacks, mixed precision and channels_last callbacks,
  and its optimizer: `--opt auto`, the default, is torch's fused AdamW on a GPU and fastai's Adam on a CPU, as `train_run`;
  `--opt fastai` or `--opt torch` forces one), trained with `learn.fit`, progress bar off.

Model FLOPs per image are counted with `torch.utils.flop_counter.FlopCounterMode` on one forward + backward pass; model FLOP
utilisation (MFU) = images/s x FLOPs/image / device peak (`--peak-tflops`; 790 is assumed for an H200's dense bf16).
The two sides alternate `--repeats` times and the best of each is kept. Prints a Markdown table row and the command.

Usage:
  python benchmarks/gpu_train.py --arch resnet18 --size 64 --bs 32 --steps 10 --device cpu     # CPU smoke figure
  python benchmarks/gpu_train.py --arch resnet50 --size 224 --bs 128 --steps 50                 # GPU (bf16, channels_last)
  python benchmarks/gpu_train.py --arch convnext_tiny --size 224 --bs 128 --steps 50 --compile
"""
import argparse
import os
import platform
import sys
import time
import warnings

import torch
import torch.nn.functional as F

PEAK_TFLOPS = {'H200': 790.0, 'H100': 790.0, 'A100': 312.0}  # dense bf16 tensor-core peaks


def sync(device):
    if device.type == 'cuda': torch.cuda.synchronize(device)


def make_batches(n:int, bs:int, size:int, n_classes:int, device, channels_last:bool):
    g = torch.Generator().manual_seed(0)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    xs = [torch.randn(bs, 3, size, size, generator=g).to(device, memory_format=fmt) for _ in range(n)]
    ys = [torch.randint(0, n_classes, (bs,), generator=g).to(device) for _ in range(n)]
    return xs, ys


def plain_loop(arch, xs, ys, n_classes, device, precision, channels_last, warmup, compile)->float:
    "Images/s of a hand-written training loop."
    from foodvision.bundle import build_model
    torch.manual_seed(0)
    model = build_model(arch, n_classes).to(device)
    if channels_last: model = model.to(memory_format=torch.channels_last)
    model.train()
    step_model = torch.compile(model) if compile else model
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.99), eps=1e-5, weight_decay=0.01, fused=True)
    dtype = {'bf16': torch.bfloat16, 'fp16': torch.float16}.get(precision)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == 'fp16')
    def step(x, y):
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss = F.cross_entropy(step_model(x), y)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward(); scaler.step(opt); scaler.update()
    for x, y in zip(xs[:warmup], ys[:warmup]): step(x, y)
    sync(device); t = time.perf_counter()
    for x, y in zip(xs[warmup:], ys[warmup:]): step(x, y)
    sync(device)
    return (len(xs) - warmup) * xs[0].shape[0] / (time.perf_counter() - t)


def fastai_loop(arch, xs, ys, n_classes, device, precision, channels_last, warmup, compile, opt:str)->float:
    "Images/s of `food_learner` trained with `learn.fit` on the same batches."
    from fastai.callback.core import Callback
    from fastai.data.core import DataLoaders, TfmdDL
    from foodvision.train import food_learner

    class Batches(torch.utils.data.Dataset):  # the pre-made device batches, one per step
        def __init__(self, n): self.n = n
        def __len__(self): return self.n
        def __getitem__(self, i): return xs[i], ys[i]

    class Timer(Callback):
        order = 100
        def before_batch(self):
            if self.training and self.iter == warmup: sync(device); self.t = time.perf_counter()
        def after_train(self): sync(device); self.elapsed = time.perf_counter() - self.t

    torch.manual_seed(0)
    dls = DataLoaders(TfmdDL(Batches(len(xs)), bs=None, device=device, create_batch=lambda b: b),
                      TfmdDL(Batches(1), bs=None, device=device, create_batch=lambda b: b), device=device)
    dls.c = n_classes
    learn = food_learner(dls, arch, pretrained=False, n_out=n_classes, precision=precision, channels_last=channels_last,
                         compile=compile, optimizer=opt, loss_func=torch.nn.CrossEntropyLoss())
    learn.dls.after_batch.fs.clear()  # the batches are already normalised tensors: time the step, not the transform
    timer = Timer()
    with learn.no_bar(), learn.no_logging(): learn.fit(1, 1e-3, cbs=timer)
    return (len(xs) - warmup) * xs[0].shape[0] / timer.elapsed


def train_flops_per_image(arch:str, size:int, n_classes:int, device)->float:
    "FLOPs of one forward + backward pass per image, counted by torch's FlopCounterMode."
    from torch.utils.flop_counter import FlopCounterMode
    from foodvision.bundle import build_model
    model = build_model(arch, n_classes).to(device).train()
    x = torch.randn(2, 3, size, size, device=device)
    with FlopCounterMode(display=False) as fc:
        F.cross_entropy(model(x), torch.zeros(2, dtype=torch.long, device=device)).backward()
    return fc.get_total_flops() / 2


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--arch', default='resnet50', help='timm architecture (default resnet50)')
    ap.add_argument('--size', type=int, default=224, help='image side in pixels (default 224)')
    ap.add_argument('--bs', type=int, default=128, help='batch size (default 128)')
    ap.add_argument('--steps', type=int, default=50, help='timed steps per side (default 50)')
    ap.add_argument('--warmup', type=int, default=None, help='untimed steps first (default 10 on GPU, 3 on CPU; more with --compile)')
    ap.add_argument('--classes', type=int, default=101, help='classes of the head (default 101, as Food-101)')
    ap.add_argument('--device', default=None, help="'cpu', 'cuda', 'cuda:1'... (default: the GPU when present)")
    ap.add_argument('--compile', action='store_true', help='torch.compile the model on both sides')
    ap.add_argument('--opt', choices=('auto', 'fastai', 'torch'), default='auto',
                    help="optimizer of our side: auto as train_run (torch's fused AdamW on a GPU, fastai's Adam on a CPU), or force one")
    ap.add_argument('--repeats', type=int, default=2, help='alternate the sides this many times; best of each kept (default 2)')
    ap.add_argument('--peak-tflops', type=float, default=None, help='device peak for MFU (default: 790 on an H200/H100, 312 on an A100)')
    ap.add_argument('--threads', type=int, default=None, help='CPU threads for torch (default: its own)')
    args = ap.parse_args(argv)
    warnings.filterwarnings('ignore')
    if args.threads: torch.set_num_threads(args.threads)
    from foodvision.batches import resolve_device
    from foodvision.train import resolve_precision
    device = resolve_device(args.device); precision = resolve_precision(device)
    channels_last = device.type == 'cuda'
    warmup = args.warmup if args.warmup is not None else (10 if device.type == 'cuda' else 3) + (5 if args.compile else 0)
    xs, ys = make_batches(args.steps + warmup, args.bs, args.size, args.classes, device, channels_last)
    ours, plain = [], []
    for _ in range(args.repeats):  # alternate, so drift in machine load hits both sides alike
        plain.append(plain_loop(args.arch, xs, ys, args.classes, device, precision, channels_last, warmup, args.compile))
        ours.append(fastai_loop(args.arch, xs, ys, args.classes, device, precision, channels_last, warmup, args.compile, args.opt))
    o, p = max(ours), max(plain)
    flops = train_flops_per_image(args.arch, args.size, args.classes, device)
    if device.type == 'cuda':
        name = torch.cuda.get_device_name(device)
        peak = args.peak_tflops or next((v for k, v in PEAK_TFLOPS.items() if k in name), None)
    else: name, peak = f'CPU ({torch.get_num_threads()} threads)', args.peak_tflops
    mfu = lambda ips: f"{ips * flops / (peak * 1e12):.1%}" if peak else 'n/a'
    cmd = 'python benchmarks/gpu_train.py' + ''.join(' ' + a for a in (argv if argv is not None else sys.argv[1:]))
    print(f"`{cmd}`  \n{name}, torch {torch.__version__}, Python {platform.python_version()}, load average "
          f"{os.getloadavg()[0]:.1f}; {args.steps} timed steps after {warmup} warm-up, {args.repeats} alternating repeats "
          f"(plain {[round(v, 1) for v in plain]}, ours {[round(v, 1) for v in ours]} img/s); our optimizer: {args.opt}"
          f"{'; peak ' + str(peak) + ' TFLOP/s' if peak else ''}\n")
    print('| arch | px | batch | precision | compile | device | plain img/s | ours img/s | ours / plain | train GFLOP/img | MFU plain | MFU ours |')
    print('|---|---:|---:|---|---|---|---:|---:|---:|---:|---:|---:|')
    print(f"| {args.arch} | {args.size} | {args.bs} | {precision}{', channels_last' if channels_last else ''} | "
          f"{'yes' if args.compile else 'no'} | {name} | {p:.1f} | {o:.1f} | {o / p:.2f} | {flops / 1e9:.2f} | {mfu(p)} | {mfu(o)} |")
    return 0


if __name__ == '__main__':
    sys.exit(main())
