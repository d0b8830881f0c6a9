"""The app as its users reach it: a served Gradio app driven over HTTP with gradio_client, and the Space folder started with
`python app.py` from a copy of itself — with fastai and every non-local network connection blocked."""
import os
os.environ['GRADIO_ANALYTICS_ENABLED'] = 'False'  # before gradio / gradio_client are imported: no telemetry, no version check

import importlib.util, json, shutil, socket, sqlite3, struct, subprocess, sys, time, zlib
from pathlib import Path

import httpx
import huggingface_hub
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError

from foodvision.app import COLLECT_CONSENT, NOT_FOOD_TEXT, NOT_SURE_TEXT, launch_app, make_app, verdict
from foodvision.draw import SYNTH_CLASSES, synth_jpeg
from foodvision.feedback import ingest_feedback, read_feedback
from foodvision.run import Run, run_config
from foodvision.space import SpaceError, space_modules, write_space
from foodvision.store import Store
from foodvision.synth import synth_store

MAX_FILE = 200_000  # the in-process server's upload limit, in bytes
LOCAL = ('127.0.0.1', 'localhost', '::1', '0.0.0.0')

# Imported by the Space's Python through PYTHONPATH: no fastai, and a log of every non-local host it tries to reach.
GUARD = '''import os, socket, sys
sys.modules['fastai'] = None  # `import fastai` now raises ImportError
_connect, _getaddrinfo = socket.socket.connect, socket.getaddrinfo
def _note(host):
    with open(os.environ['NET_LOG'], 'a') as f: f.write(f"{host}\\n")
    raise OSError(f"test: network access to {host} blocked")
def connect(self, address):
    if isinstance(address, tuple) and address[0] not in %r: _note(address[0])
    return _connect(self, address)
def getaddrinfo(host, *args, **kwargs):
    if host not in %r and host is not None: _note(host)
    return _getaddrinfo(host, *args, **kwargs)
socket.socket.connect, socket.getaddrinfo = connect, getaddrinfo
''' % (LOCAL, LOCAL)


def local_client(port:int)->Client:
    "A gradio_client for the local app, without the client's own telemetry (the Hub lookups are patched off by `no_network`)."
    return Client(f'http://127.0.0.1:{port}/', verbose=False, analytics_enabled=False)


@pytest.fixture(scope='module')
def no_network():
    "Record and refuse every non-local DNS lookup in this process while the module's servers run."
    looked_up, getaddrinfo = [], socket.getaddrinfo
    def guarded(host, *args, **kwargs):
        if host not in LOCAL and host is not None: looked_up.append(host); raise OSError(f"test: network access to {host} blocked")
        return getaddrinfo(host, *args, **kwargs)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket, 'getaddrinfo', guarded)
        mp.setattr(huggingface_hub.constants, 'HF_HUB_OFFLINE', True)  # gradio_client's user-agent lookup on the Hub; the app makes none
        yield looked_up


def free_port()->int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); return s.getsockname()[1]


def bomb_png(side:int=12_000)->bytes:
    "A valid 1-bit PNG of `side`x`side` black pixels: ~20 KB on disk, `side`² pixels (144 million) when decoded."
    def chunk(kind, data): return struct.pack('>I', len(data)) + kind + data + struct.pack('>I', zlib.crc32(kind + data))
    rows = (b'\x00' + b'\x00' * ((side + 7) // 8)) * side
    return (b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', struct.pack('>IIBBBBB', side, side, 1, 0, 0, 0, 0))
            + chunk(b'IDAT', zlib.compress(rows, 9)) + chunk(b'IEND', b''))


@pytest.fixture(scope='module')
def run(tmp_path_factory):
    "A real one-epoch run on a tiny generated store (fastai is only needed to train it)."
    from foodvision.train import TrainConfig, train_run
    tmp = tmp_path_factory.mktemp('run')
    store = Store.create(tmp/'store')
    synth_store(store, n=45, size=32, seed=0)
    return train_run(store, TrainConfig(arch='resnet18', epochs=1, size=32, bs=16, pretrained=False, num_workers=0),
                     runs_dir=tmp/'runs')


@pytest.fixture(scope='module')
def space(run, tmp_path_factory):
    return write_space(run.path, tmp_path_factory.mktemp('spaces')/'space', n_examples=4)


@pytest.fixture(scope='module')
def served(space, no_network, tmp_path_factory):
    "The app on the Space's bundle (with model.onnx), launched in this process with `launch_app`."
    feedback = tmp_path_factory.mktemp('feedback')
    app = make_app(space/'bundle', feedback_dir=feedback, examples=sorted((space/'examples').iterdir()))
    port = free_port()
    try:
        launch_app(app, port=port, max_file_size=MAX_FILE, block=False, quiet=True)
        yield app, local_client(port), feedback, no_network
    finally: app.close()


def check_prediction(label:dict, summary:str, vocab:list, backend:str='onnx'):
    assert set(label) == {'label', 'confidences'}
    confidences = label['confidences']
    assert len(confidences) == 5 and all(c['label'] in vocab for c in confidences)
    probs = [c['confidence'] for c in confidences]
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1.0001
    assert label['label'] in (*vocab, 'not food', 'not sure') and label['label'] != 'not_food'
    assert summary.endswith(f' ms ({backend})') and '\n' not in summary


def test_predict_an_example_over_http(served, space):
    app, client, _, looked_up = served
    assert {'/predict', '/feedback'} <= set(client.view_api(print_info=False, return_format='dict')['named_endpoints'])
    example = sorted((space/'examples').iterdir())[0]
    label, summary = client.predict(handle_file(example), api_name='/predict')
    check_prediction(label, summary, app.foodvision.predictor.vocab)
    top = label['confidences'][0]
    if top['confidence'] < app.foodvision.threshold: assert label['label'] == 'not sure'
    elif top['label'] == 'not_food': assert label['label'] == 'not food'
    else: assert label['label'] == top['label']
    assert looked_up == []


def one_line_app_error(call)->str:
    with pytest.raises(AppError) as e: call()
    msg = str(e.value)
    assert '\n' not in msg and 'Traceback' not in msg and '/tmp' not in msg, msg
    return msg


def test_undecodable_upload_is_one_line(served, tmp_path):
    _, client, _, _ = served
    notes = tmp_path/'holiday.png'
    notes.write_text('<html>this is not a photo</html>')
    assert 'not a decodable image' in one_line_app_error(lambda: client.predict(handle_file(notes), api_name='/predict'))


def test_decompression_bomb_is_refused(served, tmp_path):
    _, client, _, _ = served
    bomb = tmp_path/'bomb.png'
    bomb.write_bytes(bomb_png())
    assert bomb.stat().st_size < MAX_FILE
    assert 'decompression bomb' in one_line_app_error(lambda: client.predict(handle_file(bomb), api_name='/predict'))


def test_oversized_upload_is_refused(served, tmp_path):
    app, client, _, _ = served
    big = tmp_path/'big.jpg'
    big.write_bytes(synth_jpeg('pizza', seed=1, index=0, size=64) + b'\0' * MAX_FILE)
    with pytest.raises(ValueError, match='exceeds the maximum file size'):  # gradio_client checks before uploading
        client.predict(handle_file(big), api_name='/predict')
    r = httpx.post(f'{app.local_url}gradio_api/upload', files={'files': ('big.jpg', big.read_bytes(), 'image/jpeg')})
    assert r.status_code == 413, (r.status_code, r.text)  # and the server refuses anyone else


def test_feedback_reaches_the_store(served, run, tmp_path):
    app, client, feedback, _ = served
    photo = tmp_path/'dinner.jpg'
    photo.write_bytes(synth_jpeg('ramen', seed=123, index=7, size=48))  # a photo the store has never seen
    thanks = client.predict(handle_file(photo), 'ramen', api_name='/feedback')
    assert thanks.startswith('Thanks') and '**ramen**' in thanks
    assert 'not one of' in one_line_app_error(lambda: client.predict(handle_file(photo), '../ramen', api_name='/feedback'))
    (rec,) = read_feedback(feedback)
    assert rec['label'] == 'ramen' and rec['bundle']['run_id'] == run.id
    assert rec['predicted'] in app.foodvision.predictor.vocab and 0 < rec['prob'] <= 1
    assert (feedback/rec['image']).read_bytes() == photo.read_bytes()

    store = Store(run_config(run)['store'])
    report = ingest_feedback(feedback, store)
    assert len(report.added) == 1 and not report.conflicts and not report.rejected, report
    fid, iid = report.added[0]
    item = store.items().set_index('id').loc[iid]
    assert (item.label, item.source, item.source_url, item.split) == ('ramen', 'app-feedback', f'app-feedback://{fid}', 'train')
    events = store.events()
    event = events[events.item_id == iid].iloc[-1]
    assert (event.action, event.actor, event.new, event.run_id) == ('add', 'app', 'ramen', run.id)
    again = ingest_feedback(feedback, store)
    assert (again.added, again.skipped) == ([], [fid])


def test_feedback_on_a_photo_waiting_in_the_inbox_becomes_a_hint(tmp_path):
    from foodvision.feedback import save_feedback
    store = Store.create(tmp_path/'store')
    synth_store(store, n=18, size=32, seed=5)
    photo = synth_jpeg('sushi', seed=77, index=0, size=40)
    (iid,) = store.add_to_inbox([dict(data=photo, hint='maki', hint_source='search')]).added
    rec = save_feedback(tmp_path/'feedback', photo, 'sushi', dict(label='pizza', prob=0.6), dict(run_id='r1'))
    report = ingest_feedback(tmp_path/'feedback', store)
    assert report.hinted == [(rec['id'], iid)] and not report.conflicts and not report.added, report
    assert store.hints([iid])[['hint', 'source']].values.tolist() == [['maki', 'search'], ['sushi', 'app']]
    assert store.inbox().set_index('id').loc[iid, 'label'] == ''  # still waiting: a hint is not a label
    again = ingest_feedback(tmp_path/'feedback', store)
    assert (again.hinted, again.skipped, len(store.hints())) == ([], [rec['id']], 2)


def wait_for_port(proc, port:int, timeout:float=120)->None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None: raise AssertionError(f"app.py exited with {proc.returncode}:\n{proc.stdout.read()}")
        try:
            with socket.create_connection(('127.0.0.1', port), timeout=1): return
        except OSError: time.sleep(0.5)
    raise AssertionError("app.py did not start serving in time")


def test_space_folder_serves_offline_from_a_copy(space, no_network, tmp_path):
    copy = shutil.copytree(space, tmp_path/'my-space')
    guard = tmp_path/'guard'; guard.mkdir()
    (guard/'sitecustomize.py').write_text(GUARD)
    port, net_log, feedback = free_port(), tmp_path/'network.log', tmp_path/'space-feedback'
    env = {**os.environ, 'PYTHONPATH': str(guard), 'PORT': str(port), 'NET_LOG': str(net_log),
           'FOODVISION_FEEDBACK_DIR': str(feedback), 'GRADIO_ANALYTICS_ENABLED': 'False'}
    env.pop('GRADIO_SERVER_NAME', None)
    which = subprocess.run([sys.executable, '-c', 'import foodvision; print(foodvision.__file__)'], cwd=copy, env=env,
                           capture_output=True, text=True, timeout=60)
    assert Path(which.stdout.strip()).resolve() == (copy/'foodvision'/'__init__.py').resolve(), which.stdout + which.stderr

    proc = subprocess.Popen([sys.executable, 'app.py'], cwd=copy, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for_port(proc, port)
        space_client = local_client(port)
        examples = sorted((copy/'examples').iterdir())
        assert len(examples) == 4
        label, summary = space_client.predict(handle_file(examples[0]), api_name='/predict')
        vocab = json.loads((copy/'bundle'/'config.json').read_text())['vocab']
        check_prediction(label, summary, vocab)
        bad = tmp_path/'bad.jpg'; bad.write_bytes(b'GIF89a, but truncated')
        assert 'image' in one_line_app_error(lambda: space_client.predict(handle_file(bad), api_name='/predict'))
        assert space_client.predict(handle_file(examples[1]), 'not_food', api_name='/feedback').startswith('Thanks')
        assert [r['label'] for r in read_feedback(feedback)] == ['not_food']
        assert not consent_on_page(f'http://127.0.0.1:{port}/')  # a Space does not collect uploads
    finally:
        proc.terminate()
        try: proc.wait(timeout=20)
        except subprocess.TimeoutExpired: proc.kill(); proc.wait()
    log = proc.stdout.read()
    assert 'Traceback' not in log, log  # the refused uploads left no stack trace on the server either
    assert not net_log.exists(), f"the Space tried to reach: {net_log.read_text()}"
    assert no_network == []


# --- collecting uploads (opt-in) -----------------------------------------------------------------------------------------------

def consent_on_page(base:str)->bool:
    "Whether the page the app serves at `base` carries the consent line (it is in the config the browser renders)."
    r = httpx.get(f'{base}config', timeout=30)
    assert r.status_code == 200 and '"components"' in r.text, r.status_code
    return COLLECT_CONSENT in r.text


@pytest.fixture(scope='module')
def tiny_bundle(tmp_path_factory):
    "An untrained `test_resnet` bundle: quick to load, and collecting does not care what the model says."
    from foodvision.bundle import build_model, save_bundle
    return save_bundle(build_model('test_resnet', len(SYNTH_CLASSES)), tmp_path_factory.mktemp('tiny')/'bundle', arch='test_resnet',
                       vocab=SYNTH_CLASSES, size=32, mean=[0.5] * 3, std=[0.25] * 3, resize='squish', extra=dict(run_id='tiny-run'))


@pytest.fixture(scope='module')
def collecting(tiny_bundle, no_network, tmp_path_factory):
    "Two served apps on one bundle, each beside a store of labelled photos: 'on' collects into its store, 'off' does not."
    tmp, apps = tmp_path_factory.mktemp('collect'), {}
    stores = {k: Store.create(tmp/k/'store') for k in ('on', 'off')}
    for store in stores.values(): synth_store(store, n=18, size=32, seed=2)
    try:
        for k in stores:
            apps[k] = make_app(tiny_bundle, feedback_dir=tmp/k/'feedback', collect=stores[k].path if k == 'on' else None)
            port = free_port()
            launch_app(apps[k], port=port, max_file_size=MAX_FILE, block=False, quiet=True)
            apps[k] = (apps[k], local_client(port))
        yield {k: (app, client, stores[k], tmp/k) for k, (app, client) in apps.items()}
    finally:
        for app in apps.values(): (app[0] if isinstance(app, tuple) else app).close()


def store_state(store:Store)->tuple:
    "What a write would change: the version (labels, splits, statuses, the inbox), the image files, the audit log and the hints."
    return store.version(), sorted(p.name for p in store.images.iterdir()), len(store.events()), len(store.hints())


def test_a_collecting_app_keeps_every_upload_in_the_inbox_and_says_so(collecting, tmp_path):
    app, client, store, folder = collecting['on']
    assert consent_on_page(app.local_url)
    labelled = store.items()
    photo = tmp_path/'lunch.jpg'
    photo.write_bytes(synth_jpeg('ramen', seed=321, index=2, size=48))  # a photo the store has never seen
    label, summary = client.predict(handle_file(photo), api_name='/predict')
    check_prediction(label, summary, app.foodvision.predictor.vocab, backend='torch')
    (item,) = store.inbox().itertuples()
    assert (item.label, item.source, item.hint, item.n_hints) == ('', 'app', None, 0)  # the model's guess is not a hint
    assert Path(item.path).read_bytes() == photo.read_bytes() and Path(item.path).parent == store.images
    event = store.events().iloc[-1]
    assert (event.action, event.actor, event.item_id, event.run_id) == ('inbox', 'app', item.id, 'tiny-run')

    thanks = client.predict(handle_file(photo), 'sushi', api_name='/feedback')
    assert thanks.startswith('Thanks') and '**sushi**' in thanks and 'inbox' in thanks
    assert store.inbox()[['id', 'hint', 'hint_source', 'n_hints']].values.tolist() == [[item.id, 'sushi', 'app', 1]]
    assert store.items().equals(labelled)  # the labelled photos are untouched
    assert not (folder/'feedback').exists()  # a collecting app writes nowhere but its store


def test_a_collecting_app_keeps_nothing_it_refuses(collecting, tmp_path):
    app, client, store, _ = collecting['on']
    before = store_state(store)
    notes = tmp_path/'notes.png'
    notes.write_text('<html>this is not a photo</html>')
    assert 'not a decodable image' in one_line_app_error(lambda: client.predict(handle_file(notes), api_name='/predict'))
    bomb = tmp_path/'bomb.png'
    bomb.write_bytes(bomb_png())
    assert 'decompression bomb' in one_line_app_error(lambda: client.predict(handle_file(bomb), 'sushi', api_name='/feedback'))
    secret = tmp_path/'secret.jpg'
    secret.write_bytes(synth_jpeg('pizza', seed=6, index=1, size=48))  # a photo on the server the app was never given
    for api_name, data in [('predict', [{'path': str(secret)}]), ('feedback', [{'path': str(secret)}, 'pizza'])]:
        assert call_raw(app.local_url, api_name, data)[0] != 'complete'
    assert store_state(store) == before


def test_an_app_that_does_not_collect_keeps_nothing_and_says_nothing(collecting, tmp_path):
    app, client, store, folder = collecting['off']
    assert not consent_on_page(app.local_url) and app.foodvision.store is None
    before = store_state(store)
    photo = tmp_path/'lunch.jpg'
    photo.write_bytes(synth_jpeg('ramen', seed=321, index=2, size=48))
    label, summary = client.predict(handle_file(photo), api_name='/predict')
    check_prediction(label, summary, app.foodvision.predictor.vocab, backend='torch')
    assert store_state(store) == before and len(store.inbox()) == 0
    assert not (folder/'feedback').exists()  # a prediction is not saved anywhere


# --- the HTTP boundary: a client names data, never a server path ------------------------------------------------------------

FILE_DATA = {'_type': 'gradio.FileData'}


def call_raw(base:str, api_name:str, data:list)->tuple:
    "POST raw JSON to a named endpoint as any HTTP client can; (last SSE event, its data) or ('http', status)."
    r = httpx.post(f'{base}gradio_api/call/{api_name}', json=dict(data=data), timeout=60)
    if r.status_code != 200: return 'http', r.status_code
    text = httpx.get(f'{base}gradio_api/call/{api_name}/{r.json()["event_id"]}', timeout=60).text
    event, data = [m for m in text.strip().split('\n\n') if not m.startswith('event: heartbeat')][-1].split('\n', 1)
    return event.removeprefix('event: '), json.loads(data.removeprefix('data: '))


def outside_paths(base:str, cache:Path, target:Path, link_dir:Path)->dict:
    "Ways a client may spell `target`, a file outside the upload cache: absolute, with '..', a symlink in the cache, URLs."
    link = link_dir/f'link-{target.name}'
    link.symlink_to(target)
    return {'absolute': str(target), 'dotdot': str(cache/os.path.relpath(target, cache)), 'symlink in cache': str(link),
            'file url': f'file://{target}', 'gradio url': f'{base}gradio_api/file={target}'}


def test_raw_payloads_cannot_name_files_outside_the_upload_cache(served, tmp_path):
    app, _, feedback, looked_up = served
    base, cache = app.local_url, Path(app.GRADIO_CACHE).resolve()
    private = tmp_path/'private'; private.mkdir()
    secret, missing = private/'secret.jpg', private/'missing.jpg'
    secret.write_bytes(synth_jpeg('pizza', seed=5, index=3, size=48))  # a decodable photo the app was never given
    link_dir = cache/f'test-links-{os.getpid()}'; link_dir.mkdir(parents=True)
    before = sorted(feedback.rglob('*'))
    try:
        spellings = {path: outside_paths(base, cache, path, link_dir) for path in (secret, missing)}
        for how in spellings[secret]:
            for form in ('dict', 'file data', 'string'):
                answers = []
                for path in (secret, missing):
                    p = spellings[path][how]
                    image = {'path': p} if form == 'dict' else {'path': p, 'meta': FILE_DATA} if form == 'file data' else p
                    got = call_raw(base, 'predict', [image]), call_raw(base, 'feedback', [image, 'sushi'])
                    assert all(event != 'complete' for event, _ in got), (how, form, path, got)
                    answers.append(got)
                assert answers[0] == answers[1], (how, form, answers)  # an existing and a missing file look the same: no oracle
        assert sorted(feedback.rglob('*')) == before
        assert not [p for p in feedback.rglob('*') if p.is_file() and p.read_bytes() == secret.read_bytes()]
    finally: shutil.rmtree(link_dir)
    # the same photo, uploaded: it is in the cache now, and the same raw call is answered
    r = httpx.post(f'{base}gradio_api/upload', files={'files': ('secret.jpg', secret.read_bytes(), 'image/jpeg')})
    (uploaded,) = r.json()
    event, (label, summary) = call_raw(base, 'predict', [{'path': uploaded, 'meta': FILE_DATA}])
    assert event == 'complete' and Path(uploaded).resolve().is_relative_to(cache)
    check_prediction(label, summary, app.foodvision.predictor.vocab)
    assert looked_up == []


def test_the_upload_cache_is_cleaned_up(served):
    app, _, _, _ = served
    every, older_than = app.delete_cache  # Gradio keeps every upload until told to delete them
    assert 0 < every <= older_than <= 86400


# --- what a Space publishes ---------------------------------------------------------------------------------------------------

@pytest.fixture
def small_run(tmp_path):
    "A run folder in the shape `train_run` leaves it, with a tiny untrained bundle (no fastai) and its store."
    from foodvision.bundle import build_model, save_bundle
    store = Store.create(tmp_path/'store')
    synth_store(store, n=27, size=32, seed=4)
    run = Run(tmp_path/'runs'/'r1')
    save_bundle(build_model('test_resnet', len(SYNTH_CLASSES)), run.bundle, arch='test_resnet', vocab=SYNTH_CLASSES, size=32,
                mean=[0.5] * 3, std=[0.25] * 3, resize='squish', extra=dict(run_id=run.id))
    run.config_file.write_text(json.dumps(dict(run_id=run.id, store=str(store.path))))
    return run, store


def test_space_vendors_every_module_the_app_imports_and_nothing_heavier(small_run):
    mods = set(space_modules())
    assert {'app', 'feedback', 'imaging', 'store', 'infer', 'bundle'} <= mods  # feedback: the app saves corrections through it
    assert not {'train', 'data', 'cli', 'gather', 'fetch', 'search', 'draw', 'synth', 'space'} & mods, mods  # no fastai, no web
    space = write_space(small_run[0], small_run[0].path.parent/'space', n_examples=0, onnx=False)
    assert sorted(p.stem for p in (space/'foodvision').glob('*.py')) == sorted(['__init__', *mods])


def test_space_copies_only_the_bundle_files_the_app_loads(small_run, tmp_path):
    run, _ = small_run
    bundle = run.bundle
    planted = {'learner.pkl': b'\x80\x04pickle', 'weights.pth': b'PK\x03\x04', 'pytorch_model.bin': b'\0' * 64, '.env': b'TOKEN=x',
               'notes.txt': b'private', 'model.onnx': b'not the exported graph', 'sub/more.bin': b'\0'}
    for name, data in planted.items():
        (bundle/name).parent.mkdir(exist_ok=True); (bundle/name).write_bytes(data)
    space = write_space(run, tmp_path/'space', n_examples=0, onnx=False)
    assert sorted(p.name for p in (space/'bundle').iterdir()) == ['config.json', 'model.safetensors']
    assert (space/'bundle'/'model.safetensors').read_bytes() == (bundle/'model.safetensors').read_bytes()
    assert not [p for p in space.rglob('*') if p.is_file() and p.read_bytes() in planted.values()]
    (bundle/'model.safetensors').write_bytes(b'\0' * 128)  # not the weights config.json describes
    with pytest.raises(SpaceError, match='does not match config.json'): write_space(run, tmp_path/'space2', n_examples=0, onnx=False)
    assert not (tmp_path/'space2').exists()


def test_space_examples_come_only_from_the_store_images_folder(small_run, tmp_path):
    run, store = small_run
    secret = tmp_path/'private'/'secret.jpg'
    secret.parent.mkdir(); secret.write_bytes(synth_jpeg('sushi', seed=8, index=0, size=32))
    test = store.items(split='test')
    ok = write_space(run, tmp_path/'ok', n_examples=99, onnx=False)
    assert len(list((ok/'examples').iterdir())) == len(test)  # an untouched store: every test photo
    item = test.iloc[0]
    image = Path(item.path); image.unlink(); image.symlink_to(secret)  # an image file swapped for a link out of the store
    with pytest.raises(SpaceError, match=f"item '{item.id}'"): write_space(run, tmp_path/'linked', n_examples=99, onnx=False)
    image.unlink(); image.write_bytes(secret.read_bytes())
    with sqlite3.connect(store.path/'store.db') as db:  # a row edited behind the store's back
        db.execute('UPDATE items SET file = ? WHERE id = ?', (os.path.relpath(secret, store.path), test.iloc[1].id))
    with pytest.raises(SpaceError, match=f"item '{test.iloc[1].id}'"): write_space(run, tmp_path/'edited', n_examples=99, onnx=False)
    assert not (tmp_path/'linked').exists() and not (tmp_path/'edited').exists()


def test_space_publishes_the_gate_it_serves_with(small_run, tmp_path):
    import torch
    from foodvision.bundle import FeatureGate, feature_dim, load_bundle, save_gate
    run, _ = small_run
    bundle = run.bundle
    save_gate(bundle, FeatureGate(torch.ones(9, feature_dim(load_bundle(bundle).model)), 0.4))
    (bundle/'notes.txt').write_bytes(b'private')
    space = write_space(run, tmp_path/'space', n_examples=0, onnx=False)
    assert sorted(p.name for p in (space/'bundle').iterdir()) == ['config.json', 'gate.safetensors', 'model.safetensors']
    assert make_app(space/'bundle', feedback_dir=tmp_path/'fb').foodvision.predictor.gate.max_distance == 0.4
    (bundle/'gate.safetensors').write_bytes(b'\0' * 64)  # not the gate config.json describes
    with pytest.raises(SpaceError, match="gate.safetensors: does not match config.json"): write_space(run, tmp_path/'space2', n_examples=0, onnx=False)
    (bundle/'gate.safetensors').unlink()
    with pytest.raises(SpaceError, match='missing, but config.json records a gate'): write_space(run, tmp_path/'space3', n_examples=0, onnx=False)


# --- out of distribution: real photos that are not food ------------------------------------------------------------------------

def ood_benchmark():
    "benchmarks/ood.py: its real non-food photos (shipped by scikit-image, scikit-learn, matplotlib) and the app's answers to them."
    spec = importlib.util.spec_from_file_location('ood_benchmark', Path(__file__).resolve().parents[1]/'benchmarks'/'ood.py')
    module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module)
    return module


@pytest.fixture(scope='module')
def probe_run(tmp_path_factory):
    "A demo-like run: tf_efficientnet_lite0 with its ImageNet weights, the head probed on 300 generated 64-px photos (~30 s on a CPU)."
    from foodvision.train import TrainConfig, train_run
    tmp = tmp_path_factory.mktemp('probe')
    store = Store.create(tmp/'store')
    synth_store(store, n=300, size=64, seed=0)
    cfg = TrainConfig(schedule='probe', epochs=3, size=64, bs=32, lr=1e-2, num_workers=0, item_tfms='squish', aug=False)
    return train_run(store, cfg, runs_dir=tmp/'runs', evaluate=False), store


def test_the_gate_says_not_sure_to_real_non_food_photos_and_lets_generated_food_in(probe_run, tmp_path):
    from foodvision.imaging import open_image_checked, to_rgb
    from foodvision.infer import export_onnx, load_predictor
    run, store = probe_run
    ood = ood_benchmark()
    photos = list(ood.real_non_food().values())
    generated = [to_rgb(open_image_checked(p)) for p in store.items(split='test').path]
    pred = load_predictor(run.bundle, backend='torch')
    assert pred.gate is not None and pred.gate.n_valid == len(store.items(split='valid'))  # training fitted it
    assert sum(r['known'] for r in pred.predict(generated)) >= 0.9 * len(generated)  # the price: a few of the generated photos
    rows = pred.predict(photos)
    answers = [verdict(r, pred.threshold) for r in rows]
    assert sum(not r['known'] for r in rows) >= 7, [(r['label'], round(r['distance'], 3)) for r in rows]
    assert all(a == NOT_SURE_TEXT for a, r in zip(answers, rows) if not r['known'])
    assert sum(a not in (NOT_FOOD_TEXT, NOT_SURE_TEXT) for a in answers) <= 2, answers  # called a dish
    bundle = Path(shutil.copytree(run.bundle, tmp_path/'bundle'))  # the same gate through ONNX Runtime, as the app serves it
    export_onnx(bundle, sample_images=generated[:8] + photos)
    assert [answer for _, answer, _, _ in ood.answers(bundle)] == answers and load_predictor(bundle).backend == 'onnx'
