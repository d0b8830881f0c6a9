"Experiment tracking end to end: a real offline W&B run through a tiny fastai training, failures that never stop training, mode choice."
import json
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from foodvision.data import food_dls
from foodvision.store import Store
from foodvision.synth import synth_store
from foodvision.run import Run
from foodvision.track import TrackCallback, Tracker, choose_mode, read_tracking, sync_offline

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def wandb_env(tmp_path, monkeypatch):
    "No credentials, no WANDB_MODE, HOME (and the XDG folders W&B's defaults live in) inside tmp_path, W&B quiet."
    home = tmp_path/'home'; home.mkdir()
    monkeypatch.setenv('HOME', str(home))
    monkeypatch.setenv('NETRC', str(home/'.netrc'))
    for var, sub in [('XDG_DATA_HOME', '.local/share'), ('XDG_CACHE_HOME', '.cache'), ('XDG_CONFIG_HOME', '.config')]:
        monkeypatch.setenv(var, str(home/sub))
    for var in ('WANDB_API_KEY', 'WANDB_MODE', 'WANDB_BASE_URL', 'WANDB_IDENTITY_TOKEN_FILE', 'WANDB_DATA_DIR', 'WANDB_ARTIFACT_DIR'):
        monkeypatch.delenv(var, raising=False)
    for var in ('WANDB_DIR', 'WANDB_CACHE_DIR', 'WANDB_CONFIG_DIR'): monkeypatch.setenv(var, str(tmp_path/'wandb-home'))
    monkeypatch.setenv('WANDB_SILENT', 'true')
    return home


@pytest.fixture(scope='module')
def store(tmp_path_factory):
    st = Store.create(tmp_path_factory.mktemp('store')/'food')
    synth_store(st, n=30, size=32, seed=0)
    return st


@pytest.fixture
def bundle(tmp_path):
    b = tmp_path/'bundle'; b.mkdir()
    (b/'model.safetensors').write_bytes(b'\0' * 128)
    (b/'vocab.json').write_text('["a", "b"]')
    return b


def tiny_learner(store, arch='cnn'):
    "A real fastai Learner on 32-pixel images: timm's resnet18 (random weights) or a two-layer CNN (faster)."
    from fastai.learner import Learner
    from fastai.metrics import accuracy
    from fastai.vision.learner import vision_learner
    torch.manual_seed(0)
    dls = food_dls(store, size=32, bs=8, num_workers=0, device='cpu', aug=False)
    if arch == 'resnet18': return vision_learner(dls, 'resnet18', pretrained=False, metrics=accuracy)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, stride=2, padding=1), torch.nn.ReLU(),
                              torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, dls.c))
    return Learner(dls, net, metrics=accuracy)


def eval_frame(learn):
    "A small evaluation table of the valid tier, as the evaluation step would produce it."
    probs, targs, losses = learn.get_preds(with_loss=True)
    df = learn.dls.valid.items[['id', 'file', 'path', 'split', 'label']].rename(columns={'id': 'item_id'})
    df['pred'] = [learn.dls.vocab[i] for i in probs.argmax(1)]
    df['prob'], df['loss'] = probs.max(1).values.numpy(), losses.numpy()
    df['correct'] = df.pred == df.label
    return df


def tracking_warnings(caught): return [w for w in caught if 'foodvision tracking' in str(w.message)]


def test_offline_run_through_real_training(tmp_path, wandb_env, store, bundle):
    run_dir = tmp_path/'runs'/'r1'
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        tracker = Tracker(run_dir, config={'arch': 'resnet18', 'size': 32}, tags=('test',))  # no key: offline
        assert (tracker.mode, tracker.active) == ('offline', True)
        learn = tiny_learner(store, 'resnet18')
        tracker.log_dataset(store, learn.dls.store_version)
        with learn.no_logging(): learn.fit(1, 1e-3, cbs=TrackCallback(tracker))
        valid_loss, acc = learn.recorder.values[-1][1:3]
        tracker.log_model(bundle, {'valid_loss': valid_loss, 'accuracy': acc})
        df = eval_frame(learn)
        tracker.log_eval_table(df)
        assert tracker.tag_best('accuracy') == str(run_dir.resolve())
        tracker.finish()
    assert tracking_warnings(caught) == []

    rec = read_tracking(run_dir)
    tracking = Run(run_dir).tracking_dir
    offline = sorted((tracking/'wandb').glob('offline-run-*'))
    assert len(offline) == 2, 'the training run and the run that produces the dataset version'
    assert {str(p) for p in offline} == {rec['wandb']['files'], rec['dataset']['producer']['files']}
    (train_file,), (dataset_file,) = Path(rec['wandb']['files']).glob('*.wandb'), Path(rec['dataset']['producer']['files']).glob('*.wandb')
    data = train_file.read_bytes()
    assert b'food-model' in data and b'eval/predictions' in data
    assert b'dataset-food' in dataset_file.read_bytes()
    assert (rec['mode'], rec['status'], rec['errors']) == ('offline', 'finished', [])
    assert rec['wandb']['sync'] == f"foodvision track sync {run_dir}"
    (epoch,) = rec['history']
    assert set(epoch) == {'step', 'epoch', 'train_loss', 'valid_loss', 'accuracy'} and epoch['epoch'] == 0
    assert epoch['valid_loss'] == pytest.approx(float(valid_loss))
    assert (rec['dataset']['version'], rec['dataset']['n_items'], rec['dataset']['linked_as']) == (store.version(), 30, 'input after sync')
    assert rec['model']['files'] == ['model.safetensors', 'vocab.json']
    assert rec['model']['dataset_version'] == store.version()
    assert rec['eval_table']['rows'] == len(df) == 4
    assert rec['tags'] == ['test', 'best'] and rec['best']['is_best']

    # self-contained: W&B's staged copies of the artifact files are in the run folder, none in the (temp) HOME's data folder
    assert not (wandb_env/'.local'/'share'/'wandb').exists(), list((wandb_env/'.local'/'share'/'wandb').rglob('*'))
    staged = sorted(p.read_bytes() for p in (tracking/'artifacts'/'staging').rglob('*') if p.is_file())
    assert (bundle/'model.safetensors').read_bytes() in staged and (bundle/'vocab.json').read_bytes() in staged
    assert (tracking/'labels.csv').read_bytes() in staged

    # the later upload: both runs synced, dataset run first, then the dataset version made the training run's input
    commands, used = [], []
    class Api:
        default_entity = 'me'
        def artifact(self, name): return name
        def run(self, path): return type('R', (), {'use_artifact': lambda self, art: used.append((path, art))})()
    def runner(cmd, **kw):
        commands.append(cmd[-1]); return subprocess.CompletedProcess(cmd, 0, '', '')
    sync_offline(run_dir, api=Api(), run=runner)
    assert commands == [rec['dataset']['producer']['files'], rec['wandb']['files']]
    assert used == [(f"me/foodvision/{rec['wandb']['run_id']}", f"me/foodvision/dataset-food:{store.version()}")]
    assert read_tracking(run_dir)['dataset']['linked_as'] == 'input'


def test_failing_wandb_init_never_stops_training(tmp_path, wandb_env, store, bundle, monkeypatch):
    import wandb
    def refuse(*args, **kwargs): raise wandb.errors.CommError('network is unreachable')
    monkeypatch.setattr(wandb, 'init', refuse)
    run_dir = tmp_path/'runs'/'r2'
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        tracker = Tracker(run_dir, mode='offline')
        learn = tiny_learner(store)
        tracker.log_dataset(store)
        with learn.no_logging(): learn.fit(2, 1e-3, cbs=TrackCallback(tracker))
        epochs_done = len(learn.recorder.values)
        tracker.log_model(bundle)
        tracker.log_eval_table(eval_frame(learn))
        tracker.finish()
    assert epochs_done == 2  # training finished
    (warning,) = tracking_warnings(caught)
    assert 'wandb.init failed' in str(warning.message) and '\n' not in str(warning.message)
    rec = read_tracking(run_dir)
    assert [(e['action'], e['count']) for e in rec['errors']] == [('wandb.init', 1)]
    assert 'network is unreachable' in rec['errors'][0]['error']
    assert (rec['mode'], rec['status'], rec['wandb'], tracker.active) == ('offline', 'finished', None, False)
    assert [h['epoch'] for h in rec['history']] == [0, 1]  # the local record still works
    assert rec['dataset']['version'] == store.version() and rec['model']['files'] == ['model.safetensors', 'vocab.json']
    assert not (Run(run_dir).tracking_dir/'wandb').exists()


def test_failing_wandb_log_mid_training_is_counted_not_raised(tmp_path, wandb_env, store, monkeypatch):
    run_dir = tmp_path/'runs'/'r3'
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        tracker = Tracker(run_dir, mode='offline')
        def full(*args, **kwargs): raise OSError('No space left on device')
        monkeypatch.setattr(tracker.run, 'log', full)
        learn = tiny_learner(store)
        with learn.no_logging(): learn.fit(2, 1e-3, cbs=TrackCallback(tracker))
        tracker.finish()
    assert len(learn.recorder.values) == 2
    assert len(tracking_warnings(caught)) == 1  # warned once, however many epochs fail
    rec = read_tracking(run_dir)
    assert [(e['action'], e['count']) for e in rec['errors']] == [('log_metrics', 2)]
    assert len(rec['history']) == 2 and rec['status'] == 'finished'


def test_unwritable_run_dir_warns_and_never_raises(tmp_path, wandb_env):
    blocker = tmp_path/'file'; blocker.write_text('not a folder')
    with pytest.warns(RuntimeWarning, match='cannot write'):
        tracker = Tracker(blocker/'run', enabled=False)
    tracker.log_metrics({'accuracy': 0.5}); tracker.finish()
    assert tracker.record['status'] == 'finished' and not (blocker/'run').exists()


@pytest.mark.parametrize('env, netrc, requested, expected', [
    ({'WANDB_API_KEY': '0123abcd'}, None, None, 'online'),
    ({}, 'machine api.wandb.ai login user password 0123abcd\n', None, 'online'),
    ({}, 'machine example.com login user password 0123abcd\n', None, 'offline'),
    ({}, None, None, 'offline'),
    ({'WANDB_API_KEY': '0123abcd'}, None, 'disabled', 'disabled'),
    ({'WANDB_API_KEY': '0123abcd', 'WANDB_MODE': 'offline'}, None, None, 'offline'),
    ({'WANDB_MODE': 'disabled'}, None, None, 'disabled'),
    ({'WANDB_MODE': 'disabled'}, None, 'offline', 'offline'),  # an explicit request wins
])
def test_choose_mode(wandb_env, monkeypatch, env, netrc, requested, expected):
    for k, v in env.items(): monkeypatch.setenv(k, v)
    if netrc: (wandb_env/'.netrc').write_text(netrc)
    assert choose_mode(requested) == expected


def test_choose_mode_refuses_unknown_modes(wandb_env, monkeypatch):
    with pytest.raises(ValueError, match='not one of'): choose_mode('onlin')
    monkeypatch.setenv('WANDB_MODE', 'shared')
    with pytest.raises(ValueError, match='WANDB_MODE'): choose_mode()


def test_disabled_tracker_keeps_local_record_without_wandb_files(tmp_path, wandb_env, store):
    tracker = Tracker(tmp_path/'run', mode='disabled')
    tracker.log_metrics({'accuracy': 0.5}); tracker.log_dataset(store); tracker.finish()
    rec = read_tracking(tmp_path/'run')
    assert (rec['mode'], rec['summary'], rec['dataset']['linked_as'], rec['errors']) == ('disabled', {'accuracy': 0.5}, None, [])
    assert not (Run(tmp_path/'run').tracking_dir/'wandb').exists()


def test_import_does_not_load_wandb():
    code = "import sys, foodvision.track; assert 'wandb' not in sys.modules, 'wandb imported at import time'"
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
