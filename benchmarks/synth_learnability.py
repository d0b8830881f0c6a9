"""Is the synthetic data learnable but not trivial? Train a tiny CNN from scratch on it and print valid/test accuracy.

Usage: python benchmarks/synth_learnability.py [--n 2000] [--size 64] [--epochs 8] [--noise 0.0]
Plain PyTorch on the CPU (about a minute on 2 cores). Expect clearly less than 100% and far more than chance (1/9)."""
import argparse
import os
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from foodvision.draw import SYNTH_CLASSES
from foodvision.store import Store
from foodvision.synth import synth_store


def load(store, split, size):
    "Images of one split as a float tensor (N, 3, size, size) in [0, 1], with their label indices."
    items = store.items(split=split).sort_values('id')
    xs = np.stack([np.asarray(Image.open(store.image_path(i)).convert('RGB').resize((size, size))) for i in items.id])
    ys = [SYNTH_CLASSES.index(label) for label in items.label]
    return torch.from_numpy(xs).permute(0, 3, 1, 2).float().div(255), torch.tensor(ys)


def tiny_cnn(n_classes):
    "Four conv-BN-ReLU-pool blocks, global average pooling and a linear head (about 0.3M parameters)."
    def block(cin, cout): return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(), nn.MaxPool2d(2))
    return nn.Sequential(block(3, 32), block(32, 64), block(64, 128), block(128, 128),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.2), nn.Linear(128, n_classes))


def accuracy(model, x, y, bs=256):
    model.eval()
    with torch.no_grad(): preds = torch.cat([model(x[i:i + bs]).argmax(1) for i in range(0, len(x), bs)])
    return (preds == y).float().mean().item(), preds


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--n', type=int, default=2000)
    ap.add_argument('--size', type=int, default=64)
    ap.add_argument('--epochs', type=int, default=8)
    ap.add_argument('--noise', type=float, default=0.0)
    ap.add_argument('--seed', type=int, default=0)
    args = ap.parse_args()
    torch.manual_seed(args.seed); torch.set_num_threads(os.cpu_count() or 1)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        store = Store.create(Path(tmp)/'synth')
        synth_store(store, n=args.n, size=args.size, noise=args.noise, seed=args.seed)
        (xt, yt), (xv, yv), (xs, ys) = (load(store, split, args.size) for split in ('train', 'valid', 'test'))
    model = tiny_cnn(len(SYNTH_CLASSES))
    steps = args.epochs * ((len(xt) + 63) // 64)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.05)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps)
    for epoch in range(args.epochs):
        model.train()
        for idx in torch.randperm(len(xt)).split(64):
            xb = xt[idx]
            flip = torch.rand(len(xb)) < 0.5
            xb = torch.where(flip[:, None, None, None], xb.flip(3), xb)  # the only augmentation: horizontal flips
            loss = nn.functional.cross_entropy(model(xb), yt[idx])
            opt.zero_grad(); loss.backward(); opt.step(); sched.step()
        print(f'epoch {epoch + 1}: loss {loss.item():.3f}, valid accuracy {accuracy(model, xv, yv)[0]:.3f}', flush=True)
    train_acc, valid_acc = accuracy(model, xt, yt)[0], accuracy(model, xv, yv)[0]
    test_acc, preds = accuracy(model, xs, ys)
    confused = Counter((SYNTH_CLASSES[t], SYNTH_CLASSES[p]) for t, p in zip(ys.tolist(), preds.tolist()) if t != p)
    print('most confused on test (true -> predicted):', ', '.join(f'{t}->{p} {k}' for (t, p), k in confused.most_common(5)))
    print('| n | size | epochs | noise | train acc | valid acc | test acc | chance | seconds |')
    print('|---:|---:|---:|---:|---:|---:|---:|---:|---:|')
    print(f'| {args.n} | {args.size} | {args.epochs} | {args.noise} | {train_acc:.3f} | {valid_acc:.3f} | {test_acc:.3f} | '
          f'{1 / len(SYNTH_CLASSES):.3f} | {time.perf_counter() - start:.0f} |')


if __name__ == '__main__': main()
