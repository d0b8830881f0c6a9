"""Crash safety: a store killed with SIGKILL at a named point inside a large import, a large relabel batch or its undo keeps
none of that batch, stays a valid SQLite database, loses no image file, and `foodvision check` finds and moves aside the
files the killed import left behind. The kill lands where the test says (a `pause_point`), never after a guessed sleep."""
import os, signal, sqlite3, subprocess, sys, textwrap, time
from pathlib import Path

import pytest
from PIL import Image

from foodvision.store import PAUSE_ENV, Store

N = 1500
FV = str(Path(sys.executable).with_name('foodvision'))

CHILD = textwrap.dedent('''
    import sys
    from foodvision.store import Store
    store_path, src, mode = sys.argv[1:4]
    store = Store(store_path)
    if mode == 'import': store.import_path(src)
    elif mode == 'undo': store.undo_batch(store.last_batch())
    else: store.relabel({i: 'relabeled' for i in store.items().id}, reason='crash test')
    print('finished', flush=True)
''')


def make_folder(root: Path, n: int) -> Path:
    for i in range(n):
        d = root/f"class_{i % 3}"; d.mkdir(parents=True, exist_ok=True)
        im = Image.new('RGB', (16, 16), ((i * 7) % 256, (i * 13) % 256, (i * 29) % 256))
        im.putpixel((i % 16, (i // 16) % 16), (i % 251, 0, 0))
        im.putpixel(((i // 256) % 16, 15), (0, (i // 7) % 256, 255))
        im.save(d/f"{i}.png")
    return root


def assert_consistent(store: Store, n_expected: int):
    db = sqlite3.connect(store.db_path)
    try:
        assert db.execute('PRAGMA integrity_check').fetchone()[0] == 'ok'
        n_items = db.execute('SELECT COUNT(*) FROM items').fetchone()[0]
        n_adds = db.execute("SELECT COUNT(*) FROM label_events WHERE action = 'add'").fetchone()[0]
        files = [f for (f,) in db.execute('SELECT file FROM items')]
    finally: db.close()
    assert n_items == n_expected, f"{n_items} items, expected {n_expected}"
    assert n_adds == n_items, "every item has its add event, and no event without its item"
    missing = [f for f in files if not (store.path/f).is_file()]
    assert not missing, f"{len(missing)} image files missing"


def kill_at(store, src, mode, point, tmp_path):
    "Run `mode` in a child process, hold it at `point`, SIGKILL it there."
    gate = tmp_path/f'gate-{mode}'; gate.mkdir()
    script = tmp_path/'child.py'; script.write_text(CHILD)
    proc = subprocess.Popen([sys.executable, str(script), str(store.path), str(src), mode],
                            env={**os.environ, PAUSE_ENV: f'{point}:{gate}'}, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while not (gate/f'{point}.reached').exists():
        assert proc.poll() is None, f"child ended before {point}: {proc.stderr.read().decode()[-2000:]}"
        assert time.monotonic() < deadline, f"child never reached {point}"
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    assert proc.returncode == -signal.SIGKILL


def fv(*args):
    return subprocess.run([FV, *map(str, args)], capture_output=True, text=True, timeout=300)


@pytest.fixture(scope='module')
def folder(tmp_path_factory):
    return make_folder(tmp_path_factory.mktemp('imgs'), N)


def test_kill_after_file_copy_keeps_nothing_and_check_repairs_the_orphans(folder, tmp_path):
    store = Store.create(tmp_path/'s')
    kill_at(store, folder, 'import', 'add_images:before-transaction', tmp_path)
    assert_consistent(store, 0)
    orphans = sorted(p.name for p in store.images.iterdir())
    assert len(orphans) == N  # every file was written, no row names them
    r = fv('check', store.path)
    assert r.returncode == 1 and f'{N} orphan' in r.stdout, r.stdout + r.stderr
    old = time.time() - 7200
    for p in store.images.iterdir(): os.utime(p, (old, old))  # the import is long dead
    r = fv('check', store.path, '--repair')
    assert r.returncode == 0, r.stdout + r.stderr
    moved = sorted(p.name for p in (store.path/'orphans').rglob('*') if p.is_file())
    assert moved == orphans and not list(store.images.iterdir())  # moved aside, nothing deleted
    assert fv('check', store.path).returncode == 0
    assert len(Store(store.path).import_path(folder).added) == N, "a later import completes normally"
    assert_consistent(store, N)


def test_kill_inside_import_transaction_keeps_nothing(folder, tmp_path):
    store = Store.create(tmp_path/'s')
    kill_at(store, folder, 'import', 'store:before-commit', tmp_path)
    assert_consistent(store, 0)
    assert sum(1 for p in store.images.iterdir() if not p.name.startswith('.')) == N, "every image file was written before the commit"
    assert len(Store(store.path).import_path(folder).added) == N
    report = Store(store.path).check(hashes=False)
    assert report.ok, report


def test_kill_inside_relabel_batch_keeps_nothing(folder, tmp_path):
    store = Store.create(tmp_path/'s')
    store.import_path(folder)
    before, version = store.items(), store.version()
    kill_at(store, folder, 'relabel', 'store:before-commit', tmp_path)
    assert_consistent(store, N)
    after = Store(store.path).items()
    assert after.label.tolist() == before.label.tolist()
    assert len(Store(store.path).events().query("action == 'relabel'")) == 0
    assert Store(store.path).version() == version


def test_kill_inside_undo_of_a_large_batch_keeps_nothing(folder, tmp_path):
    store = Store.create(tmp_path/'s')
    store.import_path(folder)
    before = store.items()
    store.relabel({i: 'relabeled' for i in before.id}, reason='to undo')
    kill_at(store, folder, 'undo', 'store:before-commit', tmp_path)
    assert_consistent(store, N)
    assert (Store(store.path).items().label == 'relabeled').all()
    assert Store(store.path).events().undoes.notna().sum() == 0
    assert Store(store.path).undo_batch(Store(store.path).last_batch())  # the batch can still be undone, whole
    assert Store(store.path).items().label.tolist() == before.label.tolist()
