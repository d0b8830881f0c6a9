"""Finding wrong labels, duplicates and bad images: the folder contract the CLI calls, and each detector on constructed cases."""
import io

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageFilter

import foodvision.find
import foodvision.weights
from foodvision.draw import synth_image, synth_jpeg
from foodvision.find import FOLDER_COLUMNS, find_issues_in_folder
from foodvision.issues import precision_at_n
from foodvision.quality import image_stats, low_quality_issues, quality_defects
from foodvision.scores import confident_issues, confident_joint, embedding_oof_probs, label_scores
from foodvision.similar import duplicate_issues, duplicate_pairs, image_fingerprints
from foodvision.store import Store
from foodvision.synth import synth_store
from foodvision.weights import WeightsError

CLASSES = ('pizza', 'sushi', 'donut', 'salad')


@pytest.fixture(scope='module')
def image_folder(tmp_path_factory):
    "4 classes x 12 images at 32 px, plus one file that is not an image."
    root = tmp_path_factory.mktemp('photos')/'dir'
    for c in CLASSES:
        (root/c).mkdir(parents=True)
        for i in range(12): (root/c/f'img{i:02d}.jpg').write_bytes(synth_jpeg(c, seed=5, index=i, size=32))
    (root/'pizza'/'broken.jpg').write_bytes(b'this is not a jpeg')
    return root


def test_folder_contract(image_folder, tmp_path, capsys):
    out = tmp_path/'issues.csv'
    found = find_issues_in_folder(image_folder, out, arch='resnet18', size=32, epochs=1, folds=2, pretrained=False,
                                  progress=False, bs=16)
    err = capsys.readouterr().err
    csv = pd.read_csv(out, keep_default_na=False)
    assert list(csv.columns) == FOLDER_COLUMNS == ['path', 'given_label', 'suggested_label', 'label_quality', 'is_issue']
    expected = {f'{c}/img{i:02d}.jpg' for c in CLASSES for i in range(12)}
    assert set(csv.path) == expected and len(csv) == 48  # one row per decodable image, paths relative to DIR
    assert 'broken.jpg' in err and 'broken.jpg' not in set(csv.path)
    assert (csv.given_label == csv.path.str.split('/').str[0]).all()
    assert csv.label_quality.between(0, 1).all() and csv.label_quality.is_monotonic_increasing
    assert set(csv.is_issue) <= {0, 1} and set(csv.suggested_label) <= set(CLASSES)
    assert (csv.suggested_label != csv.given_label).all()
    pd.testing.assert_frame_equal(csv, found.astype({'is_issue': int}), check_dtype=False)


def test_folder_pretrained_fails_fast_offline(image_folder, tmp_path, monkeypatch):
    monkeypatch.setattr(foodvision.weights, 'hub_reachable', lambda *a, **k: False)
    monkeypatch.setattr(foodvision.weights, 'hub_cached', lambda *a, **k: False)
    work = []  # every step of real work the call would take: reading the folder, making its store
    monkeypatch.setattr(foodvision.find, 'folder_records', lambda *a, **k: work.append('folder_records'))
    monkeypatch.setattr(foodvision.find.Store, 'create', classmethod(lambda *a, **k: work.append('Store.create')))
    with pytest.raises(WeightsError, match='--no-pretrained'):
        find_issues_in_folder(image_folder, tmp_path/'x.csv', arch='resnet18', size=32, epochs=1, folds=2, progress=False)
    assert work == [] and not (tmp_path/'x.csv').exists()  # refused before the folder was read or a model built


def _jpeg(im, quality=90):
    buf = io.BytesIO(); im.save(buf, 'JPEG', quality=quality); return buf.getvalue()


def test_duplicates_leaks_and_conflicts(tmp_path):
    store = Store.create(tmp_path/'s')
    synth_store(store, n=60, size=64, seed=2, workers=1)
    items = store.items()
    src = items[items.split == 'train'].iloc[0]
    im = Image.open(src.path).convert('RGB')
    copies = store.add_images([dict(data=_jpeg(im, 40), label=src.label, split='test'),  # a re-encoded copy in the test tier: a leak
                      dict(data=_jpeg(im.resize((56, 56)), 70), label='not_food' if src.label != 'not_food' else 'pizza', split='train')])
    items = store.items()
    pairs = duplicate_pairs(items, image_fingerprints(items.path))
    assert len(pairs) == 3 and set(pairs.kind) == {'phash'}  # the original and its two copies, pairwise; nothing else
    assert set(pairs.item_a) | set(pairs.item_b) == {src.id, *copies.added}
    leak = pairs[(pairs.item_a == src.id) | (pairs.item_b == src.id)]
    assert leak.leak.any() and leak.conflict.any()
    ranked = duplicate_issues(pairs)
    assert ranked.iloc[0].score > 2 and 'leak' in ranked.iloc[0].detail and 'labels differ' in ranked.iloc[0].detail
    # identical bytes under two rows (as in a folder) are an exact pair
    two = pd.DataFrame(dict(id=['a', 'b'], split=['train', 'test'], label=['pizza', 'pizza'], path=[src.path, src.path]))
    exact = duplicate_pairs(two, image_fingerprints(two.path))
    assert exact.kind.tolist() == ['exact'] and exact.leak.tolist() == [True] and exact.conflict.tolist() == [False]


def test_low_quality_detectors(tmp_path):
    food = synth_image('pizza', seed=1, index=3, size=128)
    cases = dict(tiny=food.resize((16, 16)), uniform=Image.new('RGB', (96, 96), (120, 130, 125)),
                 dark=food.point(lambda v: v // 12), bright=food.point(lambda v: 245 + v // 26),
                 blurry=food.filter(ImageFilter.GaussianBlur(6)), aspect=food.resize((400, 80)), fine=food)
    paths = []
    for name, im in cases.items():
        paths.append(tmp_path/f'{name}.png'); im.save(paths[-1])
    for name, p in zip(cases, paths):
        defects = quality_defects(image_stats(p))
        if name == 'fine': assert defects == {}, defects
        else: assert name in defects, (name, defects)
    table = low_quality_issues(list(cases), paths)
    assert table.set_index('item_id').is_issue.to_dict() == {n: n != 'fine' for n in cases}
    assert table.iloc[-1].item_id == 'fine' and table.iloc[-1].score == 0


def test_flagged_precision_on_separable_features():
    "Features that carry the true class, labels 20% flipped: the embedding route ranks and flags the flips far above chance."
    rng = np.random.default_rng(0)
    vocab, n = ['a', 'b', 'c', 'd'], 800
    true = rng.integers(0, 4, n)
    features = rng.normal(size=(n, 16)) + 3 * np.eye(4, 16)[true]  # one informative direction per class
    given = true.copy()
    flip = rng.random(n) < 0.2
    given[flip] = (true[flip] + rng.integers(1, 4, flip.sum())) % 4
    labels = [vocab[g] for g in given]
    probs = embedding_oof_probs(features, labels, vocab, folds=5)
    scores = label_scores(probs, labels, vocab)
    wrong = set(np.flatnonzero(given != true))
    order = np.argsort(scores.label_quality.to_numpy(), kind='stable')
    assert precision_at_n(order, wrong) > 0.8
    flagged = set(np.flatnonzero(scores.is_issue.to_numpy()))
    assert len(flagged & wrong) / len(flagged) > 0.8 and len(flagged & wrong) > 0.7 * len(wrong)
    hits = scores.is_issue.to_numpy() & (given != true)
    assert (scores.suggested_label[hits] == np.array(vocab)[true[hits]]).mean() > 0.9  # the suggestion is the true class


def _noisy_probs(seed:int, n:int=300, k:int=4)->tuple:
    "Out-of-sample-like probabilities of `n` items over `k` classes and their given labels, 20% flipped."
    rng = np.random.default_rng(seed)
    true = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k)) + 2.5 * np.eye(k)[true]
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    given = true.copy(); flip = rng.random(n) < 0.2
    given[flip] = (true[flip] + rng.integers(1, k, flip.sum())) % k
    return probs, given


@pytest.mark.parametrize('seed', range(6))
def test_confident_learning_agrees_with_cleanlab(seed):
    "Our confident joint and prune-by-noise-rate flags are cleanlab's, up to the rounding of the joint's cells."
    from cleanlab.count import compute_confident_joint
    from cleanlab.filter import find_label_issues
    probs, given = _noisy_probs(seed)
    ours, theirs = confident_joint(probs, given), compute_confident_joint(given, probs)
    assert np.abs(ours - theirs).max() < 1  # cleanlab rounds each calibrated cell to an integer, keeping the row totals
    assert np.allclose(ours.sum(1), theirs.sum(1))
    flagged, reference = confident_issues(probs, given), find_label_issues(given, probs, filter_by='prune_by_noise_rate')
    assert reference.sum() > 30 and (flagged != reference).sum() <= max(2, 0.04 * reference.sum())


def test_folder_default_runs_pretrained_offline(image_folder, tmp_path):
    import os, subprocess, sys
    from pathlib import Path
    fv = str(Path(sys.executable).with_name('foodvision'))
    r = subprocess.run([fv, 'find-issues', str(image_folder), '--out', str(tmp_path/'issues.csv')], capture_output=True, text=True,
                       timeout=600, env={**os.environ, 'HF_HUB_OFFLINE': '1'})
    assert r.returncode == 0, r.stderr[-2000:]
    csv = pd.read_csv(tmp_path/'issues.csv', keep_default_na=False)
    assert list(csv.columns) == FOLDER_COLUMNS and len(csv) == 48
    assert csv.label_quality.is_monotonic_increasing
