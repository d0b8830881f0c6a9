"""The cleaner's logic without a browser: widget values are set and buttons pressed through their handlers, then the store is checked."""
import json, shutil, sqlite3
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import foodvision.cleaner as fc
from foodvision.cleaner import (ISSUE_COLUMNS, KEEP, LS_QUARANTINE, QUARANTINE, CleanerError, check_issues, export_label_studio,
                                import_label_studio, label_studio_config, load_issues, make_cleaner, ranking_stats,
                                rankings_from_predictions, relabel_to, wilson_interval)
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
def reads(monkeypatch):
    "Every path the cleaner reads a thumbnail from."
    seen, real = [], fc.thumbnail
    def spy(path, size=128): seen.append(Path(path)); return real(path, size)
    monkeypatch.setattr(fc, 'thumbnail', spy)
    return seen


def cleaner_of(store, preds, tmp_path, **kw):
    return make_cleaner(store, preds, run_id=RUN, stats_path=tmp_path/'stats.json', **kw)


def cell_of(cleaner, item_id):
    return next(c for c in cleaner.cells if c.item_id == item_id)


# --- rankings ---------------------------------------------------------------------------------------------------------

def test_rankings_from_predictions(preds):
    iss = rankings_from_predictions(preds)
    assert list(iss.columns) == ISSUE_COLUMNS
    mw, tl = iss[iss.ranking == 'most_wrong'], iss[iss.ranking == 'top_loss']
    assert set(mw.item_id) == set(preds.item_id[~preds.correct]) and mw.prob.is_monotonic_decreasing
    assert (mw.suggested_label == mw.pred).all() and mw.is_issue.all()
    assert len(tl) == len(preds) and tl.score.is_monotonic_decreasing and tl['rank'].tolist() == list(range(1, len(tl) + 1))
    assert tl[tl.pred == tl.label].suggested_label.isna().all()
    assert np.allclose(iss.label_quality, np.exp(-iss.loss))


def test_check_issues_requires_fixed_columns(preds):
    with pytest.raises(CleanerError, match='lacks column'): check_issues(preds)
    minimal = pd.DataFrame(dict(ranking='duplicates', item_id=preds.item_id[:2], rank=[1, 2], score=1.0, label_quality=np.nan,
                                suggested_label=None, is_issue=True, detail='dup'))
    assert list(check_issues(minimal).columns) == ISSUE_COLUMNS


def test_load_issues_prefers_the_issues_table(store, preds, tmp_path):
    run = tmp_path/'run'; (run/'eval').mkdir(parents=True)
    with pytest.raises(CleanerError, match='neither issues.parquet nor an evaluation'): load_issues(run)
    rankings_from_predictions(preds).query("ranking == 'most_wrong'").to_parquet(run/'issues.parquet', index=False)
    assert set(load_issues(run).ranking) == {'most_wrong'}


# --- the widget, through its handlers -------------------------------------------------------------------------------------

def test_only_the_visible_page_is_read_and_paging(store, preds, tmp_path, reads):
    c = cleaner_of(store, preds, tmp_path, page_size=6)
    assert c.ranking.value == 'most_wrong' and len(reads) == min(6, (~preds.correct).sum())
    c.ranking.value = 'top_loss'
    assert c.page_label.value.startswith('page 1 of 5') and c.prev.disabled
    first = list(c.values())
    reads.clear(); c.next.click()
    assert c.page == 1 and len(reads) == 6 and set(c.values()).isdisjoint(first)
    for _ in range(10): c.next.click()
    assert c.page == 4 and c.next.disabled
    c.prev.click(); assert c.page == 3
    c.page_size.value = 12; assert c.page == 0 and c.page_label.value.startswith('page 1 of 3')
    c.klass.value = c.classes[0]
    assert set(store.items().set_index('id').loc[c.view().item_id, 'label']) == {c.classes[0]}
    c.klass.value, c.split.value = '', 'valid'
    assert set(c.view().split) == {'valid'}


def test_decisions_survive_view_changes_and_query_api(store, preds, tmp_path):
    c = cleaner_of(store, preds, tmp_path, page_size=6)
    c.ranking.value = 'top_loss'
    a, b, k = (cell.item_id for cell in c.cells[:3])
    new_a = next(x for x in c.classes if x != store.items().set_index('id').at[a, 'label'])
    cell_of(c, a).decision.value = relabel_to(new_a)
    cell_of(c, b).decision.value = QUARANTINE
    cell_of(c, k).decision.value = QUARANTINE; cell_of(c, k).decision.value = KEEP
    c.next.click(); c.ranking.value = 'most_wrong'; c.split.value = 'test'; c.split.value = ''; c.ranking.value = 'top_loss'
    assert c.values()[a] == relabel_to(new_a) and cell_of(c, a).decision.value == relabel_to(new_a)
    assert cell_of(c, b).decision.value == QUARANTINE and c.values()[k] == KEEP
    assert c.delete() == [b] and c.change() == [(a, new_a)]
    p = c.pending()
    assert p.set_index('item_id').loc[[a, b], ['action', 'new', 'ranking']].values.tolist() == [['relabel', new_a, 'top_loss'], ['quarantine', '', 'top_loss']]
    assert c.summary.value.startswith('pending: 1 relabel, 1 quarantine') and not c.apply_button.disabled
    assert store.events().action.eq('add').all()  # nothing written before Apply


def test_own_label_is_not_offered_and_bad_decisions_are_refused(store, preds, tmp_path):
    c = cleaner_of(store, preds, tmp_path)
    cell = c.cells[0]; label = store.items().set_index('id').at[cell.item_id, 'label']
    assert relabel_to(label) not in [v for _, v in cell.decision.options]
    with pytest.raises(CleanerError, match="not one of the store's classes"): c.decide(cell.item_id, relabel_to('tiramisu'))
    with pytest.raises(StoreError, match='not a valid class name'): c.decide(cell.item_id, relabel_to('../x'))
    with pytest.raises(CleanerError, match='not in this cleaner'): c.decide('f' * 16, QUARANTINE)
    with pytest.raises(CleanerError, match='not'): c.decide(cell.item_id, 'delete')
    c.undo_button.click()  # nothing to undo: shown, not raised
    assert 'nothing to undo' in c.status.value


def test_apply_and_undo_through_buttons(store, preds, tmp_path):
    c = cleaner_of(store, preds, tmp_path, page_size=6, reason='tested')
    c.ranking.value = 'top_loss'
    a, b = c.cells[0].item_id, c.cells[1].item_id
    before = store.items(status=None).set_index('id')
    new_a = next(x for x in c.classes if x != before.at[a, 'label'])
    c.cells[0].decision.value = relabel_to(new_a); c.cells[1].decision.value = QUARANTINE
    n_events = len(store.events())
    c.apply_button.click()
    ev = store.events().iloc[n_events:]
    assert ev[['item_id', 'action', 'old', 'new']].values.tolist() == [[a, 'relabel', before.at[a, 'label'], new_a], [b, 'quarantine', 'active', 'quarantined']]
    assert set(ev.actor) == {'human'} and set(ev.run_id) == {RUN} and set(ev.reason) == {'tested'} and ev.batch.nunique() == 1  # one transaction, one batch
    now = store.items(status=None).set_index('id')
    assert now.at[a, 'label'] == new_a and now.at[b, 'status'] == 'quarantined'
    assert b not in set(c.view().item_id) and not len(c.pending()) and c.apply_button.disabled and not c.undo_button.disabled
    assert c.apply() == []  # nothing pending: no empty batch
    c.undo_button.click()
    after = store.items(status=None).set_index('id')
    assert after.at[a, 'label'] == before.at[a, 'label'] and after.at[b, 'status'] == 'active'
    undo = store.events().iloc[n_events + 2:]
    assert len(undo) == 2 and undo.undoes.notna().all() and set(undo.actor) == {'human'}
    assert c.undo_button.disabled and b in set(c.view().item_id)


def naive_view(c):
    "The view by its definition: the ranking's rows whose items are active now, filtered by class and split, in rank order."
    q = c.queue[c.queue.ranking == c.ranking.value]
    now = c.store.items(status=None).set_index('id').reindex(q.item_id)
    keep = now.status.values == 'active'
    if c.klass.value: keep &= now.label.values == c.klass.value
    if c.split.value: keep &= now.split.values == c.split.value
    return q[keep]


def test_cached_view_follows_filters_and_the_store(store, preds, tmp_path, reads):
    c = cleaner_of(store, preds, tmp_path, page_size=6)
    def check():
        assert c.view().index.tolist() == naive_view(c).index.tolist()
        assert c.n_pages() == max(1, -(-len(naive_view(c)) // 6))
    for ranking in ('most_wrong', 'top_loss'):
        for klass in ('', *c.classes[:2]):
            for split in ('', 'train', 'valid'):
                c.ranking.value, c.klass.value, c.split.value = ranking, klass, split
                check()
    c.ranking.value, c.klass.value, c.split.value = 'top_loss', '', ''
    gone = c.view().item_id.iloc[0]
    c.decide(gone, QUARANTINE); c.apply(); check()
    assert gone not in set(c.view().item_id)
    c.undo(); check()
    assert gone in set(c.view().item_id)
    store.quarantine([gone], reason='elsewhere'); c._reload(); check()  # a change made outside, picked up on reload
    reads.clear(); c.go(c.n_pages() - 1)
    assert len(reads) == len(c.view()) - 6 * (c.n_pages() - 1)  # the last page's thumbnails only


def test_ranking_stats_are_persisted_per_ranking(store, preds, tmp_path):
    c = cleaner_of(store, preds, tmp_path, page_size=6)
    c.ranking.value = 'top_loss'
    c.cells[0].decision.value = QUARANTINE
    c.next.click(); c.cells[0].decision.value = QUARANTINE
    c.apply_button.click()
    st = ranking_stats(tmp_path/'stats.json')
    assert st.loc['top_loss'].tolist() == [12, 2, round(2 / 12, 3)]
    assert st.loc['most_wrong', 'changed'] == 0 and st.loc['most_wrong', 'shown'] == min(6, (~preds.correct).sum())
    recs = json.loads((tmp_path/'stats.json').read_text())['records']
    assert {r['run_id'] for r in recs} == {RUN} and all('at' in r for r in recs)
    c2 = cleaner_of(store, preds, tmp_path)  # a later session sees it
    assert 'top_loss 2/12' in c2.payoff.value
    c.undo()
    assert ranking_stats(tmp_path/'stats.json').loc['top_loss', 'changed'] == 0
    c.apply_button.click()  # nothing pending, nothing recorded twice
    assert ranking_stats(tmp_path/'stats.json').loc['top_loss', 'shown'] == 12


# --- bulk accept ----------------------------------------------------------------------------------------------------------

def test_wilson_interval():
    assert wilson_interval(0, 0) == (0.0, 1.0)
    lo, hi = wilson_interval(20, 20); assert abs(lo - 0.8389) < 1e-3 and hi == 1.0
    lo, hi = wilson_interval(5, 10); assert abs(lo - 0.2366) < 1e-3 and abs(hi - 0.7634) < 1e-3


def test_bulk_accept_is_guarded_by_a_reviewed_sample(store, preds, tmp_path):
    c = cleaner_of(store, preds, tmp_path)
    assert c.accept_button.disabled
    with pytest.raises(CleanerError, match='review a sample'): c.accept_suggestions(0.5)
    cand = c.suggestions(0.0)
    assert len(cand) == (~preds.correct).sum()
    c.min_score.value, c.sample_size.value = 0.0, 6
    c.draw_button.click()
    ids = c.review['ids']; assert len(ids) == 6 and set(ids) <= set(cand.item_id)
    assert c.review_sample(0.0, n=6, seed=0).item_id.tolist() == ids  # seeded
    cells = {cell.item_id: cell for cell in c._review_cells}
    for i in ids[:5]: cells[i].mark.value = 'right'
    cells[ids[5]].mark.value = 'wrong'
    p = c.precision(); assert (p['n'], p['right']) == (6, 5) and abs(p['precision'] - 5 / 6) < 1e-9
    assert 'precision 83%' in c.precision_label.value and 'CI' in c.precision_label.value
    c.min_precision.value = 0.8
    assert c.accept_button.disabled and not c.can_accept(0.8)
    with pytest.raises(CleanerError, match='lower bound'): c.accept_suggestions(0.8)
    c.accept_button.click(); assert 'lower bound' in c.status.value
    assert store.events().action.eq('add').all()
    c.min_precision.value = 0.4
    assert not c.accept_button.disabled
    n_events = len(store.events())
    c.accept_button.click()
    ev = store.events().iloc[n_events:]
    assert set(ev.item_id) == set(cand.item_id) - {ids[5]}  # marked wrong: never applied
    assert set(ev.actor) == {'auto'} and set(ev.run_id) == {RUN} and ev.batch.nunique() == 1
    assert 'reviewed precision 83%' in ev.reason.iloc[0]
    assert c.review is None and c.accept_button.disabled
    c.undo_button.click()
    assert (store.items().set_index('id').loc[cand.item_id, 'label'] == cand.set_index('item_id').label).all()


def test_changing_the_score_discards_the_review(store, preds, tmp_path):
    c = cleaner_of(store, preds, tmp_path)
    c.review_sample(0.0, n=3)
    for i in c.review['ids']: c.mark(i, True)
    c.min_score.value = 0.9
    assert c.review is None and not c.review_box.children and c.accept_button.disabled
    with pytest.raises(CleanerError, match='not in the reviewed sample'): c.mark(preds.item_id[0], True)
    with pytest.raises(CleanerError, match='no suggestions'): c.review_sample(10.0)


# --- path containment -----------------------------------------------------------------------------------------------------

def test_rows_for_unknown_items_or_crafted_paths_are_never_read(store, preds, tmp_path, reads):
    iss = rankings_from_predictions(preds)
    evil = iss[iss.ranking == 'most_wrong'].head(3).copy()
    evil['rank'] = [0, 0, 0]
    evil['item_id'] = ['../../etc/passwd', '0' * 16, evil.item_id.iloc[2]]
    evil['path'] = ['/etc/passwd', '/etc/shadow', '/etc/hostname']  # a crafted path column is ignored
    c = make_cleaner(store, pd.concat([evil, iss]), run_id=RUN, stats_path=tmp_path/'stats.json', page_size=48)
    assert set(c.dropped.item_id) == {'../../etc/passwd', '0' * 16}
    for i in ('../../etc/passwd', '0' * 16):
        with pytest.raises(CleanerError): c.decide(i, QUARANTINE)
    for ranking in c.ranking.options: c.ranking.value = ranking
    images = store.path/'images'
    assert reads and all(p.parent == images for p in reads)
    assert evil.item_id.iloc[2] in c.values()


def test_an_item_whose_file_points_outside_the_store_is_not_read(store, preds, tmp_path, reads):
    victim = preds[~preds.correct].sort_values('prob', ascending=False).item_id.iloc[0]
    with sqlite3.connect(store.db_path) as db: db.execute("UPDATE items SET file = '../../../etc/hostname' WHERE id = ?", (victim,))
    c = cleaner_of(store, preds, tmp_path)
    assert cell_of(c, victim).image.value == b'' and 'image unavailable' in cell_of(c, victim).caption.value
    assert all(p.parent == store.path/'images' for p in reads) and len(reads) == len(c.values()) - 1


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
    with pytest.raises(CleanerError, match='not under the document root'): export_label_studio(store, rows, tmp_path/'ls3', document_root=tmp_path/'elsewhere')
    assert export_label_studio(store, rows, tmp_path/'ls4', document_root=store.path.parent)['n'] == 5
    with pytest.raises(CleanerError, match='collides'): label_studio_config(['pizza', LS_QUARANTINE])
    c = cleaner_of(store, preds, tmp_path)
    view = json.loads(c.to_label_studio(tmp_path/'ls5', limit=3)['tasks'].read_text())
    assert [v['data']['item_id'] for v in view] == c.view().item_id.tolist()[:3] and view[0]['predictions'][0]['model_version'] == RUN
    with pytest.raises(StoreError): label_studio_config(['pizza', '<b>"x"</b>/..'])


def test_label_studio_round_trip(store, preds, tmp_path):
    c = cleaner_of(store, preds, tmp_path)
    c_view = c.view().head(6)
    tasks = json.loads(export_label_studio(store, c_view, tmp_path/'ls')['tasks'].read_text())
    state = store.items().set_index('id')
    t = {task['data']['item_id']: task for task in tasks}
    ids = list(t)
    other = next(x for x in c.classes if x != state.at[ids[0], 'label'])
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
    with pytest.raises(CleanerError) as e: import_label_studio(store, path)
    msg = str(e.value)
    assert '\n' not in msg and "Label Studio's JSON export" in msg and 'a list of tasks with annotations' in msg, msg
    if kind in ('csv', 'json-min'): assert kind.upper() in msg, msg
    if content[:1] == '[' and kind != 'truncated':
        with pytest.raises(CleanerError): import_label_studio(store, [good] + json.loads(content))
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
    victim = preds[~preds.correct].sort_values('prob', ascending=False).item_id.iloc[0]
    tiff = io.BytesIO(); Image.new('RGB', (20, 20), 'red').save(tiff, 'TIFF')  # decodable by Pillow, not an allowed format
    store.image_path(victim).write_bytes(tiff.getvalue())
    with pytest.raises(fc.ImageRejected): fc.thumbnail(store.image_path(victim))
    card = cell_of(cleaner_of(store, preds, tmp_path), victim)
    assert card.image.value == b'' and 'image unavailable' in card.caption.value and 'TIFF' in card.caption.value
