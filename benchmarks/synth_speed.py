"""How fast `synth_store` fills a fresh store: wall seconds for n images, printed as a Markdown table row.

Usage: python benchmarks/synth_speed.py [--n 1000] [--size 128] [--workers N]   (target: n=1000, size=128 under 20 s on 2 cores)
It also checks that images drawn by the process pool are byte-identical to the same images drawn in this process."""
import argparse
import hashlib
import os
import tempfile
import time
from pathlib import Path

from foodvision.draw import synth_jpeg
from foodvision.store import Store, item_id_for
from foodvision.synth import synth_store


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--n', type=int, default=1000)
    ap.add_argument('--size', type=int, default=128)
    ap.add_argument('--workers', type=int, default=None, help='drawing processes (default: synth_store decides)')
    ap.add_argument('--seed', type=int, default=0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        store = Store.create(Path(tmp)/'synth')
        start = time.perf_counter()
        report = synth_store(store, n=args.n, size=args.size, noise=0.1, seed=args.seed, workers=args.workers)
        seconds = time.perf_counter() - start
        n_items = len(store.items())
    assert n_items == args.n, f"store holds {n_items} items, expected {args.n}"
    for row in report.plan.head(20).itertuples():  # the pool must draw exactly what this process draws
        here = item_id_for(hashlib.sha256(synth_jpeg(row.true_label, args.seed, row.index, args.size)).hexdigest())
        assert here == row.item_id, f"image {row.index} differs between the pool and this process"
    workers = args.workers or (min(os.cpu_count() or 1, 8) if args.n >= 200 else 1)
    print('| n | size | workers | cores | seconds | images/s |')
    print('|---:|---:|---:|---:|---:|---:|')
    print(f'| {args.n} | {args.size} | {workers} | {os.cpu_count()} | {seconds:.1f} | {args.n / seconds:.0f} |')


if __name__ == '__main__': main()
