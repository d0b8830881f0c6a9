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
