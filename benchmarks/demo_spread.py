"""How far does one retrain move the demo's test accuracy? Every dataset version of a finished demo, retrained with other seeds.

`foodvision demo OUT` trains one model per dataset version (the noisy store, each round's fixes) and one on the clean labels,
all with seed `cfg.seed`. Each is then a single draw: a round that changes a few dozen labels can move the clean test accuracy
by less than the spread between seeds. This script copies the demo's store, undoes the rounds' batches to get back each
version (checking its hash against the demo's lineage), and trains the demo's own `TrainConfig` on it with `--seeds`.

Usage: python benchmarks/demo_spread.py DEMO_OUT [--seeds 1,2,3]
Prints a Markdown table: the clean test accuracy of each version under the demo's seed and each extra seed, their mean and
standard deviation. The demo folder is only read.
"""
import argparse, json, os, platform, shutil, statistics, sys, tempfile, time, warnings
from dataclasses import replace
from pathlib import Path

if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('demo', help='a finished `foodvision demo` folder (with summary.json)')
    ap.add_argument('--seeds', default='1,2,3', help='comma-separated training seeds besides the demo\'s own')
    args = ap.parse_args()
    warnings.filterwarnings('ignore')
    from foodvision.demo import DemoConfig
    from foodvision.run import eval_metrics
    from foodvision.store import Store
    from foodvision.train import train_run
    demo = Path(args.demo)
    summary = json.loads((demo/'summary.json').read_text())
    cfg = DemoConfig(**summary['config'])
    seeds = [int(s) for s in args.seeds.split(',')]
    ev = Store(demo/'store').events()
    batches = list(dict.fromkeys(ev[ev.actor == 'auto'].batch))  # the rounds' batches, oldest first
    def own(r): return demo/Path(r).relative_to(summary['out'])  # the summary's paths are relative to where the demo ran
    # (name, store folder, batches to undo, expected version, the demo's own run)
    todo = [('noisy' if i == 0 else f'round {i}', demo/'store', batches[i:], v['version'], own(r))
            for i, (v, r) in enumerate(zip(summary['versions'], summary['runs']))]
    if summary.get('ceiling'): todo.append(('ceiling (clean labels)', demo/'store-clean', [], None, own(summary['ceiling'])))
    rows, t_all = [], time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for k, (name, src, undo, version, own_run) in enumerate(todo):
            store_dir = Path(tmp)/f'store{k}'
            shutil.copytree(src, store_dir)
            store = Store(store_dir)
            for b in reversed(undo): store.undo_batch(b, reason='demo_spread: back to an earlier version')
            if version: assert store.version() == version, (name, store.version(), version)
            accs = [eval_metrics(own_run)['test']['accuracy']]
            for s in seeds:
                t = time.perf_counter()
                run = train_run(store, replace(cfg.train_config(), seed=s), runs_dir=Path(tmp)/'runs')
                accs.append(eval_metrics(run)['test']['accuracy'])
                print(f"  {name}, seed {s}: test {accs[-1]:.3f} ({time.perf_counter() - t:.0f} s)", file=sys.stderr, flush=True)
            rows.append((name, version or '', accs))
    import torch
    print(f"\n`{' '.join(['python', 'benchmarks/demo_spread.py', *sys.argv[1:]])}` — {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPU cores, torch {torch.__version__}; the demo's TrainConfig ({cfg.arch}, {cfg.schedule}, "
          f"{cfg.epochs} epochs at {cfg.train_size} px); total {(time.perf_counter() - t_all) / 60:.1f} min\n")
    print(f"| version | seed {cfg.seed} (the demo's run) | " + ' | '.join(f'seed {s}' for s in seeds) + ' | mean | sd |')
    print('|---|' + '---:|' * (len(seeds) + 3))
    for name, version, accs in rows:
        print(f"| {name} {version} | " + ' | '.join(f'{a:.3f}' for a in accs)
              + f" | {statistics.mean(accs):.3f} | {statistics.stdev(accs):.3f} |")
