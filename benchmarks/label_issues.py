"""How well does foodvision find wrong labels? Precision and recall of the flagged set and precision@N, on generated data with known flips.

For each noise setting (20% symmetric; class-conditional pizza<->burger and donut<->fried_egg at 40%), on the training tier
of a generated store — or, with `--data digits`, on scikit-learn's 1,797 scanned handwritten digits (real scans, not made by
this project; 8x8 pixels shown at `--size`) with 20% symmetric noise — it compares:
  (a) fastai's in-sample top-loss order: the loss of a model trained on all the noisy training data, on that same data
      (flagged set: the items it mispredicts);
  (b) foodvision's out-of-sample ranking (`foodvision.scores`): the embedding route (the run's features + K-fold logistic
      regression) and the fine-tune route (K models trained with `food_learner`), flagged by confident learning;
  (c) `cleanlab.filter.find_label_issues` (default settings, ranked by self-confidence) on the same out-of-sample
      probabilities (precision@N from cleanlab's default label-quality score).
N is the number of flipped labels. cleanlab is a reference here only: foodvision never imports it.

Usage: python benchmarks/label_issues.py [--n 1500] [--size 64] [--arch test_resnet] [--epochs 15] [--folds 3] [--seed 0]
                                         [--noise symmetric,pair] [--routes embedding,finetune] [--pretrained] [--data synth|digits]
With --pretrained every model starts from the packaged ImageNet weights of tf_efficientnet_lite0 (the default `--arch` then):
(a) and the fine-tune route train a head on the frozen features at `--train-size` (schedule 'probe'), and the embedding
route uses the pretrained features (`foodvision.similar.timm_embedder`), which never saw the noisy labels.
CPU, 2 cores: about 25 minutes with the defaults (most of it the K fine-tune trainings; `--routes embedding` takes about 8). Prints a Markdown table.
"""
import argparse
import io
import os
import platform
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

NOISE = dict(symmetric=dict(noise=0.2), pair=dict(pair_noise={('pizza', 'burger'): 0.4, ('donut', 'fried_egg'): 0.4}))
NOISE_TEXT = dict(symmetric='20% symmetric', pair='pizza<->burger, donut<->fried_egg 40%')


def flagged_stats(flagged_ids, wrong):
    "Size, precision and recall of a flagged set."
    flagged = set(flagged_ids)
    hits = len(flagged & wrong)
    return len(flagged), hits / len(flagged) if flagged else float('nan'), hits / len(wrong)


def in_sample(items, held, train_rows, vocab, cfg):
    "(a) Train on all the noisy training data (the valid tier held out, as a run does), score that same data: loss order and mispredictions."
    from fastai.torch_core import set_seed
    from foodvision.scores import fold_learner
    from foodvision.train import fit_phases
    set_seed(cfg.seed, reproducible=True)
    learn = fold_learner(items, held, vocab, cfg)
    with learn.no_bar(), learn.no_logging():
        fit_phases(learn, cfg)
        probs, _ = learn.get_preds(dl=learn.dls.test_dl(train_rows))
    probs = probs.numpy()
    y = np.array([vocab.index(l) for l in train_rows.label])
    loss = -np.log(np.clip(probs[np.arange(len(y)), y], 1e-12, None))
    ids = train_rows.id.to_numpy()
    return learn, ids[np.argsort(-loss, kind='stable')], ids[probs.argmax(1) != y]


def ours(probs, items, vocab, method='blend'):
    "(b) foodvision's ranking (label quality ascending, by `method`) and confident-learning flags."
    from foodvision.scores import label_scores
    s = label_scores(probs, items.label, vocab, method)
    return items.id.to_numpy()[np.argsort(s.label_quality.to_numpy(), kind='stable')], items.id[s.is_issue.to_numpy()]


def cleanlab_reference(probs, items, vocab):
    "(c) cleanlab's default flagged set and its default label-quality ranking, on the same probabilities."
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores
    y = np.array([vocab.index(l) for l in items.label])
    flagged = find_label_issues(y, probs, return_indices_ranked_by='self_confidence')
    order = np.argsort(get_label_quality_scores(y, probs), kind='stable')
    return items.id.to_numpy()[order], items.id.to_numpy()[flagged]


def digits_store(store, size, noise, seed):
    "scikit-learn's scanned digits as an ImageFolder-like store, `noise` of the training labels flipped (truth recorded)."
    from PIL import Image
    from sklearn.datasets import load_digits
    d = load_digits()
    rng = np.random.default_rng(seed)
    split = rng.choice(['train', 'valid', 'test'], size=len(d.target), p=[0.7, 0.15, 0.15])
    names = [f'digit_{t}' for t in d.target]
    flip = (split == 'train') & (rng.random(len(names)) < noise)
    given = [f'digit_{(t + rng.integers(1, 10)) % 10}' if f else n for t, n, f in zip(d.target, names, flip)]
    recs = []
    for img, lab, sp in zip(d.images, given, split):
        im = Image.fromarray((img * 255 / 16).astype(np.uint8)).resize((size, size), Image.Resampling.NEAREST)
        buf = io.BytesIO(); im.save(buf, 'PNG'); recs.append(dict(data=buf.getvalue(), label=lab, split=str(sp), source='digits'))
    rep = store.add_images(recs)
    store.record_truth({i: n for i, n, f in zip(rep.ids, names, flip) if f and i}, kind='symmetric')


def run_setting(kind, args, tmp):
    from foodvision.issues import precision_at_n
    from foodvision.scores import embedding_oof_probs, finetune_oof_probs
    from foodvision.similar import embed_paths, learner_embedder, timm_embedder
    from foodvision.store import Store
    from foodvision.synth import synth_store
    from foodvision.train import TrainConfig
    store = Store.create(Path(tmp)/kind)
    if args.data == 'digits': digits_store(store, args.size, 0.2, args.seed)
    else: synth_store(store, n=args.n, size=args.size, seed=args.seed, **NOISE[kind])
    learnable = store.items()
    learnable = learnable[learnable.split.isin(['train', 'valid'])].reset_index(drop=True)
    items = learnable[learnable.split == 'train'].reset_index(drop=True)
    wrong, vocab = set(store.truth().item_id), sorted(items.label.unique())
    cfg = TrainConfig(arch=args.arch, epochs=args.epochs, size=args.train_size or args.size, bs=args.bs, lr=args.lr,
                      pretrained=args.pretrained, schedule='probe' if args.pretrained else 'auto', aug=False, item_tfms='squish',
                      num_workers=0, seed=args.seed)
    rows = []
    def add(method, seconds, order, flagged, note=''):
        n, p, r = flagged_stats(flagged, wrong)
        rows.append(dict(noise=NOISE_TEXT[kind] if args.data == 'synth' else 'digits, 20% symmetric', method=method, seconds=seconds,
                         flagged=n, precision=p, recall=r, f1=2 * p * r / (p + r) if p + r else 0.0,
                         p_at_n=precision_at_n(order, wrong), note=note))
        print(f"  {method}: flagged {n}, precision {p:.3f}, recall {r:.3f}, precision@N {rows[-1]['p_at_n']:.3f} ({seconds:.0f} s)", flush=True)
    print(f"{NOISE_TEXT[kind]}: {len(items)} training items, {len(wrong)} flipped", flush=True)
    start = time.perf_counter()
    learn, order, flagged = in_sample(learnable, (learnable.split == 'valid').to_numpy(), items, vocab, cfg)
    train_seconds = time.perf_counter() - start
    add('(a) fastai in-sample top loss', train_seconds, order, flagged)
    if 'embedding' in args.routes:
        start = time.perf_counter()
        embedder = timm_embedder() if args.pretrained else learner_embedder(learn)
        probs = embedding_oof_probs(embed_paths(items.path, embedder, bs=128), items.label, vocab, args.folds, args.seed)
        seconds = time.perf_counter() - start
        note = 'pretrained features' if args.pretrained else f"+ {train_seconds:.0f} s training (a)'s model"
        add('(b) foodvision, embedding route', seconds, *ours(probs, items, vocab), note=note)
        add('(c) cleanlab on the embedding-route probabilities', seconds, *cleanlab_reference(probs, items, vocab), note=note)
        for single in ('self_confidence', 'normalized_margin', 'relative_confidence'):  # the blend's parts, alone
            add(f'  embedding route, {single} alone', seconds, *ours(probs, items, vocab, single), note=note)
    if 'finetune' in args.routes:
        start = time.perf_counter()
        probs = finetune_oof_probs(items, vocab, cfg, args.folds, args.seed, progress=False)
        seconds = time.perf_counter() - start
        add(f'(b) foodvision, fine-tune route ({args.folds} models)', seconds, *ours(probs, items, vocab))
        add('(c) cleanlab on the fine-tune-route probabilities', seconds, *cleanlab_reference(probs, items, vocab))
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--n', type=int, default=1500)
    ap.add_argument('--size', type=int, default=64)
    ap.add_argument('--arch', default=None, help='default: tf_efficientnet_lite0 with --pretrained, else test_resnet')
    ap.add_argument('--pretrained', action='store_true', help="start from the packaged ImageNet weights (probe heads, pretrained features)")
    ap.add_argument('--train-size', type=int, default=None, help='side the models see (default: --size)')
    ap.add_argument('--data', default='synth', choices=['synth', 'digits'])
    ap.add_argument('--epochs', type=int, default=15)
    ap.add_argument('--folds', type=int, default=3)
    ap.add_argument('--bs', type=int, default=64)
    ap.add_argument('--lr', type=float, default=1e-2)
    ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--noise', default='symmetric,pair')
    ap.add_argument('--routes', default='embedding,finetune')
    args = ap.parse_args()
    args.routes = args.routes.split(',')
    args.arch = args.arch or ('tf_efficientnet_lite0' if args.pretrained else 'test_resnet')
    if args.data == 'digits': args.noise = 'symmetric'
    warnings.filterwarnings('ignore')
    torch.set_num_threads(os.cpu_count() or 1)
    start, rows = time.perf_counter(), []
    with tempfile.TemporaryDirectory() as tmp:
        for kind in args.noise.split(','): rows += run_setting(kind, args, tmp)
    total = time.perf_counter() - start
    print()
    print(f"`{' '.join(['python', 'benchmarks/label_issues.py', *sys.argv[1:]])}` — {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPU cores, torch {torch.__version__}, {'GPU ' + torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU'}; "
          f"{'digits' if args.data == 'digits' else f'n={args.n}'} at {args.size} px, {args.arch} "
          f"{'pretrained (probe heads at ' + str(args.train_size or args.size) + ' px)' if args.pretrained else 'from scratch'}, "
          f"{args.epochs} epochs, K={args.folds}; total {total / 60:.1f} min")
    print()
    print('| noise | method | flagged | precision | recall | F1 | precision@N | seconds |')
    print('|---|---|---:|---:|---:|---:|---:|---:|')
    for r in rows:
        print(f"| {r['noise']} | {r['method']} | {r['flagged']} | {r['precision']:.3f} | {r['recall']:.3f} | {r['f1']:.3f} | {r['p_at_n']:.3f} | "
              f"{r['seconds']:.0f}{' ' + r['note'] if r['note'] else ''} |")


if __name__ == '__main__': main()
