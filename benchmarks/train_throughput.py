"""Training-step throughput: foodvision's fastai learner vs a plain PyTorch + timm loop, side by side in one run.

Both sides train the same module (fastai's `vision_learner` layout for a timm arch, rebuilt by `foodvision.bundle.build_model`),
on the same in-memory batches already on the device, with the same batch size, image size, precision (bf16 autocast on GPU,
fp32 on CPU), memory format and optimizer (Adam). Data loading is excluded on both sides: this measures the training step.
Prints images/s for each, the ratio (ours / plain; goal >= 0.9) and, on GPU, model FLOP utilisation against a given peak.

Usage:
  python benchmarks/train_throughput.py                       # CPU, tiny: resnet18, 64 px, batch 32
  python benchmarks/train_throughput.py --arch resnet50 --size 224 --bs 128 --steps 50 --peak-tflops 790   # GPU (H200 bf16)
"""
import argparse
import time

import torch
import torch.nn.functional as F


def make_batches(n, bs, size, n_classes, device, channels_last):
    g = torch.Generator().manual_seed(0)
    xs = [torch.randn(bs, 3, size, size, generator=g) for _ in range(n)]
    ys = [torch.randint(0, n_classes, (bs,), generator=g) for _ in range(n)]
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return [x.to(device, memory_format=fmt) for x in xs], [y.to(device) for y in ys]


def sync(device):
    if device.type == 'cuda': torch.cuda.synchronize()


def plain_loop(arch, xs, ys, n_classes, device, precision, channels_last, warmup, compile):
    from foodvision.bundle import build_model
    model = build_model(arch, n_classes).to(device)
    if channels_last: model = model.to(memory_format=torch.channels_last)
    if compile: model = torch.compile(model)
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    dtype = {'bf16': torch.bfloat16, 'fp16': torch.float16}.get(precision)
    scaler = torch.amp.GradScaler(enabled=precision == 'fp16')
    def step(x, y):
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward(); scaler.step(opt); scaler.update()
    for x, y in zip(xs[:warmup], ys[:warmup]): step(x, y)
    sync(device); t = time.perf_counter()
    for x, y in zip(xs[warmup:], ys[warmup:]): step(x, y)
    sync(device)
    return (len(xs) - warmup) * xs[0].shape[0] / (time.perf_counter() - t)


def fastai_loop(arch, xs, ys, n_classes, device, precision, channels_last, warmup, compile):
    from fastai.callback.core import Callback
    from fastai.data.core import DataLoaders
    from fastai.data.core import TfmdDL
    from foodvision.train import food_learner

    class Batches(torch.utils.data.Dataset):  # pre-made device batches, served one per step
        def __len__(self): return len(xs)
        def __getitem__(self, i): return xs[i], ys[i]

    class Timer(Callback):
        order = 100
        def before_batch(self):
            if self.training and self.iter == warmup: sync(device); self.t = time.perf_counter()
        def after_train(self): sync(device); self.elapsed = time.perf_counter() - self.t

    dls = DataLoaders(TfmdDL(Batches(), bs=None, device=device, create_batch=lambda b: b),
                      TfmdDL(Batches(), bs=None, device=device, create_batch=lambda b: b, n=1), device=device)
    dls.c = n_classes
    learn = food_learner(dls, arch, pretrained=False, n_out=n_classes, precision=precision, channels_last=channels_last, compile=compile,
                         loss_func=torch.nn.CrossEntropyLoss(), opt_func=_adam())
    learn.dls.after_batch.fs.clear()  # batches are already normalised tensors: time the step, not the transform
    timer = Timer()
    with learn.no_bar(), learn.no_logging(): learn.fit(1, 1e-3, cbs=timer)
    return (len(xs) - warmup) * xs[0].shape[0] / timer.elapsed


def _adam():
    from fastai.optimizer import OptimWrapper
    from functools import partial
    return partial(OptimWrapper, opt=torch.optim.Adam)  # the same optimizer implementation as the plain loop


def train_flops_per_image(arch, size, n_classes, device):
    from torch.utils.flop_counter import FlopCounterMode
    from foodvision.bundle import build_model
    model = build_model(arch, n_classes).to(device).train()
    x = torch.randn(2, 3, size, size, device=device)
    with FlopCounterMode(display=False) as fc:
        model(x).sum().backward()
    return fc.get_total_flops() / 2  # forward + backward, per image


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--arch', default='resnet18'); ap.add_argument('--size', type=int, default=64)
    ap.add_argument('--bs', type=int, default=32); ap.add_argument('--steps', type=int, default=12)
    ap.add_argument('--warmup', type=int, default=3); ap.add_argument('--classes', type=int, default=9)
    ap.add_argument('--device', default=None); ap.add_argument('--compile', action='store_true')
    ap.add_argument('--repeats', type=int, default=2, help='alternate the two sides this many times; best of each is kept')
    ap.add_argument('--peak-tflops', type=float, default=None, help='device peak for MFU (H200 bf16 dense: about 790)')
    args = ap.parse_args()
    from foodvision.train import resolve_device, resolve_precision
    device = resolve_device(args.device); precision = resolve_precision(device)
    channels_last = device.type == 'cuda'
    torch.manual_seed(0)
    xs, ys = make_batches(args.steps + args.warmup, args.bs, args.size, args.classes, device, channels_last)
    ours, plain = [], []
    for _ in range(args.repeats):  # alternate, so drift in machine load hits both sides alike
        plain.append(plain_loop(args.arch, xs, ys, args.classes, device, precision, channels_last, args.warmup, args.compile))
        ours.append(fastai_loop(args.arch, xs, ys, args.classes, device, precision, channels_last, args.warmup, args.compile))
    o, p = max(ours), max(plain)
    flops = train_flops_per_image(args.arch, args.size, args.classes, device)
    mfu = f"{o * flops / (args.peak_tflops * 1e12):.1%}" if args.peak_tflops else 'n/a'
    name = torch.cuda.get_device_name(device) if device.type == 'cuda' else f'CPU ({torch.get_num_threads()} threads)'
    print(f"| {args.arch} | {args.size} | {args.bs} | {precision} | {name} | {o:.1f} | {p:.1f} | {o / p:.2f} | {flops / 1e9:.2f} | {mfu} |")


if __name__ == '__main__':
    main()
