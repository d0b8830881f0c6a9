"""The engine at scale: store import, version hash, status, diff, the most-wrong and label-quality queries, and the cleaner's
paging, each timed on a store of N small generated images (default 100,000 at 32 px).

Images: a few hundred `foodvision.draw` renders, each written many times with a different stamp (a few pixels encoding the
file's number and a brightness shift), so every file is a distinct, decodable PNG and the store keeps all of them.
The evaluation and issues tables are synthesised with the right columns (random but realistic probabilities through
`prediction_table`, `label_scores` and the `foodvision.issues` rankings) rather than by running a model on 100k images.

Usage: python benchmarks/scale.py [--n 100000] [--root /tmp/scale] [--steps gen,import,store,queries,cleaner] [--size 32]
Prints one Markdown table row per measurement (seconds, and RSS in MB where it matters). Nothing here asserts a time.
`--root` is created if missing; delete it when done (the script never deletes anything).
"""
import argparse
import contextlib
import io
import json
import os
import platform
import resource
import sys
import time
from pathlib import Path

import numpy as np

ROWS = []


def rss_mb()->float:
    "Current resident set size of this process, MB."
    for line in Path('/proc/self/status').read_text().splitlines():
        if line.startswith('VmRSS:'): return int(line.split()[1]) / 1024
    return float('nan')


def peak_mb()->float: return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def row(what, seconds, note=''):
    ROWS.append((what, seconds, note))
    print(f"| {what} | {seconds:.3f} | {note} |", flush=True)


@contextlib.contextmanager
def timed(what, note=''):
    start = time.perf_counter()
    extra = {}
    yield extra
    row(what, time.perf_counter() - start, extra.get('note', note))


# --- images -------------------------------------------------------------------------------------------------------------
def generate(src:Path, n:int, size:int, variants:int=48, seed:int=0):
    "N distinct PNGs in an ImageFolder with tiers: src/<split>/<label>/<i>.png (70/15/15, classes in turn)."
    from PIL import Image
    from foodvision.draw import SYNTH_CLASSES, synth_image
    bases = {c: [np.asarray(synth_image(c, seed, k, size), dtype=np.int16) for k in range(variants)] for c in SYNTH_CLASSES}
    rng = np.random.default_rng(seed)
    splits = rng.choice(['train', 'valid', 'test'], size=n, p=[0.7, 0.15, 0.15])
    for s in ('train', 'valid', 'test'):
        for c in SYNTH_CLASSES: (src/s/c).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        c = SYNTH_CLASSES[i % len(SYNTH_CLASSES)]
        a = bases[c][(i // len(SYNTH_CLASSES)) % variants] + int(rng.integers(-12, 13))
        a[0, :3] = [[(i >> 16) & 255, (i >> 8) & 255, i & 255]] * 3  # the stamp: file number in the top-left pixels
        Image.fromarray(np.clip(a, 0, 255).astype(np.uint8)).save(src/splits[i]/c/f"{i:06d}.png", compress_level=1)


# --- store ----------------------------------------------------------------------------------------------------------------
def store_steps(store, root:Path, n:int):
    from foodvision.store import format_diff, format_summary
    from foodvision.cli import main as cli_main
    n0 = n_versions(store)
    with timed('version() — first call') as t: v1 = store.version(); t['note'] = snapshot_note(n0, store)
    with timed('version() — unchanged store'): store.version()
    with timed('summary() + format_summary (status without runs)'): format_summary(store.summary())
    from foodvision.run import Run
    runs = root/'runs'; fake = Run(runs/'fake-run'); fake.path.mkdir(parents=True, exist_ok=True)
    fake.config_file.write_text(json.dumps(dict(run_id='fake-run', arch='resnet18', dataset_version=v1, epochs=1, size=32,
                                                    store=str(store.path), started_at='2000-01-01T00:00:00+00:00')))
    with timed('status CLI path in-process: cli.main([status, STORE, --runs, RUNS]), one run'), contextlib.redirect_stdout(io.StringIO()):
        cli_main(['status', str(store.path), '--runs', str(runs)])
    import subprocess
    with timed('`foodvision status STORE --runs RUNS` as a command (new process: imports included)'):
        subprocess.run([str(Path(sys.executable).parent/'foodvision'), 'status', str(store.path), '--runs', str(runs)], check=True, capture_output=True)
    items = store.items()
    k = max(1, len(items) // 100)
    pick = items.sample(k, random_state=int(time.time()))  # a new sample each run, so the new version's snapshot is written
    classes = sorted(items.label.unique())
    changes = {i: classes[(classes.index(l) + 1) % len(classes)] for i, l in zip(pick.id, pick.label)}
    with timed(f'relabel {k} items (1%) in one batch'): store.relabel(changes, reason='scale benchmark')
    n0 = n_versions(store)
    with timed('version() after the relabel') as t: v2 = store.version(); t['note'] = snapshot_note(n0, store)
    with timed(f'diff(v1, v2) + format_diff ({k} relabeled)') as t:
        d = store.diff(v1, v2); format_diff(d)
        t['note'] = f"{len(d['relabeled'])} relabeled found"
    assert len(d['relabeled']) == k, d['relabeled'][:3]
    with timed('diff(v1) against the current version') as t: store.diff(v1)
    with timed('undo that relabel batch'): store.undo_batch(store.last_batch())
    with timed('version() after the undo (back to v1)') as t:
        v3 = store.version(); t['note'] = 'same as v1' if v3 == v1 else 'DIFFERENT from v1'
    with timed('items() — all rows as a DataFrame'): store.items()
    with timed('events(limit=5)'): store.events(limit=5)
    newest = store.events(limit=1)['at'].iloc[0]
    with timed('events since a time: whole log, then filtered (how status read its lineage before)'): store.events().query('at > @newest')
    with timed('events since a time: `events(after=...)`, filtered in SQL (status now)'): store.events(after=newest)
    return v1


def n_versions(store)->int:
    with store._read() as db: return db.execute('SELECT COUNT(*) FROM versions').fetchone()[0]

def snapshot_note(before:int, store)->str:
    "Whether a version() call wrote a new snapshot, from the count of versions before it."
    return 'hash + snapshot written' if n_versions(store) > before else 'hash only (snapshot already known)'


# --- tables -----------------------------------------------------------------------------------------------------------------
def synth_probs(labels, vocab, acc:float=0.8, seed:int=0):
    "Probabilities that agree with `labels` about `acc` of the time, confident but not certain."
    rng = np.random.default_rng(seed)
    y = np.array([vocab.index(l) for l in labels])
    logits = rng.normal(0, 1, (len(y), len(vocab))).astype(np.float32)
    right = rng.random(len(y)) < acc
    target = np.where(right, y, rng.integers(0, len(vocab), len(y)))
    logits[np.arange(len(y)), target] += rng.uniform(1, 5, len(y)).astype(np.float32)
    e = np.exp(logits - logits.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def table_steps(store, root:Path):
    import pandas as pd
    import torch
    from foodvision.evaluate import prediction_table, load_predictions
    from foodvision.issues import flagged_label_fixes, issues_table, load_issues, most_wrong, ranked, top_losses, write_issues
    from foodvision.run import Run
    from foodvision.scores import label_quality_issues, label_scores
    run = Run(root/'runs'/'fake-run'); run.eval_dir.mkdir(parents=True, exist_ok=True)
    if not run.config_file.is_file(): run.config_file.write_text(json.dumps(dict(run_id=run.id, store=str(store.path))))  # without `store`
    for suffix in ('.parquet', '.csv'): run.issues_file(suffix).unlink(missing_ok=True)
    items = store.items(); vocab = sorted(items.label.unique())
    probs = synth_probs(items.label, vocab)
    with timed(f'prediction_table over {len(items)} items (evaluation table from probabilities)'):
        table = prediction_table(items, torch.from_numpy(probs), vocab)
    for s in ('train', 'valid', 'test'): table[table.split == s].to_parquet(run.predictions_file(s), index=False)
    with timed('load evaluation tables (3 parquet files)'):
        table = pd.concat([load_predictions(run, s) for s in ('train', 'valid', 'test')], ignore_index=True)
    with timed('most-wrong query: issues.most_wrong(table)') as t: mw = most_wrong(table); t['note'] = f"{len(mw)} rows"
    with timed('most-wrong query, top 100: issues.most_wrong(table, 100)'): most_wrong(table, 100)
    with timed('top-loss query: issues.top_losses(table)'): tl = top_losses(table)
    with timed("issues.load_issues(run) without an issues file (rankings from the evaluation)") as t:
        q = load_issues(run); t['note'] = f"{len(q)} rows"
    scored = items.split.isin(['train', 'valid']).to_numpy()
    oof = synth_probs(items.label[scored], vocab, acc=0.75, seed=1)
    with timed(f'label_scores over {int(scored.sum())} items (3 scores + confident learning)'):
        scores = label_scores(oof, items.label[scored], vocab)
    with timed('label-quality ranking: label_quality_issues'): lq = label_quality_issues(items.id[scored], scores)
    rng = np.random.default_rng(2)
    low = ranked('low_quality', pd.DataFrame(dict(item_id=items.id, score=np.where(rng.random(len(items)) < 0.01, rng.random(len(items)), 0.0),
                                                    is_issue=False)))
    with timed('issues_table (5 rankings joined with items and evaluation)') as t:
        issues = issues_table([mw, tl, lq, ranked('duplicates', pd.DataFrame(columns=['item_id', 'score', 'is_issue'])), low], items, table)
        t['note'] = f"{len(issues)} rows"
    with timed('write_issues: the issues file (parquet) + its CSV twin, checked'): write_issues(issues, run)
    with timed("label-quality query: issues.load_issues(run, ranking='label_quality')") as t:
        lqq = load_issues(run, ranking='label_quality'); t['note'] = f"{len(lqq)} rows"
    with timed('issues.load_issues(run) — whole issues table, checked'): load_issues(run)
    with timed('flagged_label_fixes(issues) (label quality, score ≥ 0.5)') as t:
        fixes = flagged_label_fixes(lqq); t['note'] = f"{len(fixes)} fixes"
    return run.path


# --- cleaner ----------------------------------------------------------------------------------------------------------------
def cleaner_steps(store, run:Path, pages:int=40):
    import gc
    from foodvision.cleaner import make_cleaner
    from foodvision.issues import load_issues
    from foodvision.review import QUARANTINE
    from foodvision.run import Run
    gc.collect(); start = rss_mb()
    issues = load_issues(run)
    gc.collect(); base = rss_mb()
    row('RSS of the issues table as loaded', 0.0, f"+{base - start:.0f} MB ({issues.memory_usage(deep=True).sum() / 2**20:.0f} MB by pandas' count)")
    with timed(f'make_cleaner(store, issues) — build ({len(issues)} issue rows)') as t:
        cl = make_cleaner(store, issues, run_id='fake-run', page_size=24, stats_path=Run(run).review_stats_file)
    gc.collect(); after_build = rss_mb()
    t_note = f"RSS +{after_build - base:.0f} MB"
    ROWS[-1] = (*ROWS[-1][:2], t_note); print(f"|  | | {t_note} |")
    times, rss = [], []
    for ranking in ('most_wrong', 'label_quality'):
        with timed(f'switch ranking to {ranking} (renders page 1)'): cl.ranking.value = ranking
        for p in range(1, pages + 1):
            start = time.perf_counter(); cl.go(p); times.append(time.perf_counter() - start); rss.append(rss_mb())
    gc.collect(); after_paging = rss_mb()
    half = len(rss) // 2
    row(f'next page (median of {len(times)}, 24 thumbnails each)', float(np.median(times)),
        f"max {max(times):.3f} s; RSS +{after_paging - after_build:.1f} MB over {len(times)} pages "
        f"(page {half}: {rss[half - 1] - after_build:+.1f} MB, page {len(rss)}: {rss[-1] - after_build:+.1f} MB); thumbnails read {cl.n_thumbnails_read}")
    with timed('class filter (renders page 1)'): cl.klass.value = cl.review.classes[0]
    with timed('last page (go(n_pages - 1))') as t: cl.go(cl.review.n_pages() - 1); t['note'] = f"{cl.review.n_pages()} pages"
    cl.klass.value = ''
    ids = list(cl.review.view().item_id[:24])
    with timed('decide 24 items'):
        for i in ids: cl.review.decide(i, QUARANTINE)
    with timed('apply (24 quarantines, one batch) + reload + render'): cl.apply()
    with timed('undo that apply + reload + render'): cl.undo()
    gc.collect()
    row('cleaner RSS after the session', 0.0, f"{rss_mb() - base:.0f} MB above before the build")


# --- peak memory of evaluation and of finding issues, each in a fresh process ----------------------------------------------
def train_small_run(root:Path, src_store:Path)->Path:
    "A one-epoch resnet18 run at 32 px on a small store: its bundle is what the memory children use."
    import warnings; warnings.filterwarnings('ignore')
    from foodvision.store import Store
    from foodvision.train import TrainConfig, train_run
    cfg = TrainConfig(arch='resnet18', size=32, epochs=1, pretrained=False, bs=64, num_workers=0, device='cpu', seed=0)
    with timed(f'train_run (1 epoch, 32 px) on {src_store.name} for the memory runs'):
        run = train_run(Store(src_store), cfg, runs_dir=root/'trained', evaluate=False)
    return run.path


class Sampler:
    "Samples this process's RSS every `every` seconds in a thread, to report the peak of each phase."
    def __init__(self, every=0.02):
        import threading
        self.peak, self.every, self.stop = rss_mb(), every, threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True); self.thread.start()
    def _run(self):
        while not self.stop.wait(self.every): self.peak = max(self.peak, rss_mb())
    def phase(self):
        "The peak since the last call (and reset)."
        p, self.peak = max(self.peak, rss_mb()), rss_mb()
        return p


def child(kind:str, store_path:Path, run:Path, bs:int, C:float|None):
    "Run evaluation or the find path in this process and print one JSON line of seconds and RSS."
    import gc, warnings; warnings.filterwarnings('ignore')
    import pandas as pd, torch
    from foodvision.store import Store
    from foodvision.evaluate import evaluate_run, load_predictions
    from foodvision.bundle import load_bundle
    from foodvision.run import Run
    from foodvision.scores import embedding_oof_probs, label_quality_issues, label_scores
    from foodvision.similar import bundle_embedder, embed_paths
    store = Store(store_path)
    out = dict(kind=kind, n=0, bs=bs, threads=torch.get_num_threads())
    gc.collect(); out['base_mb'] = rss_mb(); s = Sampler(); s.phase()
    t0 = time.perf_counter()
    if kind == 'evaluate':
        m = evaluate_run(run, store=store, bs=bs)
        out['n'] = sum(m[k]['n'] for k in ('train', 'valid', 'test') if k in m)
        out['phases'] = dict(evaluate_run=[time.perf_counter() - t0, s.phase()])
        out['table_mb'] = sum(float(load_predictions(run, k).memory_usage(deep=True).sum()) / 2**20 for k in ('train', 'valid', 'test'))
    else:
        items = store.items(); out['n'] = len(items)
        out['items_mb'] = float(items.memory_usage(deep=True).sum()) / 2**20
        ph = {}
        def mark(name, t): ph[name] = [time.perf_counter() - t, s.phase()]
        t = time.perf_counter(); feats = embed_paths(items.path, bundle_embedder(load_bundle(Run(run).bundle)), bs); mark('embed_paths', t)
        out['features_mb'] = feats.nbytes / 2**20; out['dims'] = int(feats.shape[1])
        scored = items.split.isin(['train', 'valid']).to_numpy()
        vocab = sorted(items.label[scored].unique())
        t = time.perf_counter(); probs = embedding_oof_probs(feats[scored], items.label[scored], vocab, 5, C=C); mark('embedding_oof_probs', t)
        t = time.perf_counter()
        lq = label_quality_issues(items.id[scored], label_scores(probs, items.label[scored], vocab)); mark('label_scores + ranking', t)
        out['phases'] = ph
    out['seconds'] = time.perf_counter() - t0
    out['peak_mb'] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print('RESULT ' + json.dumps(out), flush=True)


def memory_steps(root:Path, stores:list, run:Path, bs:int, C:float|None, kinds=('evaluate', 'find')):
    import subprocess
    for kind in kinds:
        for sp in stores:
            start = time.perf_counter()
            res = subprocess.run([sys.executable, __file__, '--child', kind, '--child-store', str(sp), '--child-run', str(run),
                                  '--bs', str(bs)] + (['--C', str(C)] if C else []), capture_output=True, text=True)
            line = [l for l in res.stdout.splitlines() if l.startswith('RESULT ')]
            if not line: print(res.stdout[-3000:], res.stderr[-3000:]); raise SystemExit(f"child {kind} failed")
            r = json.loads(line[0][7:])
            phases = '; '.join(f"{k} {v[0]:.1f} s, peak {v[1]:.0f} MB" for k, v in r['phases'].items())
            sizes = ', '.join(f"{k} {r[k]:.0f} MB" for k in ('table_mb', 'items_mb', 'features_mb') if k in r)
            row(f"peak RSS: {kind} over {r['n']} items (bs {bs})", r['seconds'],
                f"peak {r['peak_mb']:.0f} MB, after imports {r['base_mb']:.0f} MB (+{r['peak_mb'] - r['base_mb']:.0f}); {phases}; per-item data: {sizes}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--n', type=int, default=100_000)
    p.add_argument('--root', default='/tmp/scale')
    p.add_argument('--size', type=int, default=32)
    p.add_argument('--steps', default='gen,import,store,queries,cleaner',
                   help='also: train-run (a small run for the memory steps), memory (evaluate and find in child processes)')
    p.add_argument('--memory-stores', default='', help='comma-separated store folders for the memory step (default: the N store)')
    p.add_argument('--memory-kinds', default='evaluate,find', help='which memory children to run')
    p.add_argument('--bs', type=int, default=64, help='batch size of the memory children')
    p.add_argument('--C', type=float, default=None, help='memory step: fixed C for the logistic regression (default: the grid)')
    p.add_argument('--child'); p.add_argument('--child-store'); p.add_argument('--child-run')
    a = p.parse_args(argv)
    if a.child: return child(a.child, Path(a.child_store), Path(a.child_run), a.bs, a.C)
    steps, root = a.steps.split(','), Path(a.root)
    src = root/f'src-{a.n}'
    from foodvision.store import Store
    print(f"N={a.n}, {a.size} px, python {platform.python_version()}, {os.cpu_count()} CPUs, load {os.getloadavg()}")
    print("| step | seconds | note |\n|---|---:|---|")
    if 'gen' in steps and not src.exists():
        with timed(f'generate {a.n} PNGs ({a.size} px)'): generate(src, a.n, a.size)
    spath = root/f'store-{a.n}'
    if 'import' in steps and not spath.exists():
        store = Store.create(spath)
        with timed(f'import_path of {a.n} files (decode check, SHA-256, fsync per file, one transaction)') as t:
            r = store.import_path(src); t['note'] = repr(r)
    store = Store(spath)
    if 'store' in steps: store_steps(store, root, a.n)
    run = root/'runs'/'fake-run'
    if 'queries' in steps: run = table_steps(store, root)
    if 'cleaner' in steps: cleaner_steps(store, run)
    from foodvision.run import Run
    trained = [p for p in sorted((root/'trained').glob('*')) if Run(p).bundle.is_dir()]
    if 'train-run' in steps and not trained: trained = [train_small_run(root, root/'store-2000')]
    if 'memory' in steps:
        stores = [Path(x) for x in a.memory_stores.split(',')] if a.memory_stores else [spath]
        memory_steps(root, stores, trained[-1], a.bs, a.C, a.memory_kinds.split(','))
    print(f"peak RSS {peak_mb():.0f} MB; load now {os.getloadavg()}")


if __name__ == '__main__':
    main()
