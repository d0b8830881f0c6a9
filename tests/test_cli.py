"""The foodvision command as a user runs it: real subprocesses, one-line errors, non-zero exits."""
import io, os, shutil, subprocess, sys
from pathlib import Path

import pytest
from PIL import Image

from foodvision.run import Run

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
    run = Run(tmp_path/'runs'/'r1'); run.path.mkdir(parents=True)
    run.config_file.write_text(json.dumps(dict(run_id='r1', store=str(store.path))))
    pd.DataFrame(dict(ranking='most_wrong', item_id=items.id, rank=range(1, len(items) + 1), score=0.9, label_quality=0.1,
                      suggested_label=pred, is_issue=[True] * 4 + [False] * 2, detail='', pred=pred, prob=0.9)).to_parquet(run.issues_file())
    return store, run.path


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


# --- flags derived from the config dataclasses -----------------------------------------------------------------------------

@pytest.mark.parametrize('argv, config', [(['train', 'STORE'], 'foodvision.train:TrainConfig'), (['demo'], 'foodvision.demo:DemoConfig'),
                                          (['apply', 'STORE', 'RUN'], 'foodvision.review:AcceptPolicy')])
def test_config_flags_default_to_the_dataclass(argv, config):
    "Every field of the config is a flag whose default and help are the dataclass's: re-typing one in the CLI fails here."
    import dataclasses, importlib
    from fastcore.docments import docments
    from foodvision.cli import build_parser
    module, name = config.split(':')
    cls = getattr(importlib.import_module(module), name)
    parser = build_parser({argv[0]})
    args = parser.parse_args(argv)
    sub = next(a for a in parser._subparsers._group_actions[0].choices.items() if a[0] == argv[0])[1]
    helps = {a.dest: a.help for a in sub._actions}
    docs = docments(cls)
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        assert getattr(args, f.name) == default, f"--{f.name} defaults to {getattr(args, f.name)!r}, {name} to {default!r}"
        assert helps[f.name].startswith(docs[f.name].replace('%', '%%')), f"--{f.name}'s help is not {name}'s comment"


def test_help_and_status_do_not_load_torch():
    code = ("import sys; from foodvision.cli import build_parser; build_parser({'--help', 'status'}); "
            "assert 'torch' not in sys.modules and 'fastai' not in sys.modules")
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr


def test_apply_is_a_dry_run_until_yes_then_one_undoable_batch(store_and_run):
    store, run = store_and_run
    before = (len(store.events()), store.version())
    r = fv('apply', store.path, run, '--ranking', 'most_wrong')
    assert r.returncode == 0 and 'would accept 4 relabel(s)' in r.stdout and 'dry run' in r.stdout, r.stdout + r.stderr
    assert (len(store.events()), store.version()) == before
    r = fv('apply', store.path, run, '--ranking', 'most_wrong', '--relabel-at', '0.95', '--quarantine-at', 'none')
    assert 'would accept 0 relabel(s) and 0 quarantine(s)' in r.stdout or 'nothing to accept' in r.stdout, r.stdout
    r = fv('apply', store.path, run, '--ranking', 'most_wrong', '--yes')
    assert r.returncode == 0 and 'accepted 4 relabel(s)' in r.stdout, r.stdout + r.stderr
    ev = store.events().iloc[before[0]:]
    assert len(ev) == 4 and ev.batch.nunique() == 1 and set(ev.actor) == {'auto'} and set(ev.run_id) == {'r1'}
    assert f"--batch {ev.batch.iloc[0]}" in r.stdout
    assert fv('undo', store.path, '--batch', ev.batch.iloc[0]).returncode == 0
    assert store.version() == before[1]
    assert_one_line_error(fv('apply', store.path, run, '--min-precision', '0.9', '--yes'), 'review a sample')
    r = fv('apply', store.path, run, '--relabel-at', 'lots')  # argparse's usage error: exit code 2
    assert r.returncode == 2 and "argument --relabel-at: invalid float value: 'lots'" in r.stderr


# --- flags derived from the functions the commands call ------------------------------------------------------------------

SIGNATURE_COMMANDS = [(['import', 'DIR', 'STORE'], 'foodvision.store:Store.import_path'),
                      (['gather', 'STORE', '--classes', 'FILE'], 'foodvision.gather:gather'),
                      (['find-issues', 'DIR'], 'foodvision.find:find_issues_in_folder'),
                      (['prelabel', 'STORE', 'RUN'], 'foodvision.inbox:prelabel_command'),
                      (['next', 'STORE', 'RUN'], 'foodvision.inbox:next_command'),
                      (['autolabel', 'STORE', 'RUN'], 'foodvision.inbox:autolabel_command'),
                      (['similar', 'STORE', 'ITEM'], 'foodvision.inbox:similar_command'),
                      (['app', 'BUNDLE'], 'foodvision.app:app_command')]


def _function(spec):
    import importlib
    module, name = spec.split(':')
    obj = importlib.import_module(module)
    for part in name.split('.'): obj = getattr(obj, part)
    return obj


@pytest.mark.parametrize('argv, spec', SIGNATURE_COMMANDS, ids=[a[0] for a, _ in SIGNATURE_COMMANDS])
def test_signature_flags_default_to_the_function(argv, spec):
    "A flag named after a parameter of the function the command calls has that parameter's default: re-typing one fails here."
    import inspect
    from foodvision.cli import build_parser, flag_values
    fn = _function(spec)
    parser = build_parser({argv[0]})
    args = parser.parse_args(argv)
    params = inspect.signature(fn).parameters
    values = flag_values(fn, args)
    assert values, f"{argv[0]} has no flag from {spec}"
    for name, value in values.items():
        assert value == params[name].default, f"{argv[0]} --{name.replace('_', '-')} defaults to {value!r}, {spec} to {params[name].default!r}"
    if spec.startswith('foodvision.inbox:'):  # the inbox commands wire every option their function has
        missing = [n for n, p in params.items() if p.default is not p.empty and n != 'out' and n not in values]
        assert not missing, f"{argv[0]} has no flag for {spec}'s {missing}"


# --- the inbox -----------------------------------------------------------------------------------------------------------

INBOX_CLASSES = ['pizza', 'salad', 'sushi']


@pytest.fixture
def new_photos(tmp_path):
    "Six unlabelled photos: four loose, two in a subfolder whose name is a hint."
    d = tmp_path/'new'; (d/'pizza').mkdir(parents=True)
    for k in range(6): Image.new('RGB', (24, 24), (40 * k, 250 - 40 * k, 90)).save((d/'pizza' if k < 2 else d)/f'{k}.png')
    return d


@pytest.fixture
def inbox_run(folder, new_photos, tmp_path):
    "A store of the six labelled photos and six inbox photos; a run folder whose pre-labels (by hand, no model) are all at 99%."
    import json
    import numpy as np
    from foodvision.inbox import prelabel_table
    from foodvision.store import Store
    store = Store.create(tmp_path/'s'); store.import_path(folder); store.import_path(new_photos, inbox=True)
    waiting = store.inbox()
    run = Run(tmp_path/'runs'/'r1'); run.path.mkdir(parents=True)
    run.config_file.write_text(json.dumps(dict(run_id='r1', store=str(store.path))))
    probs = np.full((len(waiting), 3), 0.005); probs[np.arange(len(waiting)), np.arange(len(waiting)) % 3] = 0.99
    run.prelabels_file().write_bytes(prelabel_table(waiting.id, probs, INBOX_CLASSES, hints=waiting).to_parquet(index=False))
    return store, run


def test_import_into_the_inbox(new_photos, folder, tmp_path):
    from foodvision.store import Store
    fv('import', folder, tmp_path/'s')
    r = fv('import', new_photos, tmp_path/'s', '--inbox')
    assert r.returncode == 0 and '6 added to the inbox, 0 already in the store' in r.stdout, r.stdout + r.stderr
    store = Store(tmp_path/'s')
    assert len(store.inbox()) == 6 and len(store.items()) == 6
    assert sorted(store.inbox().hint.dropna()) == ['pizza', 'pizza']  # the subfolder's name
    r = fv('import', new_photos, tmp_path/'s', '--inbox')
    assert r.returncode == 0 and '0 added to the inbox, 6 already in the store' in r.stdout, r.stdout


def test_next_then_autolabel_in_two_steps(inbox_run, tmp_path):
    import pandas as pd
    from foodvision.issues import load_issues
    store, run = inbox_run
    r = fv('next', store.path, run.path, '--budget', '3', '--strategy', 'margin', '--label-studio', tmp_path/'ls')
    assert r.returncode == 0 and 'next: 3 photos to label first (margin)' in r.stdout, r.stdout + r.stderr
    assert len(load_issues(run, ranking='inbox')) == 3 and (tmp_path/'ls'/'tasks.json').is_file()
    r = fv('autolabel', store.path, run.path, '--review', '2', '--sample-file', tmp_path/'sheet.csv')
    assert r.returncode == 0 and len(store.inbox()) == 6, r.stdout + r.stderr  # step 1 labels nothing
    sheet = pd.read_csv(tmp_path/'sheet.csv')
    assert len(sheet) == 2 and str(tmp_path/'sheet.csv') in r.stdout
    r = fv('autolabel', store.path, run.path, '--review', '2', '--target', '0.3', '--verdicts', tmp_path/'sheet.csv')
    assert r.returncode == 0 and len(store.inbox()) == 0, r.stdout + r.stderr  # 2 of 2 right: bound 0.34 ≥ 0.3
    ev = store.events()
    assert set(ev[ev.action == 'label'].actor) == {'human', 'auto'} and ev[ev.action == 'label'].batch.nunique() == 2


def state(store): return store.version(), len(store.events())


def test_autolabel_refuses_bad_verdicts_with_one_line_and_changes_nothing(inbox_run, tmp_path):
    import json
    store, run = inbox_run
    before = state(store)
    sheet = tmp_path/'sheet.csv'
    assert fv('autolabel', store.path, run.path, '--review', '2', '--sample-file', sheet).returncode == 0
    ids = [line.split(',')[0] for line in sheet.read_text().splitlines()[1:]]
    (tmp_path/'piza.json').write_text(json.dumps({i: 'piza' for i in ids}))  # an unknown class
    assert_one_line_error(fv('autolabel', store.path, run.path, '--review', '2', '--verdicts', tmp_path/'piza.json'), "class 'piza'")
    (tmp_path/'half.json').write_text(json.dumps({ids[0]: 'pizza'}))
    assert_one_line_error(fv('autolabel', store.path, run.path, '--review', '2', '--verdicts', tmp_path/'half.json'), '1 missing')
    assert_one_line_error(fv('autolabel', store.path, run.path, '--verdicts', tmp_path/'nope.csv'), 'no such verdicts file')
    assert_one_line_error(fv('autolabel', store.path, run.path, '--threshold', '2'), 'threshold must be')
    assert state(store) == before
    assert fv('autolabel', store.path, run.path, '--review', '2', '--verdicts', sheet).returncode == 0
    after = state(store)
    assert after != before and len(store.inbox()) == 4  # the bound of 2 of 2 is below 0.95: only the sample is labelled
    # labelling twice: the same verdicts again no longer match the photos still waiting
    assert_one_line_error(fv('autolabel', store.path, run.path, '--review', '2', '--verdicts', sheet), 'sampled photos')
    assert state(store) == after


def test_inbox_commands_refuse_bad_input_with_one_line_and_change_nothing(inbox_run, folder, tmp_path):
    import json
    from foodvision.store import Store
    store, run = inbox_run
    before = state(store)
    assert_one_line_error(fv('next', store.path, run.path, '--budget', '0'), 'budget must be')
    assert_one_line_error(fv('next', store.path, run.path, '--strategy', 'class_need'), 'evaluate the run first')
    assert_one_line_error(fv('prelabel', store.path, tmp_path/'new'), 'not a run folder')
    assert_one_line_error(fv('next', store.path, tmp_path/'new'), 'not a run folder')
    assert_one_line_error(fv('similar', store.path, 'nope'), "no item 'nope'")
    r = fv('next', store.path, run.path, '--strategy', 'smart')  # argparse's usage error
    assert r.returncode == 2 and 'invalid choice' in r.stderr
    assert state(store) == before and not run.issues_file().exists()
    # an empty inbox, and a run without pre-labels
    empty = Store.create(tmp_path/'empty'); empty.import_path(folder)
    bare = Run(tmp_path/'runs'/'bare'); bare.path.mkdir(parents=True)
    bare.config_file.write_text(json.dumps(dict(run_id='bare', store=str(empty.path))))
    before = state(empty)
    assert_one_line_error(fv('prelabel', empty.path, bare.path), 'inbox')
    assert_one_line_error(fv('next', empty.path, bare.path), 'no pre-labels')
    assert_one_line_error(fv('autolabel', empty.path, run.path, '--review', '2', '--verdicts', tmp_path/'any.csv'), 'no such verdicts')
    (tmp_path/'any.json').write_text('{}')
    assert_one_line_error(fv('autolabel', empty.path, run.path, '--verdicts', tmp_path/'any.json'), 'is empty')
    assert state(empty) == before and not bare.prelabels_file().exists()


def test_similar_finds_the_look_alikes(inbox_run):
    "The real pretrained embedder on twelve tiny photos: the nearest labelled photos of an inbox photo, then inbox ones."
    store, run = inbox_run
    item = store.inbox().id[0]
    r = fv('similar', store.path, item, '--k', '3')
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert lines[0] == f"similar to {item} (labelled photos):" and len(lines) == 4, r.stdout
    assert all(l.split()[-1] in INBOX_CLASSES for l in lines[1:])
    r = fv('similar', store.path, item, '--k', '2', '--inbox')
    assert r.returncode == 0 and r.stdout.count('(inbox)') == 2 and item not in r.stdout.splitlines()[1], r.stdout


def test_gather_and_app_take_the_inbox_flags():
    "`gather --inbox` and `app --collect STORE` reach the functions' parameters (a search needs the network: parsing only)."
    from foodvision.app import app_command
    from foodvision.cli import build_parser, flag_values
    from foodvision.gather import gather
    args = build_parser({'gather'}).parse_args(['gather', 'STORE', '--classes', 'FILE', '--inbox'])
    assert flag_values(gather, args)['inbox'] is True
    args = build_parser({'app'}).parse_args(['app', 'BUNDLE', '--collect', 'STORE'])
    assert flag_values(app_command, args)['collect'] == 'STORE'
