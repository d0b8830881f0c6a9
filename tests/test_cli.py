"""The foodvision command as a user runs it: real subprocesses, one-line errors, non-zero exits."""
import io, os, shutil, subprocess, sys
from pathlib import Path

import pytest
from PIL import Image

EXE = [str(Path(sys.executable).with_name('foodvision'))]  # the installed console script


def fv(*args, cwd=None):
    return subprocess.run(EXE + [str(a) for a in args], capture_output=True, text=True, cwd=cwd, timeout=300)


def assert_one_line_error(r, contains):
    assert r.returncode != 0, r.stdout
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert 'Traceback' not in r.stderr
    assert lines[0].startswith('foodvision: error:') and contains in lines[0], lines[0]


@pytest.fixture
def folder(tmp_path):
    for label, colour in [('pizza', 'red'), ('sushi', 'white'), ('salad', 'green')]:
        d = tmp_path/'photos'/label; d.mkdir(parents=True)
        for i in range(2):
            Image.new('RGB', (20 + i, 20), colour).save(d/f'{i}.jpg')
    return tmp_path/'photos'


def test_help_lists_subcommands():
    r = fv('--help')
    assert r.returncode == 0
    for cmd in ['synth', 'import', 'export', 'status', 'gather', 'diff']: assert cmd in r.stdout


def test_status_of_a_missing_store(tmp_path):
    assert_one_line_error(fv('status', tmp_path/'nope'), 'not a foodvision store')


def test_import_missing_folder(tmp_path):
    assert_one_line_error(fv('import', tmp_path/'missing', tmp_path/'s'), 'does not exist')


def test_import_export_roundtrip_and_status(folder, tmp_path):
    r = fv('import', folder, tmp_path/'s')
    assert r.returncode == 0 and '6 added' in r.stdout, r.stdout + r.stderr
    r = fv('import', folder, tmp_path/'s')
    assert '0 added, 6 already present' in r.stdout
    r = fv('status', tmp_path/'s')
    assert r.returncode == 0 and 'pizza' in r.stdout and '6 active' in r.stdout
    r = fv('export', tmp_path/'s', tmp_path/'out')
    assert r.returncode == 0 and len(list((tmp_path/'out').rglob('*.jpg'))) == 6
    assert_one_line_error(fv('export', tmp_path/'s', tmp_path/'out'), 'not empty')


def test_class_names_with_path_characters_are_rejected_and_change_nothing(tmp_path):
    csv = tmp_path/'labels.csv'
    Image.new('RGB', (8, 8), 'blue').save(tmp_path/'a.png')
    csv.write_text('path,label\na.png,../../etc\n')
    r = fv('import', csv, tmp_path/'s')
    assert r.returncode == 0 and '0 added' in r.stdout and 'not a valid class name' in r.stdout
    assert list((tmp_path/'s'/'images').iterdir()) == []


def test_conflicting_label_is_reported_not_merged(folder, tmp_path):
    fv('import', folder, tmp_path/'s')
    csv = tmp_path/'relabel.csv'
    csv.write_text(f"path,label\n{folder/'pizza'/'0.jpg'},burger\n")
    r = fv('import', csv, tmp_path/'s')
    assert '1 conflicts' in r.stdout and "kept 'pizza'" in r.stdout


def test_diff_of_unknown_version(folder, tmp_path):
    fv('import', folder, tmp_path/'s')
    assert_one_line_error(fv('diff', tmp_path/'s', '0123456789abcdef'), 'unknown to this store')


def test_bad_arguments_exit_non_zero():
    r = fv('synth')
    assert r.returncode == 2 and 'usage' in r.stderr


def test_purge_needs_yes_and_only_removes_quarantined(folder, tmp_path):
    fv('import', folder, tmp_path/'s')
    from foodvision.store import Store
    store = Store(tmp_path/'s')
    gone = store.items().id[0]
    store.quarantine([gone], reason='test')
    assert_one_line_error(fv('purge', tmp_path/'s'), 'confirm')
    assert len(list(store.images.iterdir())) == 6, 'nothing deleted without --yes'
    r = fv('purge', tmp_path/'s', '--yes', '--reason', 'test')
    assert r.returncode == 0 and '1 quarantined' in r.stdout
    assert len(list(store.images.iterdir())) == 5 and gone not in set(store.items(status=None).id)
    assert (store.events().item_id == gone).any(), 'the audit log keeps the history'


# --- Label Studio --------------------------------------------------------------------------------------------------------

@pytest.fixture
def store_and_run(folder, tmp_path):
    "A store of the six photos and a run folder whose issues table flags four of them (the model's label is the next class)."
    import json
    import pandas as pd
    from foodvision.store import Store
    store = Store.create(tmp_path/'s'); store.import_path(folder)
    items = store.items()
    classes = sorted(items.label.unique())
    pred = [classes[(classes.index(l) + 1) % len(classes)] for l in items.label]
    run = tmp_path/'runs'/'r1'; run.mkdir(parents=True)
    (run/'config.json').write_text(json.dumps(dict(run_id='r1', store=str(store.path))))
    pd.DataFrame(dict(ranking='most_wrong', item_id=items.id, rank=range(1, len(items) + 1), score=0.9, label_quality=0.1,
                      suggested_label=pred, is_issue=[True] * 4 + [False] * 2, detail='', pred=pred, prob=0.9)).to_parquet(run/'issues.parquet')
    return store, run


def reviewed(task, choice, at='2026-01-01T00:00:00Z', ann_id=1):
    return dict(task, annotations=[dict(id=ann_id, was_cancelled=False, updated_at=at, created_at=at,
                                        result=[dict(type='choices', from_name='label', to_name='image', value=dict(choices=[choice]))])])


def test_label_studio_export_then_import_from_the_shell(store_and_run, tmp_path):
    import json
    store, run = store_and_run
    r = fv('label-studio', 'export', store.path, run, tmp_path/'ls')
    assert r.returncode == 0 and '4 tasks (most_wrong, flagged) of run r1' in r.stdout, r.stdout + r.stderr
    tasks = json.loads((tmp_path/'ls'/'tasks.json').read_text())
    assert len(tasks) == 4 and (tmp_path/'ls'/'config.xml').is_file()
    assert {t['predictions'][0]['model_version'] for t in tasks} == {'r1'}
    assert all(t['data']['image'].startswith('/data/local-files/?d=images/') for t in tasks)
    a, b, c, d = tasks
    pred_a = a['predictions'][0]['result'][0]['value']['choices'][0]
    export = [reviewed(a, pred_a, at='2026-01-02T00:00:00Z', ann_id=2), reviewed(a, '(quarantine)', ann_id=1),  # a twice: newest wins
              reviewed(b, '(quarantine)'), reviewed(c, c['data']['given_label']), reviewed(d, '../../etc'),
              reviewed(dict(data=dict(item_id='0' * 16, image='x.jpg')), pred_a)]
    (tmp_path/'export.json').write_text(json.dumps(export))
    n = len(store.events())
    r = fv('label-studio', 'import', store.path, tmp_path/'export.json', '--run-id', 'r1')
    assert r.returncode == 0, r.stderr
    assert '1 relabeled, 1 quarantined, 1 unchanged' in r.stdout and '1 unknown items' in r.stdout and '1 invalid labels' in r.stdout
    assert 'conflicts: 1 items' in r.stdout, r.stdout
    ev = store.events().iloc[n:]
    assert ev[['item_id', 'action']].values.tolist() == [[a['data']['item_id'], 'relabel'], [b['data']['item_id'], 'quarantine']]
    assert ev.batch.nunique() == 1 and set(ev.run_id) == {'r1'} and f"--batch {ev.batch.iloc[0]}" in r.stdout
    assert fv('undo', store.path, '--batch', ev.batch.iloc[0]).returncode == 0  # the printed undo reverses the whole import
    assert store.items().set_index('id').at[a['data']['item_id'], 'label'] == a['data']['given_label']


def test_label_studio_errors_are_one_line_and_change_nothing(store_and_run, tmp_path):
    import json
    store, run = store_and_run
    before = (len(store.events()), store.version())
    (tmp_path/'export.csv').write_text('image,item_id,label,annotation_id\n/data/local-files/?d=images/x.jpg,abc,pizza,1\n')
    assert_one_line_error(fv('label-studio', 'import', store.path, tmp_path/'export.csv'), 'looks like the CSV export')
    (tmp_path/'min.json').write_text(json.dumps([dict(image='x.jpg', item_id='abc', label='pizza', annotator=1, annotation_id=1)]))
    assert_one_line_error(fv('label-studio', 'import', store.path, tmp_path/'min.json'), 'JSON-MIN')
    (tmp_path/'cut.json').write_text('[{"id": 1, "data": {"item_id": "')
    assert_one_line_error(fv('label-studio', 'import', store.path, tmp_path/'cut.json'), "is not Label Studio's JSON export")
    assert_one_line_error(fv('label-studio', 'import', store.path, tmp_path/'missing.json'), 'cannot read')
    assert_one_line_error(fv('label-studio', 'export', store.path, tmp_path/'norun', tmp_path/'o1'), 'not a run folder')
    assert_one_line_error(fv('label-studio', 'export', store.path, run, tmp_path/'o2', '--ranking', 'nope'), "no ranking 'nope'")
    assert (len(store.events()), store.version()) == before
    assert not (tmp_path/'o1').exists() and not (tmp_path/'o2').exists()
    r = fv('label-studio')
    assert r.returncode == 2 and 'ACTION' in r.stderr


# --- check ---------------------------------------------------------------------------------------------------------------

def test_check_reports_and_repair_moves_only_orphans(folder, tmp_path):
    from foodvision.store import Store
    store = Store.create(tmp_path/'s'); store.import_path(folder)
    r = fv('check', store.path)
    assert r.returncode == 0 and 'consistent' in r.stdout, r.stdout + r.stderr
    stray = store.images/'stray.jpg'; stray.write_bytes(b'not ours')
    os.utime(stray, (1e9, 1e9))  # old: no import can still be writing it
    r = fv('check', store.path)
    assert r.returncode == 1 and 'stray.jpg' in r.stdout and stray.exists()
    r = fv('check', store.path, '--repair')
    assert r.returncode == 0 and not stray.exists() and len(list((store.path/'orphans').rglob('stray.jpg'))) == 1
    victim = store.items().iloc[0]
    Path(victim.path).unlink()
    r = fv('check', store.path, '--repair')  # a missing file is not something repair can fix
    assert r.returncode == 1 and victim.id in r.stdout
    assert_one_line_error(fv('check', tmp_path/'nope'), 'not a foodvision store')
