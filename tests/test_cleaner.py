"""The review model, the acceptance policy, the widget (values set and buttons pressed through their handlers) and the Label
Studio round trip, without a browser: the store is checked after every write."""
import json, shutil, sqlite3, subprocess, sys
import xml.etree.ElementTree as ET
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import foodvision.cleaner as fc
from foodvision.cleaner import make_cleaner
from foodvision.issues import IssuesError, issues_table, most_wrong, top_losses
from foodvision.labelstudio import (LS_QUARANTINE, LabelStudioError, export_label_studio, import_label_studio,
                                    label_studio_config)
from foodvision.review import (DEFAULT_POLICY, KEEP, QUARANTINE, AcceptPolicy, Review, ReviewError, accept_suggestions,
                               format_accept, ranking_stats, record_ranking_stats, relabel_to, review_for_run)
from foodvision.store import Store, StoreError
from foodvision.synth import synth_store
from fakes import fake_predictions

RUN = '20260101-000000-resnet18-test00'

@pytest.fixture(scope='module')
def template(tmp_path_factory):
    store = Store.create(tmp_path_factory.mktemp('tpl')/'store')
    synth_store(store, n=30, size=32, seed=0)
    return store.path


@pytest.fixture
def store(template, tmp_path):
    shutil.copytree(template, tmp_path/'store')
    return Store(tmp_path/'store')


@pytest.fixture
def preds(store): return fake_predictions(store)


@pytest.fixture
def issues(preds): return issues_table([most_wrong(preds), top_losses(preds)], table=preds)


@pytest.fixture
def reads(monkeypatch):
    "Every path the widget reads a thumbnail from."
    seen, real = [], fc.thumbnail
    def spy(path, size=128): seen.append(Path(path)); return real(path, size)
    monkeypatch.setattr(fc, 'thumbnail', spy)
    return seen


def cleaner_of(store, preds, tmp_path, **kw):
    return make_cleaner(store, preds, run_id=RUN, stats_path=tmp_path/'stats.jsonl', **kw)


def review_of(store, issues, tmp_path, **kw):
    return Review(store, issues, run_id=RUN, stats_path=tmp_path/'stats.jsonl', **kw)


def cell_of(cleaner, item_id):
    return next(c for c in cleaner.cells if c.item_id == item_id)


def wrong_first(preds):
    "The page-one order of 'most_wrong': wrong predictions, most confident first."
    return preds[~preds.correct].sort_values('prob', ascending=False)


def label_quality(store, score=0.95):
    "A label_quality ranking that suggests every item the next class (a wrong suggestion for each), at `score`."
    items = store.items()
    classes = sorted(items.label.unique())
    nxt = [classes[(classes.index(l) + 1) % len(classes)] for l in items.label]
    return issues_table([pd.DataFrame(dict(ranking='label_quality', item_id=items.id, rank=range(1, len(items) + 1), score=score,
                                           label_quality=1 - score, suggested_label=nxt, is_issue=True, detail='test'))])


# --- the acceptance policy ------------------------------------------------------------------------------------------------

def test_policy_bound_is_scipys_wilson_interval():
    from scipy.stats import binomtest
    p = AcceptPolicy(min_precision=0.8, confidence=0.9)
    for k, n in [(20, 20), (5, 10), (1, 7)]:
        assert p.precision_bound(k, n) == pytest.approx(binomtest(k, n).proportion_ci(confidence_level=0.9, method='wilson').low)
    assert AcceptPolicy().precision_bound(20, 20) == pytest.approx(0.8389, abs=1e-4) and p.precision_bound(0, 0) == 0.0
    assert not AcceptPolicy(min_precision=0.5).allows(0, 0) and AcceptPolicy().allows(0, 0)
    assert (DEFAULT_POLICY.relabel_at, DEFAULT_POLICY.quarantine_at, DEFAULT_POLICY.min_precision, DEFAULT_POLICY.confidence) == (0.9, 0.8, None, 0.95)
    for bad in [dict(min_precision=1.5), dict(confidence=1.0), dict(relabel_at=float('nan')), dict(quarantine_at='x')]:
        with pytest.raises(ReviewError): AcceptPolicy(**bad)
    with pytest.raises(ReviewError, match='impossible'): p.allows(3, 2)


def test_accept_suggestions_is_one_batch_and_undoable(store, tmp_path):
    lq = label_quality(store)
    state0 = store.item_states()
    lq.loc[lq.index[:3], 'score'] = 0.85  # doubtful: quarantined, not relabelled
    lq.loc[lq.index[3], 'score'] = 0.5  # below both tiers: left alone
    n = len(store.events())
    plan = accept_suggestions(store, lq, run_id=RUN, dry_run=True)
    assert plan.batch is None and len(store.events()) == n and 'dry run' in format_accept(plan)
    rep = accept_suggestions(store, lq, run_id=RUN)
    ev = store.events().iloc[n:]
    assert ev.batch.nunique() == 1 and set(ev.actor) == {'auto'} and set(ev.run_id) == {RUN}
    assert set(rep.quarantined) == set(lq.item_id[:3]) and len(rep.relabeled) == len(lq) - 4 and lq.item_id[3] not in rep.relabeled
    assert (store.item_states().loc[list(rep.relabeled), 'label'] == pd.Series(rep.relabeled)).all()
    assert rep.batch in format_accept(rep) and 'relabel ≥ 0.9, quarantine ≥ 0.8' in format_accept(rep)
    store.undo_batch(rep.batch)
    assert store.item_states().to_dict() == state0.to_dict()


def test_accept_suggestions_guard_refuses_and_changes_nothing(store):
    lq = label_quality(store)
    before = store.item_states().to_dict()
    strict = AcceptPolicy(min_precision=0.6)
    with pytest.raises(ReviewError, match='review a sample'): accept_suggestions(store, lq, strict)
    ids = lq.item_id.tolist()
    with pytest.raises(ReviewError, match='lower bound'): accept_suggestions(store, lq, strict, reviewed={i: k < 3 for k, i in enumerate(ids[:6])})
    with pytest.raises(ReviewError, match='not among'): accept_suggestions(store, lq, strict, reviewed={'f' * 16: True})
    with pytest.raises(IssuesError, match='lacks column'): accept_suggestions(store, lq.drop(columns='score'))
    assert store.item_states().to_dict() == before
    rep = accept_suggestions(store, lq, strict, reviewed={i: k > 0 for k, i in enumerate(ids[:20])})
    assert ids[0] not in rep.relabeled and ids[0] not in rep.quarantined and rep.skipped['marked_wrong'] == 1
    assert (rep.correct, rep.reviewed) == (19, 20) and rep.bound >= 0.6


def test_accept_skips_unknown_inactive_and_foreign_suggestions(store):
    lq = label_quality(store)
    a, b, c = lq.item_id[:3]
    lq.loc[lq.index[0], 'item_id'] = '0' * 16  # not in the store
    store.quarantine([b])
    lq.loc[lq.index[2], 'suggested_label'] = 'tiramisu'  # not a store class: quarantined instead (score 0.95 >= 0.8)
    rep = accept_suggestions(store, lq, dry_run=True)
    assert '0' * 16 not in rep.relabeled and b not in rep.relabeled and b not in rep.quarantined
    assert c in rep.quarantined and c not in rep.relabeled
    assert rep.skipped == dict(not_in_store=1, not_active=1, not_a_class=1)


# --- the review model, headless -------------------------------------------------------------------------------------------

def test_review_view_pages_and_filters(store, issues, tmp_path):
    r = review_of(store, issues, tmp_path, page_size=6)
    assert r.rankings == ['most_wrong', 'top_loss'] and r.ranking == 'most_wrong'
    r.show(ranking='top_loss')
    assert r.n_pages() == 5 and len(r.page_rows()) == 6
    first = set(r.values())
    r.go(1); assert set(r.values()).isdisjoint(first)
    r.go(99); assert r.page == 4
    r.show(klass=r.classes[0]); assert r.page == 0 and set(store.item_states().loc[r.view().item_id, 'label']) == {r.classes[0]}
    r.show(klass='', split='valid'); assert set(r.view().split) == {'valid'}
    with pytest.raises(ReviewError, match='not in this review'): r.show(ranking='label_quality')
    with pytest.raises(ReviewError, match='not one of'): r.show(split='holdout')


def test_review_apply_is_one_batch_and_undo_restores_the_store(store, issues, tmp_path):
    r = review_of(store, issues, tmp_path, page_size=6, reason='tested')
    r.show(ranking='top_loss')
    a, b, k = r.page_rows().item_id[:3]
    state0 = store.item_states()
    new_a = next(x for x in r.classes if x != state0.at[a, 'label'])
    r.decide(a, relabel_to(new_a)); r.decide(b, QUARANTINE); r.decide(k, QUARANTINE); r.decide(k, KEEP)
    r.go(2); r.show(ranking='most_wrong'); r.show(ranking='top_loss')
    assert r.delete() == [b] and r.change() == [(a, new_a)] and r.values()[k] == KEEP
    assert store.events().action.eq('add').all()  # nothing written before apply
    n = len(store.events())
    (batch,) = r.apply()
    ev = store.events().iloc[n:]
    assert ev[['item_id', 'action', 'new']].values.tolist() == [[a, 'relabel', new_a], [b, 'quarantine', 'quarantined']]
    assert set(ev.batch) == {batch} and set(ev.actor) == {'human'} and set(ev.run_id) == {RUN} and set(ev.reason) == {'tested'}
    assert b not in set(r.view().item_id) and r.apply() == []
    r.undo()
    assert store.item_states().to_dict() == state0.to_dict() and b in set(r.view().item_id)
    with pytest.raises(ReviewError, match='nothing to undo'): r.undo()


def test_review_refuses_bad_decisions(store, issues, tmp_path):
    r = review_of(store, issues, tmp_path)
    i = r.page_rows().item_id.iloc[0]
    assert relabel_to(r.now(i).label) not in [v for _, v in r.options(i)]
    with pytest.raises(ReviewError, match="not one of the store's classes"): r.decide(i, relabel_to('tiramisu'))
    with pytest.raises(StoreError, match='not a valid class name'): r.decide(i, relabel_to('../x'))
    with pytest.raises(ReviewError, match='not in this review'): r.decide('f' * 16, QUARANTINE)
    with pytest.raises(ReviewError, match='is not'): r.decide(i, 'delete')
    assert not r.decisions


def test_review_bulk_accept_through_a_sample(store, issues, tmp_path):
    r = review_of(store, issues, tmp_path, policy=AcceptPolicy(relabel_at=0.0, quarantine_at=None, min_precision=0.4))
    cand = r.suggestions('most_wrong')
    assert len(cand) == len(most_wrong(fake_predictions(store)))
    with pytest.raises(ReviewError, match='review a sample'): r.accept()
    sample = r.draw_sample(6, seed=0)
    assert r.draw_sample(6, seed=0).item_id.tolist() == sample.item_id.tolist()  # seeded
    ids = sample.item_id.tolist()
    for i in ids[:5]: r.mark(i, True)
    r.mark(ids[5], False)
    assert (r.precision()['n'], r.precision()['right']) == (6, 5) and r.can_accept()
    n = len(store.events())
    rep = r.accept()
    ev = store.events().iloc[n:]
    assert set(ev.item_id) == set(cand.item_id) - {ids[5]} and set(ev.actor) == {'auto'} and ev.batch.nunique() == 1
    assert r.sample is None
    r.undo()
    assert (store.item_states().loc[cand.item_id, 'label'].values == cand.label.values).all()
    r.draw_sample(3)
    r.set_policy(replace(r.policy, relabel_at=0.5))
    assert r.sample is None
    with pytest.raises(ReviewError, match='not in the reviewed sample'): r.mark(ids[0], True)
    r.set_policy(replace(r.policy, relabel_at=10.0))
    with pytest.raises(ReviewError, match='no suggestions'): r.draw_sample()


def test_review_for_run_reads_the_runs_issues(store, preds, tmp_path):
    from foodvision.issues import write_issues
    from foodvision.run import Run
    run = Run(tmp_path/'runs'/RUN); run.path.mkdir(parents=True)
    run.config_file.write_text(json.dumps(dict(run_id=RUN)))
    with pytest.raises(IssuesError): review_for_run(store, run)
    write_issues(issues_table([most_wrong(preds)], table=preds), run)
    r = review_for_run(store, run.path)
    assert r.run_id == RUN and r.rankings == ['most_wrong'] and r.stats_path.parent == run.path


# --- ranking stats: an append log -------------------------------------------------------------------------------------------

def test_ranking_stats_are_persisted_per_ranking(store, issues, tmp_path):
    r = review_of(store, issues, tmp_path, page_size=6)
    r.show(ranking='top_loss')
    r.decide(r.page_rows().item_id.iloc[0], QUARANTINE)
    r.go(1); r.decide(r.page_rows().item_id.iloc[0], QUARANTINE)
    r.apply()
    st = ranking_stats(tmp_path/'stats.jsonl')
    assert st.loc['top_loss'].tolist() == [12, 2, round(2 / 12, 3)]
    recs = [json.loads(l) for l in (tmp_path/'stats.jsonl').read_text().splitlines()]
    assert {x['run_id'] for x in recs} == {RUN} and all(x['at'].endswith('+00:00') for x in recs)
    assert 'top_loss 2/12' in cleaner_of(store, fake_predictions(store), tmp_path).payoff.value  # a later session sees it
    r.undo()
    assert ranking_stats(tmp_path/'stats.jsonl').loc['top_loss', 'changed'] == 0
    r.apply()  # nothing pending, nothing recorded twice
    assert ranking_stats(tmp_path/'stats.jsonl').loc['top_loss', 'shown'] == 12


RECORDER = """
import sys
from foodvision.review import record_ranking_stats
path, name, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
for _ in range(n): record_ranking_stats(path, [dict(ranking=name, shown=1, changed=1)])
"""

def test_two_processes_recording_at_once_lose_nothing(tmp_path):
    path = tmp_path/'stats.jsonl'
    procs = [subprocess.Popen([sys.executable, '-c', RECORDER, str(path), name, '200']) for name in ('a', 'b')]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    assert ranking_stats(path).shown.to_dict() == dict(a=200, b=200)
    record_ranking_stats(path, [])  # nothing to record: nothing written
    assert len(path.read_text().splitlines()) == 400


# --- the widget, through its handlers -------------------------------------------------------------------------------------

def test_only_the_visible_page_is_read_and_paging(store, preds, tmp_path, reads):
    c = cleaner_of(store, preds, tmp_path, page_size=6)
    assert c.ranking.value == 'most_wrong' and len(reads) == min(6, (~preds.correct).sum())
    c.ranking.value = 'top_loss'
    assert c.page_label.value.startswith('page 1 of 5') and c.prev.disabled
    first = list(c.review.values())
    reads.clear(); c.next.click()
    assert c.review.page == 1 and len(reads) == 6 and set(c.review.values()).isdisjoint(first)
    for _ in range(10): c.next.click()
    assert c.review.page == 4 and c.next.disabled
    c.prev.click(); assert c.review.page == 3
    c.page_size.value = 12; assert c.review.page == 0 and c.page_label.value.startswith('page 1 of 3')
    c.klass.value = c.review.classes[0]
    assert set(store.items().set_index('id').loc[c.review.view().item_id, 'label']) == {c.review.classes[0]}


def test_widget_decisions_apply_and_undo_through_buttons(store, preds, tmp_path):
    c = cleaner_of(store, preds, tmp_path, page_size=6, reason='tested')
    c.ranking.value = 'top_loss'
    a, b = c.cells[0].item_id, c.cells[1].item_id
    state0 = store.item_states()
    new_a = next(x for x in c.review.classes if x != state0.at[a, 'label'])
    c.cells[0].decision.value = relabel_to(new_a); c.cells[1].decision.value = QUARANTINE
    c.next.click(); c.ranking.value = 'most_wrong'; c.ranking.value = 'top_loss'
    assert cell_of(c, a).decision.value == relabel_to(new_a) and cell_of(c, b).decision.value == QUARANTINE
    assert c.summary.value.startswith('pending: 1 relabel, 1 quarantine') and not c.apply_button.disabled
    n = len(store.events())
    c.apply_button.click()
    ev = store.events().iloc[n:]
    assert ev[['item_id', 'action']].values.tolist() == [[a, 'relabel'], [b, 'quarantine']] and ev.batch.nunique() == 1
    assert set(ev.reason) == {'tested'} and 'applied 2 decision(s) in 1 batch(es)' == c.status.value
    assert c.apply_button.disabled and not c.undo_button.disabled
    c.undo_button.click()
    assert store.item_states().to_dict() == state0.to_dict() and c.undo_button.disabled
    c.undo_button.disabled = False; c.undo_button.click()
    assert 'nothing to undo' in c.status.value  # shown, not raised


def test_widget_bulk_accept_is_guarded(store, preds, tmp_path):
    c = cleaner_of(store, preds, tmp_path, policy=AcceptPolicy(relabel_at=0.0, quarantine_at=None, min_precision=0.8))
    assert c.accept_button.disabled
    c.sample_size.value = 6; c.draw_button.click()
    assert len(c.sample_cells) == 6
    for cell in c.sample_cells[:5]: cell.mark.value = 'right'
    c.sample_cells[5].mark.value = 'wrong'
    wrong = c.sample_cells[5].item_id
    assert 'precision 83%' in c.precision_label.value and c.accept_button.disabled
    before = store.item_states().to_dict()
    c.accept_button.click(); assert 'lower bound' in c.status.value and store.item_states().to_dict() == before
    c.min_precision.value = 0.4
    assert not c.accept_button.disabled
    n = len(store.events())
    c.accept_button.click()
    ev = store.events().iloc[n:]
    assert len(ev) and ev.batch.nunique() == 1 and set(ev.actor) == {'auto'} and wrong not in set(ev.item_id)
    assert 'accepted' in c.status.value and c.review.sample is None and not c.sample_cells
    c.undo_button.click()
    assert store.item_states().to_dict() == before


# --- path containment -----------------------------------------------------------------------------------------------------

def test_rows_for_unknown_items_or_crafted_paths_are_never_read(store, preds, issues, tmp_path, reads):
    evil = issues[issues.ranking == 'most_wrong'].head(3).copy()
    evil['rank'] = [0, 0, 0]
    evil['item_id'] = ['../../etc/passwd', '0' * 16, evil.item_id.iloc[2]]
    evil['path'] = ['/etc/passwd', '/etc/shadow', '/etc/hostname']  # a crafted path column is ignored
    c = make_cleaner(store, pd.concat([evil, issues]), run_id=RUN, stats_path=tmp_path/'stats.jsonl', page_size=48)
    assert set(c.review.dropped.item_id) == {'../../etc/passwd', '0' * 16}
    for i in ('../../etc/passwd', '0' * 16):
        with pytest.raises(ReviewError): c.review.decide(i, QUARANTINE)
    for ranking in c.ranking.options: c.ranking.value = ranking
    assert reads and all(p.parent == store.path/'images' for p in reads)
    assert evil.item_id.iloc[2] in c.review.values()


def test_an_item_whose_file_points_outside_the_store_is_not_read(store, preds, tmp_path, reads):
    victim = wrong_first(preds).item_id.iloc[0]
    with sqlite3.connect(store.db_path) as db: db.execute("UPDATE items SET file = '../../../etc/hostname' WHERE id = ?", (victim,))
    c = cleaner_of(store, preds, tmp_path)
    assert cell_of(c, victim).image.value == b'' and 'image unavailable' in cell_of(c, victim).caption.value
    assert all(p.parent == store.path/'images' for p in reads) and len(reads) == len(c.review.values()) - 1


# --- Label Studio ---------------------------------------------------------------------------------------------------------

def annotated(task, *choices, cancelled=False):
    anns = [dict(id=n, was_cancelled=cancelled, updated_at=f'2026-01-0{n + 1}T00:00:00Z',
                 result=[dict(type='choices', from_name='label', to_name='image', value=dict(choices=[ch]))]) for n, ch in enumerate(choices)]
    return dict(task, id=hash(task['data']['item_id']) % 1000, annotations=anns)


def test_label_studio_export_format(store, preds, tmp_path):
    rows = preds.head(5)
    out = export_label_studio(store, rows, tmp_path/'ls', model_version=RUN)
    tasks = json.loads(out['tasks'].read_text())
    assert out['n'] == len(tasks) == 5
    state = store.items().set_index('id')
    for t, r in zip(tasks, rows.itertuples()):
        assert t['data']['item_id'] == r.item_id and t['data']['given_label'] == state.at[r.item_id, 'label']
        assert t['data']['image'] == f"/data/local-files/?d=images/{store.image_path(r.item_id).name}"
        (pred,) = t['predictions']
        assert pred['model_version'] == RUN and abs(pred['score'] - r.prob) < 1e-6
        (res,) = pred['result']
        assert (res['type'], res['from_name'], res['to_name'], res['value']) == ('choices', 'label', 'image', dict(choices=[r.pred]))
    cfg = ET.fromstring(out['config'].read_text())
    assert cfg.find('Image').attrib == dict(name='image', value='$image')
    choices = cfg.find('Choices')
    assert (choices.get('name'), choices.get('toName'), choices.get('choice')) == ('label', 'image', 'single-radio')
    assert [c.get('value') for c in choices] == sorted(state.label.unique()) + [LS_QUARANTINE]
    # a URL prefix instead of local files; a document root that does not hold the store is refused
    url = export_label_studio(store, rows.head(1), tmp_path/'ls2', url_prefix='http://127.0.0.1:8081/img/')
    assert json.loads(url['tasks'].read_text())[0]['data']['image'] == 'http://127.0.0.1:8081/img/' + store.image_path(rows.item_id.iloc[0]).name
    with pytest.raises(LabelStudioError, match='not under the document root'): export_label_studio(store, rows, tmp_path/'ls3', document_root=tmp_path/'elsewhere')
    assert export_label_studio(store, rows, tmp_path/'ls4', document_root=store.path.parent)['n'] == 5
    with pytest.raises(LabelStudioError, match='collides'): label_studio_config(['pizza', LS_QUARANTINE])
    c = cleaner_of(store, preds, tmp_path)
    view = json.loads(export_label_studio(store, c.review.view().head(3), tmp_path/'ls5', model_version=RUN)['tasks'].read_text())
    assert [v['data']['item_id'] for v in view] == c.review.view().item_id.tolist()[:3] and view[0]['predictions'][0]['model_version'] == RUN
    with pytest.raises(StoreError): label_studio_config(['pizza', '<b>"x"</b>/..'])


def test_label_studio_round_trip(store, preds, tmp_path):
    c = cleaner_of(store, preds, tmp_path)
    c_view = c.review.view().head(6)
    tasks = json.loads(export_label_studio(store, c_view, tmp_path/'ls')['tasks'].read_text())
    state = store.items().set_index('id')
    t = {task['data']['item_id']: task for task in tasks}
    ids = list(t)
    other = next(x for x in c.review.classes if x != state.at[ids[0], 'label'])
    export = [annotated(t[ids[0]], 'pizza', other),                       # the latest annotation wins
              annotated(t[ids[1]], LS_QUARANTINE),
              annotated(t[ids[2]], state.at[ids[2], 'label']),            # confirmed: no event
              annotated(t[ids[3]], '../../etc/passwd'),                   # fails check_class_name: never applied
              annotated(t[ids[4]], 'tiramisu'),                           # not a store class
              annotated(t[ids[5]], 'pizza', cancelled=True),              # cancelled: ignored
              annotated(dict(data=dict(item_id='0' * 16, image='x')), other),
              dict(id=99, data=dict(image='y'))]
    (tmp_path/'export.json').write_text(json.dumps(export))
    n_events = len(store.events())
    rep = import_label_studio(store, tmp_path/'export.json', run_id=RUN)
    assert rep['relabeled'] == {ids[0]: other} and rep['quarantined'] == [ids[1]] and rep['unchanged'] == [ids[2]]
    assert [r[0] for r in rep['rejected']] == [ids[3]] and rep['unknown_labels'] == [(ids[4], 'tiramisu')]
    assert rep['unannotated'] == [ids[5]] and rep['unknown_items'] == ['0' * 16, 99]
    ev = store.events().iloc[n_events:]
    assert ev[['item_id', 'action', 'new']].values.tolist() == [[ids[0], 'relabel', other], [ids[1], 'quarantine', 'quarantined']]
    assert set(ev.actor) == {'human'} and set(ev.reason) == {'label studio'} and set(ev.run_id) == {RUN}
    assert '../../etc/passwd' not in set(store.items(status=None).label)
    again = import_label_studio(store, export, run_id=RUN)  # idempotent: nothing left to change
    assert again['relabeled'] == {} and again['batches'] == [] and len(store.events()) == n_events + 2
    new = import_label_studio(store, [annotated(t[ids[4]], 'tiramisu')], allow_new_classes=True)
    assert new['relabeled'] == {ids[4]: 'tiramisu'}


def ls_store_state(store):
    return len(store.events()), store.version(), store.item_states().to_dict()


def test_label_studio_import_is_one_batch(store, preds, tmp_path):
    tasks = json.loads(export_label_studio(store, preds.head(2), tmp_path/'ls')['tasks'].read_text())
    a, b = tasks
    other = next(x for x in sorted(preds.label.unique()) if x != a['data']['given_label'])
    rep = import_label_studio(store, [annotated(a, other), annotated(b, LS_QUARANTINE)], run_id=RUN)
    (batch,) = rep['batches']
    ev = store.events(batch=batch)
    assert ev[['item_id', 'action']].values.tolist() == [[a['data']['item_id'], 'relabel'], [b['data']['item_id'], 'quarantine']]
    store.undo_batch(batch)  # one undo reverses the whole import
    states = store.item_states()
    assert states.at[a['data']['item_id'], 'label'] == a['data']['given_label'] and states.at[b['data']['item_id'], 'status'] == 'active'


def test_label_studio_newest_annotation_wins_and_conflicts_are_counted(store, preds, tmp_path):
    tasks = json.loads(export_label_studio(store, preds.head(3), tmp_path/'ls')['tasks'].read_text())
    classes = sorted(preds.label.unique())
    def ann(i, choice, **kw): return dict(dict(id=i, was_cancelled=False, result=[dict(type='choices', from_name='label', to_name='image',
                                                                                       value=dict(choices=[choice]))]), **kw)
    a, b, c = tasks
    new_a, old_a = [x for x in classes if x != a['data']['given_label']][:2]
    new_c = next(x for x in classes if x != c['data']['given_label'])
    export = [dict(a, id=1, annotations=[ann(11, new_a, updated_at='2026-03-02T10:00:00Z')]),        # the same task exported twice:
              dict(a, id=2, annotations=[ann(12, old_a, updated_at='2026-03-01T10:00:00Z')]),        # the newer one, listed first, wins
              dict(b, id=3, annotations=[ann(13, LS_QUARANTINE, created_at='2026-03-01T10:00:00Z')]),
              dict(b, id=4, annotations=[ann(14, classes[0], created_at='2026-03-01T09:00:00Z'),      # older: ignored
                                         ann(15, classes[1], created_at='2026-03-05T09:00:00Z', was_cancelled=True)]),
              dict(c, id=5, annotations=[ann(16, new_c, updated_at='2026-03-01T10:00:00.500000+00:00'),  # half a second newer
                                         ann(17, c['data']['given_label'], updated_at='2026-03-01T10:00:00Z'),
                                         ann(18, LS_QUARANTINE, updated_at='2026-03-01T11:00:00+01:00')])]  # = 10:00 UTC; lower id
    rep = import_label_studio(store, export, run_id=RUN)
    ids = [t['data']['item_id'] for t in tasks]
    assert rep['relabeled'] == {ids[0]: new_a, ids[2]: new_c} and rep['quarantined'] == [ids[1]]
    assert [x[0] for x in rep['conflicts']] == ids and rep['conflicts'][0][1:] == (new_a, [old_a])
    assert len(store.events(batch=rep['batches'][0])) == 3


def test_label_studio_import_checks_the_image_against_the_item(store, preds, tmp_path):
    a, b = json.loads(export_label_studio(store, preds.head(2), tmp_path/'ls')['tasks'].read_text())
    swapped = dict(a, data=dict(a['data'], image=b['data']['image']))  # the reviewer saw b's image
    other = next(x for x in sorted(preds.label.unique()) if x != a['data']['given_label'])
    before = ls_store_state(store)
    rep = import_label_studio(store, [annotated(swapped, other), annotated(dict(b, data=dict(b['data'], image='../../etc/passwd')), LS_QUARANTINE)])
    assert rep['mismatched'] == [a['data']['item_id'], b['data']['item_id']] and rep['relabeled'] == {} and rep['batches'] == []
    assert ls_store_state(store) == before


LS_NOT_JSON_EXPORTS = {
    'truncated': '[{"id": 1, "data": {"item_id": "x"}, "annotations": [{"result": [',
    'object': '{"tasks": [{"id": 1, "data": {"item_id": "x"}, "annotations": []}]}',
    'null task': '[null]',
    'csv': 'image,given_label,item_id,split,id,label,annotator,annotation_id,created_at,updated_at,lead_time\n'
           '/data/local-files/?d=images/a.jpg,pizza,0123456789abcdef,train,1,sushi,1,1,2026-01-01,2026-01-01,2.5\n',
    'json-min': '[{"image": "/data/local-files/?d=images/a.jpg", "given_label": "pizza", "item_id": "0123456789abcdef", "id": 1,'
                ' "label": "sushi", "annotator": 1, "annotation_id": 1, "created_at": "2026-01-01", "lead_time": 2.5}]',
    'annotations not a list': '[{"id": 1, "data": {"item_id": "x"}, "annotations": {"result": []}}]',
    'null annotation': '[{"id": 1, "data": {"item_id": "x"}, "annotations": [null]}]',
    'null result': '[{"id": 1, "data": {"item_id": "x"}, "annotations": [{"result": [null]}]}]',
    'choices a string': '[{"id": 1, "data": {"item_id": "x"}, "annotations": [{"result": [{"type": "choices", "value": {"choices": "sushi"}}]}]}]',
    'not utf-8': b'\xff\xfe\x00[garbage',
}

@pytest.mark.parametrize('kind', list(LS_NOT_JSON_EXPORTS))
def test_label_studio_import_refuses_other_formats_and_changes_nothing(store, preds, tmp_path, kind):
    content = LS_NOT_JSON_EXPORTS[kind]
    path = tmp_path/'export.json'
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    # a valid task first: nothing may be applied when a later part of the file is refused
    good = annotated(json.loads(export_label_studio(store, preds.head(1), tmp_path/'ls')['tasks'].read_text())[0], LS_QUARANTINE)
    before = ls_store_state(store)
    with pytest.raises(LabelStudioError) as e: import_label_studio(store, path)
    msg = str(e.value)
    assert '\n' not in msg and "Label Studio's JSON export" in msg and 'a list of tasks with annotations' in msg, msg
    if kind in ('csv', 'json-min'): assert kind.upper() in msg, msg
    if content[:1] == '[' and kind != 'truncated':
        with pytest.raises(LabelStudioError): import_label_studio(store, [good] + json.loads(content))
    assert ls_store_state(store) == before


# --- thumbnails -----------------------------------------------------------------------------------------------------------

def test_thumbnails_are_upright_and_go_through_the_checked_decoder(store, preds, tmp_path):
    import io
    from PIL import Image
    buf, exif = io.BytesIO(), Image.Exif()
    exif[0x0112] = 6  # stored sideways: rotate 90° to view
    Image.new('RGB', (40, 20), 'orange').save(buf, 'JPEG', exif=exif)
    (iid,) = store.add_images([dict(data=buf.getvalue(), label='pizza')]).ids
    assert Image.open(io.BytesIO(fc.thumbnail(store.image_path(iid), 32))).size == (16, 32)  # as training sees it
    victim = wrong_first(preds).item_id.iloc[0]
    tiff = io.BytesIO(); Image.new('RGB', (20, 20), 'red').save(tiff, 'TIFF')  # decodable by Pillow, not an allowed format
    store.image_path(victim).write_bytes(tiff.getvalue())
    with pytest.raises(fc.ImageRejected): fc.thumbnail(store.image_path(victim))
    card = cell_of(cleaner_of(store, preds, tmp_path), victim)
    assert card.image.value == b'' and 'image unavailable' in card.caption.value and 'TIFF' in card.caption.value


# --- the inbox: first labels, more like this, Label Studio --------------------------------------------------------------

def mean_colour():
    "A stand-in for the pretrained embedder: a photo's mean colour (no model, no download)."
    import torch
    from functools import partial
    from foodvision.bundle import images_to_tensor
    from foodvision.similar import Embedder
    class Mean(torch.nn.Module):
        def __init__(self): super().__init__(); self.w = torch.nn.Parameter(torch.ones(1))
        def forward(self, x): return x.mean((2, 3)) * self.w
    return Embedder(Mean().eval(), partial(images_to_tensor, size=16, method='squish', mean=[0] * 3, std=[1] * 3), 'mean colour')


@pytest.fixture
def inbox(store):
    "Five photos waiting in the inbox and their 'inbox' ranking as `foodvision next` writes it: label empty, pre-label suggested."
    from foodvision.draw import synth_jpeg
    from foodvision.issues import ranked
    classes = sorted(store.items().label.unique())
    pre = [classes[k % 2] for k in range(5)]
    waiting = store.add_to_inbox([dict(data=synth_jpeg(c, seed=11, index=k, size=32)) for k, c in enumerate(pre)]).added
    t = issues_table([ranked('inbox', pd.DataFrame(dict(item_id=waiting, score=np.linspace(1, 0.5, 5), is_issue=True, suggested_label=pre,
                                                         label_quality=[0.994, 0.9, 0.8, 0.7, 0.6], detail='pre-label')))])
    return waiting, pre, t.assign(pred=t.suggested_label, prob=t.label_quality)


def test_review_shows_the_inbox_and_labels_it_with_the_relabels_undone_together(store, issues, inbox, tmp_path):
    waiting, pre, rows = inbox
    r = review_of(store, pd.concat([issues, rows]), tmp_path, page_size=6)
    assert r.rankings[-1] == 'inbox'
    r.show(ranking='inbox')
    assert r.view().item_id.tolist() == waiting and all(r.waiting(i) for i in waiting)
    assert r.options(waiting[0])[0] == ('not labelled yet', KEEP) and ('label: not_food', relabel_to('not_food')) in r.options(waiting[0])
    r.show(klass=pre[1]); assert r.view().item_id.tolist() == waiting[1::2]  # the class filter picks by pre-label
    r.show(klass='')
    r.decide(waiting[0], relabel_to(pre[0])); r.decide(waiting[1], relabel_to('not_food')); r.decide(waiting[2], QUARANTINE)
    r.show(ranking='top_loss')
    a = r.page_rows().item_id.iloc[0]
    state0 = store.item_states()
    new_a = next(x for x in r.classes if x != state0.at[a, 'label'])
    r.decide(a, relabel_to(new_a))
    assert sorted(r.pending().action) == ['label', 'label', 'quarantine', 'relabel']
    n = len(store.events())
    batches = r.apply()
    ev = store.events().iloc[n:]
    assert len(batches) == 1 and ev.batch.unique().tolist() == batches  # relabels, first labels and quarantines: one batch
    assert sorted(store.events(batch=batches[0]).action) == ['label', 'label', 'quarantine', 'relabel']
    assert set(ev.actor) == {'human'} and set(ev.run_id) == {RUN}
    assert store.item_states().loc[waiting[:3], ['label', 'status']].values.tolist() == [[pre[0], 'active'], ['not_food', 'active'], ['', 'quarantined']]
    r.show(ranking='inbox'); assert r.view().item_id.tolist() == waiting[3:]
    assert len(r.undo()) == 1  # one undo reverses the whole apply
    assert store.item_states().to_dict() == state0.to_dict() and set(store.inbox().id) == set(waiting)
    assert r.view().item_id.tolist() == waiting


def test_a_refused_first_label_undoes_the_relabels_and_keeps_the_decisions(store, issues, inbox, tmp_path):
    waiting, pre, rows = inbox
    r = review_of(store, pd.concat([issues, rows]), tmp_path)
    r.show(ranking='inbox'); r.decide(waiting[0], relabel_to(pre[0]))
    r.show(ranking='top_loss'); a = r.page_rows().item_id.iloc[0]
    r.decide(a, QUARANTINE)
    store.label_inbox({waiting[0]: pre[1]})  # another tab labelled it first
    before, n = store.item_states(), len(store.events())
    with pytest.raises(StoreError, match='not in the inbox'): r.apply()
    assert store.item_states().to_dict() == before.to_dict() and len(r.pending()) == 2 and not r.history
    assert len(store.events()) == n  # one transaction: the quarantine in the same apply was never written


def test_more_like_this_labels_look_alikes_in_one_batch(store, issues, inbox, tmp_path):
    waiting, pre, rows = inbox
    r = review_of(store, pd.concat([issues, rows]), tmp_path, embedder=mean_colour())
    near = r.similar(waiting[0], k=3)
    assert len(near) == 3 and set(near.status) == {'inbox'} and waiting[0] not in set(near.item_id)
    labelled = r.similar(issues.item_id.iloc[0], k=4)
    assert len(labelled) == 4 and set(labelled.status) == {'active'}
    with pytest.raises(ReviewError, match="not one of the store's classes"): r.label_like(waiting[0], 'tiramisu', near.item_id)
    with pytest.raises(ReviewError, match='is not in the inbox'): r.label_like(waiting[0], pre[0], [issues.item_id.iloc[0]])
    with pytest.raises(ReviewError, match='not in the store'): r.label_like(waiting[0], pre[0], ['f' * 16])
    assert set(store.inbox().id) == set(waiting)  # refusals change nothing
    (batch,) = r.label_like(waiting[0], pre[0], near.item_id[:2])
    ev = store.events(batch=batch)
    assert set(ev.item_id) == {waiting[0], *near.item_id[:2]} and set(ev.action) == {'label'} and set(ev.new) == {pre[0]}
    assert set(ev.actor) == {'human'} and set(ev.run_id) == {RUN}
    assert ranking_stats(tmp_path/'stats.jsonl').loc[r.ranking, 'changed'] == 3
    r.undo()
    assert set(store.inbox().id) == set(waiting)


def test_similar_items_refuses_an_unknown_item(store):
    from foodvision.similar import similar_items
    with pytest.raises(StoreError, match='no item'): similar_items(store, 'nope', embedder=mean_colour())


def test_card_words_are_plain():
    assert fc.card_words('pizza', False, 'salad', 0.97) == 'Labelled pizza · model says salad (97% sure)'
    assert fc.card_words('pizza', False, 'pizza', 0.5) == 'Labelled pizza · model agrees (50% sure)'
    assert fc.card_words('', True, 'pizza', 0.994) == 'Not labelled yet · model suggests pizza (99% sure)'
    assert fc.card_words('', True, None) == 'Not labelled yet · no suggestion yet'
    assert fc.card_words('pizza', False, None, float('nan')) == 'Labelled pizza · no prediction'


def test_widget_inbox_cards_accept_pick_and_more_like_this(store, issues, inbox, tmp_path):
    waiting, pre, rows = inbox
    c = make_cleaner(store, pd.concat([issues, rows]), run_id=RUN, stats_path=tmp_path/'stats.jsonl', page_size=6, embedder=mean_colour())
    wrong = wrong_first(fake_predictions(store)).iloc[0]
    assert f"Labelled {wrong.label} · model says {wrong.pred} ({wrong.prob:.0%} sure)" in cell_of(c, wrong.item_id).caption.value
    assert cell_of(c, wrong.item_id).accept.layout.display == 'none'  # no accept button on a labelled card
    c.ranking.value = 'inbox'
    first = cell_of(c, waiting[0])
    assert f"Not labelled yet · model suggests {pre[0]} (99% sure)" in first.caption.value and c.page_label.value.endswith('5 photos waiting')
    assert first.accept.description == f'accept: {pre[0]}' and first.accept.layout.display is None
    first.accept.click()
    cell_of(c, waiting[1]).decision.value = relabel_to('not_food')
    assert c.summary.value == 'pending: 0 relabel, 0 quarantine, 2 first label(s)'
    c.apply_button.click()
    assert store.item_states().loc[waiting[:2], 'label'].tolist() == [pre[0], 'not_food'] and 'applied 2' in c.status.value
    assert [x.item_id for x in c.cells if x.item_id] == waiting[2:]
    cell_of(c, waiting[2]).more.click()
    assert c.like_for == waiting[2] and len(c.like_cells) == 2 and c.like_box.layout.display is None and c.like_label.value == pre[2]
    c.like_label.value = pre[0]
    c.like_cells[0].pick.value = True
    (picked,) = c.picked()
    c.like_button.click()
    ev = store.events(batch=store.last_batch())
    assert set(ev.item_id) == {waiting[2], picked} and set(ev.action) == {'label'} and set(ev.new) == {pre[0]}
    assert 'labelled 2 photo(s)' in c.status.value and c.like_box.layout.display == 'none'
    assert [x.item_id for x in c.cells if x.item_id] == [w for w in waiting[3:] if w != picked]
    c.undo_button.click()
    assert set(waiting[2:]) <= set(store.inbox().id)
    c.ranking.value = 'top_loss'
    labelled = c.cells[0].item_id
    c.cells[0].more.click()  # a labelled card: its labelled look-alikes, nothing to label
    assert c.like_for == labelled and c.like_form.layout.display == 'none' and not any(x.pick.layout.display is None for x in c.like_cells)


def test_widget_more_like_this_shows_an_embedder_failure_in_the_status_line(store, issues, inbox, tmp_path):
    waiting, pre, rows = inbox
    c = make_cleaner(store, pd.concat([issues, rows]), run_id=RUN, stats_path=tmp_path/'stats.jsonl')
    def refuse(*a, **k): raise RuntimeError("no pretrained weights offline")
    c.review.similar = refuse
    c.cells[0].more.click()
    assert 'no pretrained weights offline' in c.status.value and c.like_box.layout.display == 'none'


def test_label_studio_gives_inbox_photos_their_first_label(store, preds, inbox, tmp_path):
    from foodvision.labelstudio import NOT_LABELLED
    waiting, pre, rows = inbox
    tasks = json.loads(export_label_studio(store, pd.concat([rows.head(3), preds.head(1)]), tmp_path/'ls')['tasks'].read_text())
    w0, w1, w2, s = tasks
    assert w0['data']['given_label'] == NOT_LABELLED and w0['predictions'][0]['result'][0]['value']['choices'] == [pre[0]]
    other = next(x for x in sorted(preds.label.unique()) if x != s['data']['given_label'])
    before = store.item_states()
    rep = import_label_studio(store, [annotated(w0, pre[0]), annotated(w1, LS_QUARANTINE), annotated(w2, 'tiramisu'), annotated(s, other)], run_id=RUN)
    assert rep['labelled'] == {waiting[0]: pre[0]} and rep['quarantined'] == [waiting[1]] and rep['relabeled'] == {s['data']['item_id']: other}
    assert rep['unknown_labels'] == [(waiting[2], 'tiramisu')] and len(rep['batches']) == 1  # one import, one batch
    (batch,) = rep['batches']
    assert store.events(batch=batch).action.tolist() == ['relabel', 'label', 'quarantine']
    ev = store.events(batch=batch); ev = ev[ev.action == 'label']
    assert ev[['item_id', 'new', 'actor', 'run_id', 'reason']].values.tolist() == [[waiting[0], pre[0], 'human', RUN, 'label studio']]
    store.undo_batch(batch)
    assert store.item_states().to_dict() == before.to_dict()
    only = import_label_studio(store, [annotated(w0, pre[0])])  # first labels alone: one batch
    assert len(only['batches']) == 1 and store.item_states().at[waiting[0], 'status'] == 'active'


def test_label_studio_refused_first_labels_undo_the_relabels(store, preds, inbox, tmp_path, monkeypatch):
    waiting, pre, rows = inbox
    w0, s = json.loads(export_label_studio(store, pd.concat([rows.head(1), preds.head(1)]), tmp_path/'ls')['tasks'].read_text())
    other = next(x for x in sorted(preds.label.unique()) if x != s['data']['given_label'])
    real, n = store.apply_changes, len(store.events())
    def racing(**kw):  # another person labels the photo between the import's read and its write
        Store(store.path).label_inbox({waiting[0]: pre[1]})
        return real(**kw)
    monkeypatch.setattr(store, 'apply_changes', racing)
    with pytest.raises(StoreError, match='not in the inbox'): import_label_studio(store, [annotated(w0, pre[0]), annotated(s, other)])
    ev = store.events().iloc[n:]
    assert ev.action.tolist() == ['label'] and ev.new.tolist() == [pre[1]]  # only the other person's label: the relabel went with the refusal
    assert store.item_states().at[s['data']['item_id'], 'label'] == s['data']['given_label']
