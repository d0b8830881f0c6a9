"""What the store guarantees against careless and hostile use, as a user meets it through the `foodvision` command: rows it
did not write are refused, two writers at once lose nothing, a read-only store can be read, images reach the model as they
look, undo steps back as far as wanted, and nothing a spreadsheet would run as a formula is exported."""
import io, json, os, shutil, sqlite3, stat, subprocess, sys, tempfile, textwrap, time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from foodvision.store import PAUSE_ENV, Store

FV = str(Path(sys.executable).with_name('foodvision'))


def fv(*args, env=None, timeout=300, user=None):
    cmd = [FV, *map(str, args)]
    return subprocess.run((user or []) + cmd, capture_output=True, text=True, timeout=timeout, env=env)


def assert_one_line_error(r, contains):
    assert r.returncode != 0, r.stdout
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and 'Traceback' not in r.stderr, r.stderr
    assert contains in lines[0], lines[0]


def photos(root: Path, names_colours, label='pizza') -> Path:
    d = root/label; d.mkdir(parents=True, exist_ok=True)
    for name, colour in names_colours: Image.new('RGB', (24, 20), colour).save(d/f'{name}.jpg', quality=95)
    return root


def make_store(tmp_path, n=6) -> Store:
    src = photos(tmp_path/'src', [(f'p{i}', (40 * i, 200 - 20 * i, 90)) for i in range(n)])
    assert fv('import', src, tmp_path/'store').returncode == 0
    return Store(tmp_path/'store')


def tamper(store: Store, item_id: str, file: str):
    "What a hand edit of the database does: no foodvision code involved."
    db = sqlite3.connect(store.db_path)
    try: db.execute('UPDATE items SET file = ? WHERE id = ?', (file, item_id)); db.commit()
    finally: db.close()


# --- 2. the store trusts the `file` column of its own database -------------------------------------------------------

def test_purge_never_deletes_a_file_a_tampered_row_names(tmp_path):
    store = make_store(tmp_path)
    victim = tmp_path/'victim.txt'; victim.write_text('not yours')
    a = store.items().id[0]
    store.quarantine([a])
    tamper(store, a, '../victim.txt')
    assert_one_line_error(fv('purge', store.path, '--yes'), f"item '{a}' names the file '../victim.txt'")
    assert victim.read_text() == 'not yours'
    assert len(store.item_states()) == 6  # nothing purged


def test_export_never_copies_a_file_a_tampered_row_names(tmp_path):
    store = make_store(tmp_path)
    secret = tmp_path/'secret.jpg'; Image.new('RGB', (8, 8), 'black').save(secret)
    b = store.items().id[1]
    v_before = store.version()
    tamper(store, b, '../secret.jpg')
    assert store.version() != v_before  # the version covers `file`: tampering shows
    assert_one_line_error(fv('export', store.path, tmp_path/'out'), f"item '{b}'")
    assert not any(p.is_file() for p in (tmp_path/'out').rglob('*'))
    assert_one_line_error(fv('export', store.path, tmp_path/'labels.csv'), f"item '{b}'")
    assert not (tmp_path/'labels.csv').exists()
    tamper(store, b, str(secret))  # an absolute path is refused the same way
    assert_one_line_error(fv('export', store.path, tmp_path/'out2'), 'changed outside foodvision')


# --- 3. two writers at once lose an import ---------------------------------------------------------------------------

def test_two_imports_at_once_lose_nothing(tmp_path):
    colours = [(f'p{i}', (30 * i, 10 * i, 255 - 20 * i)) for i in range(8)]
    first = photos(tmp_path/'first', colours[:6])   # p0..p5
    second = photos(tmp_path/'second', colours[2:])  # p2..p7: four images in common
    store = Store.create(tmp_path/'store')
    gate = tmp_path/'gate'; gate.mkdir()
    point = 'add_images:before-transaction'  # files written, decisions not yet taken: the old race window
    a = subprocess.Popen([FV, 'import', str(first), str(store.path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env={**os.environ, PAUSE_ENV: f'{point}:{gate}'})
    deadline = time.monotonic() + 120
    while not (gate/f'{point}.reached').exists():
        assert a.poll() is None, a.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.01)
    b = fv('import', second, store.path)  # the second writer commits while the first holds its files
    assert b.returncode == 0 and 'import: 6 added' in b.stdout, b.stdout + b.stderr
    (gate/f'{point}.go').touch()
    out, err = a.communicate(timeout=120)
    assert a.returncode == 0, err
    assert 'import: 2 added, 4 already present' in out, out  # the overlap is reported as duplicates, not a crash
    assert len(store.items()) == 8
    report = store.check()
    assert report.ok, report  # no orphaned files, no missing ones


# --- 4. reads must work on a read-only disk --------------------------------------------------------------------------

def unprivileged():
    "A prefix that runs a command as an ordinary user (root ignores file modes), or [] when we are not root."
    if os.geteuid() != 0: return []
    if not shutil.which('setpriv'): pytest.skip('running as root without setpriv: cannot make a read-only store')
    user = ['setpriv', '--reuid=65534', '--regid=65534', '--clear-groups']
    if subprocess.run(user + [sys.executable, '-c', 'import foodvision.store'], capture_output=True).returncode:
        pytest.skip('the unprivileged user cannot run this interpreter (the virtualenv lies in a private folder)')
    return user


def test_a_read_only_store_can_be_listed_exported_diffed_and_trained_on(tmp_path):
    user = unprivileged()
    root = Path(tempfile.mkdtemp(prefix='fv-ro-')); os.chmod(root, 0o755)
    try:
        from foodvision.synth import synth_store
        store = Store.create(root/'store')
        synth_store(store, n=60, size=32, seed=1, workers=1)
        v1 = store.version()
        store.relabel({store.items().id[0]: 'sushi'})
        version, n_items = store.version(), len(store.items())  # read before: as root, a read here proves nothing
        for p in [store.path, *store.path.rglob('*')]: os.chmod(p, 0o555 if p.is_dir() else 0o444)
        before = {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in store.path.rglob('*')}
        out = root/'out'; out.mkdir(); os.chmod(out, 0o777)
        env = {**os.environ, 'HOME': str(out), 'MPLCONFIGDIR': str(out/'mpl'), 'WANDB_MODE': 'disabled'}
        for args in [('status', store.path, '--runs', out/'runs'), ('export', store.path, out/'folder'),
                     ('export', store.path, out/'labels.csv'), ('diff', store.path, v1),
                     ('train', store.path, '--arch', 'resnet18', '--no-pretrained', '--size', '32', '--bs', '16', '--epochs', '1',
                      '--num-workers', '0', '--runs', out/'runs', '--run-id', 'ro')]:
            r = fv(*args, env=env, user=user)
            assert r.returncode == 0, (args[0], r.stdout[-2000:], r.stderr[-2000:])
        assert json.loads((out/'runs'/'ro'/'config.json').read_text())['dataset_version'] == version
        assert len(list((out/'folder').rglob('*.png'))) + len(list((out/'folder').rglob('*.jpg'))) == n_items
        after = {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in store.path.rglob('*')}
        assert after == before  # reading wrote nothing: no snapshot, no -wal or -shm file
    finally:
        for p in [root, *root.rglob('*')]:
            if p.is_dir(): os.chmod(p, 0o755)
        shutil.rmtree(root)


# --- 5. images must reach the model as they look ---------------------------------------------------------------------

def test_16_bit_and_exif_rotated_photos_reach_training_evaluation_and_find_as_they_look(tmp_path):
    from foodvision.data import OpenImage
    from foodvision.batches import ImageFiles
    from foodvision.quality import image_stats
    d = tmp_path/'src'/'soup'; d.mkdir(parents=True)
    Image.fromarray(np.full((20, 30), 32768, dtype=np.uint16)).save(d/'grey16.png')  # mid-grey, 16 bits
    side = Image.new('RGB', (40, 20), 'white'); side.paste((255, 0, 0), (0, 0, 20, 20))
    exif = Image.Exif(); exif[0x0112] = 6  # "rotate 90° clockwise to view": how phones store portrait photos
    side.save(d/'phone.jpg', exif=exif, quality=95)
    assert fv('import', tmp_path/'src', tmp_path/'store').returncode == 0
    store = Store(tmp_path/'store')
    paths = {Path(p).suffix: p for p in store.items().path}
    grey, phone = OpenImage()(paths['.png']), OpenImage()(paths['.jpg'])  # what training decodes
    assert abs(np.asarray(grey).mean() - 127.5) < 2  # not clipped to white
    assert phone.size == (20, 40)  # portrait, as the person took it
    r, g, b = phone.getpixel((10, 5)); assert r > 200 and g < 80  # the stored left half is on top
    seen = ImageFiles([paths['.jpg'], paths['.png']], preprocess=lambda ims: [np.asarray(ims[0].convert('RGB'))])
    assert seen[0].shape == (40, 20, 3) and abs(seen[1].mean() - 127.5) < 2  # evaluation sees the same
    assert (image_stats(paths['.jpg'])['width'], image_stats(paths['.png'])['brightness'] // 1) == (20, 127)  # and find


def test_import_refuses_an_oversized_file_without_reading_it_and_names_every_file(tmp_path):
    d = tmp_path/'src'/'pizza'; d.mkdir(parents=True)
    Image.new('RGB', (16, 16), 'red').save(d/'good.jpg')
    with open(d/'huge.jpg', 'wb') as f: f.truncate(2**30)  # 1 GiB, sparse: costs no disk
    (d/'bad.jpg').write_bytes(b'<html>not an image</html>')
    probe = textwrap.dedent(f'''
        from foodvision.store import Store
        rep = Store.create({str(tmp_path/'store')!r}).import_path({str(tmp_path/'src')!r})
        hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM:')][0].split()[1]  # this process's peak (ru_maxrss survives exec)
        print(len(rep.added), int(hwm) // 1024)
        for where, why in rep.rejected: print(why)
    ''')
    r = subprocess.run([sys.executable, '-c', probe], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    head, *why = r.stdout.strip().splitlines()
    added, peak_mb = map(int, head.split())
    assert added == 1
    assert peak_mb < 700, f"peak memory {peak_mb} MB: the 1 GiB file was read"
    assert any('huge.jpg' in w and 'the limit is' in w for w in why), why
    assert any('bad.jpg: not a decodable image' in w for w in why), why


# --- 6 and 7. undo as far as wanted; quarantine is not removal; no formulas ------------------------------------------

def test_undo_steps_back_one_batch_at_a_time(tmp_path):
    store = make_store(tmp_path)
    ids = store.items().id.tolist()
    labels = store.items().label.tolist()
    store.relabel({ids[0]: 'sushi'}, reason='first')
    store.quarantine([ids[1]], reason='second')
    store.relabel({ids[2]: 'salad'}, reason='third')
    for _ in range(3): assert fv('undo', store.path).returncode == 0
    assert store.items().label.tolist() == labels and len(store.items()) == 6  # all three batches undone, newest first
    assert_one_line_error(fv('undo', store.path), 'nothing to undo')  # the import itself is not undone by default


def test_diff_calls_a_quarantine_a_quarantine(tmp_path):
    store = make_store(tmp_path)
    v1 = store.version()
    store.quarantine([store.items().id[0]])
    r = fv('diff', store.path, v1)
    assert r.returncode == 0 and '1 quarantined, 0 purged' in r.stdout and '-1 removed' not in r.stdout, r.stdout


def test_labels_a_spreadsheet_would_run_are_refused_and_never_exported(tmp_path):
    src = tmp_path/'in.csv'
    img = tmp_path/'a.jpg'; Image.new('RGB', (8, 8), 'red').save(img)
    src.write_text(f"path,label\n{img},=SUM(A1:A9)\n")
    r = fv('import', src, tmp_path/'store')
    assert r.returncode == 0 and 'import: 0 added' in r.stdout and 'spreadsheet' in r.stdout, r.stdout
    store = make_store(tmp_path)
    db = sqlite3.connect(store.db_path)  # a label written before this rule, or by hand
    try: db.execute("UPDATE items SET label = '@SUM(1+1)' WHERE id = ?", (store.items().id[0],)); db.commit()
    finally: db.close()
    assert_one_line_error(fv('export', store.path, tmp_path/'out.csv'), 'formula')
    assert not (tmp_path/'out.csv').exists()
