"""The inbox: unlabelled photos stay out of training, get labelled once through an audited undoable batch, and every inbox
command refuses bad input with one line and changes nothing."""
import io, json, sqlite3
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from foodvision.inbox import (InboxError, STRATEGIES, autolabel, autolabel_command, class_accuracy, load_prelabels, next_command,
                              next_to_label, prelabel, prelabel_table, read_verdicts, review_sample, simulate_flywheel)
from foodvision.run import Run
from foodvision.similar import Embedder, similar_items
from foodvision.store import INBOX, SCHEMA, SCHEMA_VERSION, Store, StoreError

CLASSES = ['pizza', 'sushi', 'salad']


def jpeg(colour, size=(24, 20)) -> bytes:
    buf = io.BytesIO(); Image.new('RGB', size, colour).save(buf, 'JPEG', quality=95); return buf.getvalue()


def colour(k): return (37 * k % 256, 91 * k % 256, 53 * k % 256)


@pytest.fixture
def store(tmp_path):
    "Six labelled photos (two per class, train and valid) and twelve in the inbox; the truth of the inbox photos in `.truth`."
    s = Store.create(tmp_path/'store')
    s.add_images([dict(data=jpeg(colour(k)), label=CLASSES[k % 3], split='train' if k < 3 else 'valid') for k in range(6)])
    rep = s.add_to_inbox([dict(data=jpeg(colour(k)), hint='pizza?' if k == 6 else None, hint_source='app') for k in range(6, 18)])
    s.truth_of = dict(zip(rep.ids, [CLASSES[k % 3] for k in range(6, 18)]))
    return s


def run_with_prelabels(store, tmp_path, right=1.0, prob=0.99, seed=0):
    "A run folder whose pre-labels (written by hand, no model) are right for a `right` share of the inbox, all at `prob`."
    run = Run(tmp_path/'runs'/'r1'); run.path.mkdir(parents=True)
    run.config_file.write_text(json.dumps(dict(run_id='r1', store=str(store.path))))
    inbox = store.inbox(); rng = np.random.default_rng(seed)
    probs = np.full((len(inbox), 3), (1 - prob) / 2)
    for i, iid in enumerate(inbox.id):
        true = CLASSES.index(store.truth_of[iid])
        probs[i, true if rng.random() < right else (true + 1) % 3] = prob
    run.prelabels_file().write_bytes(prelabel_table(inbox.id, probs, CLASSES, hints=inbox).to_parquet(index=False))
    return run


# --- the store's inbox ------------------------------------------------------------------------------------------------------

def test_inbox_items_never_reach_training_export_or_evaluation(store, tmp_path):
    from foodvision.data import training_items
    assert len(store.inbox()) == 12 and len(store.items()) == 6
    assert not set(store.inbox().id) & set(training_items(store).id)  # what training reads
    assert not set(store.inbox().id) & set(store.items(split='train').id)  # what evaluation and find read
    assert store.export_folder(tmp_path/'out') == 6
    assert store.summary()['n_inbox'] == 12 and store.summary()['n_items'] == 6
    v = store.version()
    store.add_to_inbox([dict(data=jpeg('white'))])
    assert store.version() != v  # the version covers the inbox


def test_labelling_is_one_audited_undoable_batch(store):
    ids = list(store.inbox().id[:3])
    v = store.version()
    batch = store.label_inbox({i: store.truth_of[i] for i in ids}, reason='looked', actor='human')
    ev = store.events(batch=batch)
    assert ev.action.tolist() == ['label'] * 3 and set(ev.actor) == {'human'} and ev.new.tolist() == [store.truth_of[i] for i in ids]
    assert set(ids) <= set(store.items().id) and len(store.inbox()) == 9
    store.undo_batch(batch)
    assert set(ids) <= set(store.inbox().id) and store.version() == v


def test_labelling_twice_an_unknown_class_or_a_stranger_is_refused_and_writes_nothing(store):
    a, b = store.inbox().id[:2]
    store.label_inbox({a: 'pizza'})
    before = (store.version(), len(store.events()))
    with pytest.raises(StoreError, match="already labelled 'pizza'"): store.label_inbox({a: 'sushi'})
    with pytest.raises(StoreError, match="already labelled 'pizza'"): store.label_inbox({b: 'sushi', a: 'sushi'})  # b not written either
    with pytest.raises(StoreError, match="class 'piza' is not one of the store's 3 classes"): store.label_inbox({b: 'piza'})
    with pytest.raises(StoreError, match='not a valid class name'): store.label_inbox({b: '=cmd()'})
    with pytest.raises(StoreError, match='no item'): store.label_inbox({'f' * 16: 'pizza'})
    with pytest.raises(StoreError, match='nothing to label'): store.label_inbox({})
    with pytest.raises(StoreError, match='has no label yet'): store.relabel({b: 'pizza'})
    assert (store.version(), len(store.events())) == before
    store.quarantine([b]); store.restore([b])
    assert b in set(store.inbox().id)  # restored into the inbox, not into training
    assert store.label_inbox({b: 'ramen'}, allow_new=True)  # a new class, said explicitly


def test_import_inbox_keeps_folder_names_as_hints(store, tmp_path):
    drop = tmp_path/'drop'; (drop/'pad thai').mkdir(parents=True)
    Image.new('RGB', (20, 20), 'navy').save(drop/'a.jpg'); Image.new('RGB', (20, 20), 'olive').save(drop/'pad thai'/'b.jpg')
    (drop/'c.jpg').write_bytes(b'not an image')
    rep = store.import_path(drop, inbox=True)
    assert len(rep.added) == 2 and len(rep.rejected) == 1 and 'c.jpg' in rep.rejected[0][0]
    hints = store.inbox().set_index('id')
    a, c, b = rep.ids  # top-level files first, then each named folder's
    assert c is None and hints.hint[b] == 'pad thai' and hints.hint_source[b] == 'folder' and hints.hint[a] is None
    assert store.events().action.tolist()[-2:] == [INBOX, INBOX]
    with pytest.raises(StoreError, match='does not exist'): store.import_path(tmp_path/'nowhere', inbox=True)


def test_a_store_from_before_the_inbox_is_upgraded_keeping_every_row(tmp_path):
    path = tmp_path/'old'; (path/'images').mkdir(parents=True)
    img = jpeg('teal'); import hashlib; sha = hashlib.sha256(img).hexdigest()
    (path/'images'/f'{sha}.jpg').write_bytes(img)
    old_schema = (SCHEMA.split('CREATE TABLE IF NOT EXISTS hints')[0]
                  .replace(", 'inbox')),\n  CHECK ((status = 'inbox') <= (label = '')), CHECK (label != '' OR status != 'active'));", ")));")
                  .replace(", 'inbox', 'label', 'unlabel')", ")"))
    db = sqlite3.connect(path/'store.db'); db.executescript(old_schema)
    db.execute("INSERT INTO meta VALUES ('schema_version', '1')")
    db.execute("INSERT INTO items VALUES (?, ?, 'pizza', 'train', NULL, NULL, NULL, ?, 24, 20, 'then', 'active')", (sha[:16], f'images/{sha}.jpg', sha))
    db.execute("INSERT INTO label_events VALUES (41, 'b', ?, 'add', NULL, 'pizza', NULL, 'import', NULL, NULL, 'then')", (sha[:16],))
    db.commit(); db.close()
    s = Store(path)
    assert s.schema_version == SCHEMA_VERSION and s.items().id.tolist() == [sha[:16]] and s.events().id.tolist() == [41]
    rep = s.add_to_inbox([dict(data=jpeg('pink'))])
    s.label_inbox({rep.added[0]: 'pizza'})
    assert s.events().id.tolist() == [41, 42, 43] and len(s.items()) == 2


# --- the commands' bad input ----------------------------------------------------------------------------------------------

def test_commands_on_an_empty_inbox_say_so(tmp_path):
    s = Store.create(tmp_path/'s'); s.add_images([dict(data=jpeg('red'), label='pizza')])
    run = Run(tmp_path/'run'); run.path.mkdir(); run.config_file.write_text(json.dumps(dict(store=str(s.path))))
    with pytest.raises(InboxError, match='inbox of .* is empty'): prelabel(run)
    with pytest.raises(InboxError, match='has no pre-labels'): next_to_label(run)
    with pytest.raises(InboxError, match='empty'): autolabel(s, prelabel_table([], np.zeros((0, 2)), ['a', 'b']), lambda ids: [])


def test_next_orders_the_inbox_by_each_strategy_and_the_weak_class_first(store, tmp_path):
    run = run_with_prelabels(store, tmp_path, right=0.5, prob=0.6)
    with pytest.raises(InboxError, match='not one of'): next_to_label(run, store, strategy='smartest')
    with pytest.raises(InboxError, match='budget must be'): next_to_label(run, store, budget=0)
    with pytest.raises(InboxError, match='evaluate the run first'): next_to_label(run, store, strategy='class_need')
    run.eval_dir.mkdir()
    run.eval_metrics_file.write_text(json.dumps(dict(valid=dict(per_class={c: dict(recall=r) for c, r in zip(CLASSES, [0.9, 0.1, 0.9])}))))
    assert class_accuracy(run) == dict(pizza=0.9, sushi=0.1, salad=0.9)
    weak = next_to_label(run, store, budget=3, strategy='class_need')
    assert weak.suggested_label.tolist() == ['sushi'] * 3  # the class the model gets wrong
    for s in STRATEGIES:
        t = next_to_label(run, store, budget=5, strategy=s, embedder=_tiny_embedder())
        assert len(t) == 5 and set(t.ranking) == {'inbox'} and set(t.item_id) <= set(store.inbox().id), s
    out = []
    t = next_command(store.path, run.path, budget=4, strategy='margin', out=out.append)
    from foodvision.issues import load_issues
    assert load_issues(run, ranking='inbox').item_id.tolist() == t.item_id.tolist() and 'next: 4 photos' in out[0]


def test_autolabel_accepts_only_when_the_reviewed_bound_clears_the_target(store, tmp_path):
    oracle = lambda ids: [store.truth_of[i] for i in ids]
    bad = load_prelabels(run_with_prelabels(store, tmp_path, right=0.5))
    r = autolabel(store, bad, oracle, threshold=0.9, target=0.5, review=6)
    assert r.reviewed == 6 and r.accepted == {} and r.auto_batch is None and r.bound < 0.5
    assert len(store.inbox()) == 6  # the reviewed six got the oracle's labels; the rest waits
    good = load_prelabels(run_with_prelabels(store, tmp_path/'again', right=1.0))
    r = autolabel(store, good, oracle, threshold=0.9, target=0.5, review=4)
    assert r.correct == 4 and len(r.accepted) == 2 and len(store.inbox()) == 0
    assert all(store.truth_of[i] == l for i, l in r.accepted.items())
    assert set(store.events(batch=r.auto_batch).actor) == {'auto'}


def test_autolabel_refuses_verdicts_that_do_not_match_the_sample_and_writes_nothing(store, tmp_path):
    run = run_with_prelabels(store, tmp_path)
    pre, v = load_prelabels(run), store.version()
    sample = review_sample(pre, 0.9, 4)
    with pytest.raises(InboxError, match='cover exactly the 4 sampled photos: 1 not in the sample'):
        stranger = next(i for i in store.inbox().id if i not in set(sample.item_id))
        autolabel(store, pre, {**{i: 'pizza' for i in sample.item_id}, stranger: 'pizza'}, review=4)
    with pytest.raises(StoreError, match='not one of the store'):
        autolabel(store, pre, {i: 'pizzza' for i in sample.item_id}, review=4)
    with pytest.raises(InboxError, match='threshold must be'): autolabel(store, pre, {}, threshold=2)
    with pytest.raises(InboxError, match='review must be'): autolabel(store, pre, {}, review=0)
    assert store.version() == v and len(store.inbox()) == 12
    (tmp_path/'v.csv').write_text('id,lab\nx,pizza\n')
    with pytest.raises(InboxError, match='expected columns item_id,label'): read_verdicts(tmp_path/'v.csv')
    with pytest.raises(InboxError, match='no such verdicts file'): autolabel_command(store.path, run.path, verdicts=tmp_path/'none.json')
    (tmp_path/'v.json').write_text('{not json')
    with pytest.raises(InboxError, match='not valid JSON'): read_verdicts(tmp_path/'v.json')


def _tiny_embedder():
    "A stand-in for the pretrained embedder: an image's mean colour (no model, no download)."
    import torch
    class Mean(torch.nn.Module):
        def __init__(self): super().__init__(); self.w = torch.nn.Parameter(torch.ones(1))
        def forward(self, x): return x.mean((2, 3)) * self.w
    from functools import partial
    from foodvision.bundle import images_to_tensor
    return Embedder(Mean().eval(), partial(images_to_tensor, size=16, method='squish', mean=[0, 0, 0], std=[1, 1, 1]), 'mean colour')


def test_similar_lists_look_alikes_and_refuses_an_unknown_item(store):
    q = store.inbox().id[0]
    near = similar_items(store, q, k=3, embedder=_tiny_embedder())
    assert len(near) == 3 and (near.status == 'active').all()
    near = similar_items(store, q, k=50, inbox=True, embedder=_tiny_embedder())
    assert len(near) == 11 and (near.status == INBOX).all() and q not in set(near.item_id)
    with pytest.raises(StoreError, match='no item'): similar_items(store, 'nope', embedder=_tiny_embedder())


def test_the_flywheel_labels_through_the_store_and_refuses_bad_settings_writing_nothing(tmp_path):
    from foodvision.synth import synth_store
    src = Store.create(tmp_path/'src'); synth_store(src, n=80, size=24, seed=0)
    for kw, msg in [(dict(strategies=('smart',)), "unknown strategy 'smart'"), (dict(budget=0), 'budget must be a count'),
                    (dict(start=1.5), 'start must be a number between 0 and 1')]:
        with pytest.raises(InboxError, match=msg): simulate_flywheel(src, tmp_path/'fw', embedder=_tiny_embedder(), **kw)
        assert not (tmp_path/'fw').exists()
    res = simulate_flywheel(src, tmp_path/'fw', strategies=('random', 'diversity'), start=0.3, budget=5, rounds=2, review=5,
                            thresholds=(0.5,), target=0.5, embedder=_tiny_embedder())
    n_train = res.settings['train']
    for s, curve in res.curves.items():
        assert [c['labels'] for c in curve] == [round(n_train * 0.3) + 5 * r for r in range(3)]
        ev = Store(res.stores[s]).events()
        rounds = ev[ev.reason.fillna('').str.startswith('flywheel round')]
        assert len(rounds) == 10 and set(rounds.actor) == {'human'} and rounds.batch.nunique() == 2
        assert len(Store(res.stores[s]).inbox()) == n_train - round(n_train * 0.3) - 10  # auto-labelling trials undone
    for a in res.autolabel_start + [a for t in res.autolabel_end.values() for a in t]:
        assert (a['accepted'] > 0) == (a['bound'] >= 0.5 and a['band'] > a['reviewed']), a
    with pytest.raises(InboxError, match='is not empty'): simulate_flywheel(src, tmp_path/'fw', embedder=_tiny_embedder())
