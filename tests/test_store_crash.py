"""Crash safety: a store killed with SIGKILL in the middle of a large import, a large relabel batch or its undo
keeps either the whole batch or none of it, stays a valid SQLite database, and loses no image file."""
import io, os, signal, sqlite3, subprocess, sys, textwrap, time
from pathlib import Path

import pytest
from PIL import Image

from foodvision.store import Store

N = 1500

CHILD = textwrap.dedent('''
    import sys, time
    from pathlib import Path
    from foodvision.store import Store

    store_path, src, mode, marker = sys.argv[1:5]
    marker = Path(marker)
    orig_connect, orig_tx = Store._connect, Store._tx.__wrapped__

    def slow_connect(self):
        # stretch every statement so the parent can kill us while a transaction is open
        db = orig_connect(self)
        db.set_progress_handler(lambda: time.sleep(0.0002) or 0, 500)
        return db

    def marked_tx(self):
        gen = orig_tx(self)
        db = next(gen)
        marker.write_text('in transaction')
        yield db
        yield from gen

    import contextlib
    Store._connect = slow_connect
    Store._tx = contextlib.contextmanager(marked_tx)
    store = Store(store_path)
    if mode == 'import': store.import_path(src)
    elif mode == 'undo': store.undo_batch(store.last_batch())
    else:
        ids = store.items().id.tolist()
        store.relabel({i: 'relabeled' for i in ids}, reason='crash test')
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


def assert_consistent(store: Store, allowed_counts):
    db = sqlite3.connect(store.db_path)
    try:
        assert db.execute('PRAGMA integrity_check').fetchone()[0] == 'ok'
        n_items = db.execute('SELECT COUNT(*) FROM items').fetchone()[0]
        n_adds = db.execute("SELECT COUNT(*) FROM label_events WHERE action = 'add'").fetchone()[0]
        files = [f for (f,) in db.execute('SELECT file FROM items')]
    finally: db.close()
    assert n_items in allowed_counts, f"partial batch: {n_items} items"
    assert n_adds == n_items, "every item has its add event, and no event without its item"
    missing = [f for f in files if not (store.path/f).is_file()]
    assert not missing, f"{len(missing)} image files missing"
    return n_items


def run_child(store, src, mode, tmp_path):
    marker = tmp_path/f"marker-{mode}-{time.monotonic_ns()}"
    script = tmp_path/'child.py'; script.write_text(CHILD)
    proc = subprocess.Popen([sys.executable, str(script), str(store.path), str(src), mode, str(marker)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    return proc, marker


def kill_when(proc, ready, timeout=120):
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, f"child ended early: {proc.stderr.read().decode()[-2000:]}"
        assert time.monotonic() < deadline, "child never reached the kill point"
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    assert proc.returncode == -signal.SIGKILL


@pytest.fixture(scope='module')
def folder(tmp_path_factory):
    return make_folder(tmp_path_factory.mktemp('imgs'), N)


def test_kill_during_file_copy_keeps_nothing(folder, tmp_path):
    store = Store.create(tmp_path/'s')
    proc, _ = run_child(store, folder, 'import', tmp_path)
    kill_when(proc, lambda: len(list(store.images.iterdir())) > N // 3)
    test_count = assert_consistent(store, {0})
    assert test_count == 0
    assert len(Store(store.path).import_path(folder).added) == N, "a later import completes normally"
    assert_consistent(store, {N})


def test_kill_inside_import_transaction_keeps_all_or_nothing(folder, tmp_path):
    store = Store.create(tmp_path/'s')
    proc, marker = run_child(store, folder, 'import', tmp_path)
    kill_when(proc, lambda: marker.exists() and (time.sleep(0.05) or True))
    assert_consistent(store, {0, N})
    assert sum(1 for p in store.images.iterdir() if not p.name.startswith('.')) == N, "every image file was written before the commit"


def test_kill_inside_relabel_batch_keeps_all_or_nothing(folder, tmp_path):
    store = Store.create(tmp_path/'s')
    store.import_path(folder)
    before = store.items()
    proc, marker = run_child(store, folder, 'relabel', tmp_path)
    kill_when(proc, lambda: marker.exists() and (time.sleep(0.03) or True))
    assert_consistent(store, {N})
    after = Store(store.path).items()
    relabeled = (after.label == 'relabeled').sum()
    assert relabeled in (0, N), f"partial relabel batch: {relabeled} of {N}"
    assert len(Store(store.path).events().query("action == 'relabel'")) == relabeled
    if relabeled == 0: assert after.label.tolist() == before.label.tolist()


def test_kill_inside_undo_of_a_large_batch_keeps_all_or_nothing(folder, tmp_path):
    store = Store.create(tmp_path/'s')
    store.import_path(folder)
    before = store.items()
    store.relabel({i: 'relabeled' for i in before.id}, reason='to undo')
    proc, marker = run_child(store, folder, 'undo', tmp_path)
    kill_when(proc, lambda: marker.exists() and (time.sleep(0.03) or True))
    assert_consistent(store, {N})
    after = Store(store.path).items()
    restored = (after.label != 'relabeled').sum()
    assert restored in (0, N), f"partial undo: {restored} of {N}"
    undos = Store(store.path).events().undoes.notna().sum()
    assert undos == restored
    if restored: assert after.label.tolist() == before.label.tolist()
    else: assert Store(store.path).undo_batch(Store(store.path).last_batch())  # the batch can still be undone, whole
