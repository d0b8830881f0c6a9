"""Model bundles: fastai parity, loading without fastai or pickle, and one-line errors for damaged bundles."""
import ast, io, json, os, shutil, subprocess, sys
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from fastai.data.transforms import Normalize
from fastai.vision.learner import vision_learner

import foodvision.bundle as fb
from foodvision.bundle import BundleError, build_model, dls_preprocessing, load_bundle, save_bundle
from foodvision.data import food_dls
from foodvision.store import Store
from foodvision.draw import SYNTH_CLASSES, synth_image
from foodvision.synth import synth_store

SIZE = 32
MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def odd_shaped_records(n=6):
    "Wide and tall PNGs (odd sides) so crop and pad differ from squish."
    out = []
    for i in range(n):
        buf = io.BytesIO()
        synth_image(SYNTH_CLASSES[i], seed=3, index=i, size=64).crop((0, 11, 64, 52) if i % 2 else (9, 0, 46, 64)).save(buf, 'PNG')
        out.append(dict(data=buf.getvalue(), label=SYNTH_CLASSES[i], split='valid' if i < 4 else 'train', source='synth'))
    return out


@pytest.fixture(scope='module')
def store(tmp_path_factory):
    s = Store.create(tmp_path_factory.mktemp('store')/'food')
    synth_store(s, n=45, size=40, seed=2)
    assert len(s.add_images(odd_shaped_records()).added) == 6
    return s


def make_learner(store, resize, arch='resnet18'):
    "An untrained learner with ImageNet normalisation and a sharpened last layer (confident, varied probabilities)."
    dls = food_dls(store, size=SIZE, bs=16, num_workers=0, item_tfms=resize, device='cpu')
    dls.add_tfms([Normalize.from_stats(MEAN, STD)], 'after_batch')
    torch.manual_seed(0)
    learn = vision_learner(dls, arch, pretrained=False)
    with torch.no_grad(): learn.model[1][-1].weight.mul_(30.)
    return learn


@pytest.fixture(scope='module')
def saved(store, tmp_path_factory):
    "A good bundle (resize='pad') and the learner it came from."
    learn = make_learner(store, 'pad')
    dest = save_bundle(learn, tmp_path_factory.mktemp('runs')/'bundle', arch='resnet18', vocab=learn.dls.vocab,
                       extra=dict(run_id='t1'), **dls_preprocessing(learn.dls))
    return dest, learn


def valid_images(dls):
    return [Image.open(p) for p in dls.valid.items.path]


# --- the model: same keys, same outputs -------------------------------------------------------------------------------------

@pytest.mark.parametrize('arch,size', [('resnet18', 32), ('test_vit', 160)])
def test_state_dict_keys_and_outputs_match_fastai(store, arch, size):
    dls = food_dls(store, size=SIZE, bs=8, num_workers=0, device='cpu')
    fastai_model = vision_learner(dls, arch, pretrained=False).model.eval()
    plain = build_model(arch, dls.c)
    assert list(plain.state_dict()) == list(fastai_model.state_dict())
    assert plain[0].needs_pool == (arch == 'resnet18')
    plain.load_state_dict(fastai_model.state_dict(), strict=True)
    x = torch.randn(2, 3, size, size)
    with torch.no_grad(): assert torch.equal(plain.eval()(x), fastai_model(x))


# --- parity with learn.get_preds ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize('resize', ['squish', 'pad', 'crop', 'random_crop'])
def test_bundle_predicts_what_the_learner_predicts(store, tmp_path, resize):
    learn = make_learner(store, resize)
    bundle = load_bundle(save_bundle(learn, tmp_path/'b', arch='resnet18', vocab=learn.dls.vocab, **dls_preprocessing(learn.dls)))
    assert bundle.config['resize'] == resize
    expected, _ = learn.get_preds(dl=learn.dls.valid)
    got = bundle.predict_proba(bundle.preprocess(valid_images(learn.dls)))
    assert got.shape == expected.shape and len(got) >= 8
    assert (got - expected).abs().max().item() < 1e-4
    assert torch.equal(got.argmax(1), expected.argmax(1))
    assert expected.max(1).values.mean() > 0.4  # far from uniform (1/9), so the 1e-4 bound means something


def test_wrong_resize_method_is_detectably_different(saved):
    dest, learn = saved
    bundle, images = load_bundle(dest), valid_images(learn.dls)
    c = bundle.config
    wrong = bundle.predict_proba(fb.images_to_tensor(images, c['size'], 'squish', c['mean'], c['std']))
    assert (wrong - bundle.predict_proba(bundle.preprocess(images))).abs().max() > 1e-2


# --- no fastai, no pickle -----------------------------------------------------------------------------------------------------

NO_FASTAI = '''
import sys, json, pickle, importlib.abc
class NoFastai(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "fastai" or name.startswith("fastai."): raise ImportError(name + " is blocked")
sys.meta_path.insert(0, NoFastai()); sys.modules["fastai"] = None
from PIL import Image
import torch
from foodvision.bundle import load_bundle
def refuse(*a, **k): raise RuntimeError("pickle was used")
torch.load = pickle.load = pickle.loads = refuse
b = load_bundle(sys.argv[1])
preds = b.predict([Image.open(p) for p in sys.argv[2:]], top_k=3)
try:
    import fastai.vision.all
    blocked = False
except ImportError: blocked = True
loaded = sorted(m for m, mod in sys.modules.items() if m.split(".")[0] == "fastai" and mod is not None)
print(json.dumps(dict(preds=preds, blocked=blocked, loaded=loaded)))
'''


def test_loads_and_predicts_without_fastai_or_pickle(saved):
    dest, learn = saved
    paths = [str(p) for p in learn.dls.valid.items.path[:5]]
    env = {**os.environ, 'TORCH_FORCE_WEIGHTS_ONLY_LOAD': '1'}
    r = subprocess.run([sys.executable, '-c', NO_FASTAI, str(dest), *paths], capture_output=True, text=True, timeout=180, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out['blocked'] is True and out['loaded'] == []
    here = load_bundle(dest).predict([Image.open(p) for p in paths], top_k=3)
    assert [p['label'] for p in out['preds']] == [p['label'] for p in here]
    assert max(abs(a['prob'] - b['prob']) for a, b in zip(out['preds'], here)) < 1e-6


def test_bundle_module_never_unpickles_and_imports_fastai_only_lazily():
    tree = ast.parse(Path(fb.__file__).read_text())
    top_imports = [a.name for n in tree.body if isinstance(n, ast.Import) for a in n.names]
    top_imports += [n.module or '' for n in tree.body if isinstance(n, ast.ImportFrom)]
    assert 'torch' in top_imports and not [m for m in top_imports if m.split('.')[0] in ('fastai', 'pickle', 'dill')]
    calls = {ast.unparse(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)}
    assert 'load_file' in calls
    assert not calls & {'torch.load', 'pickle.load', 'pickle.loads', 'load_learner', 'torch.jit.load'}


# --- the predict API ---------------------------------------------------------------------------------------------------------

def test_predict_api(saved):
    dest, learn = saved
    bundle, images = load_bundle(dest), valid_images(learn.dls)[:3]
    preds = bundle.predict(images, top_k=4)
    assert len(preds) == 3 and all(len(p['top_k']) == 4 for p in preds)
    for p in preds:
        assert p['label'] == p['top_k'][0][0] and p['prob'] == p['top_k'][0][1]
        assert [q for _, q in p['top_k']] == sorted((q for _, q in p['top_k']), reverse=True)
        assert p['sure'] == (p['prob'] >= 0.5)
    assert bundle.predict(images[0])[0]['label'] == preds[0]['label']
    assert len(bundle.predict(images[:1], top_k=99)[0]['top_k']) == len(bundle.vocab)
    assert bundle.predict([]) == []
    assert bundle.vocab == list(learn.dls.vocab) and bundle.config['extra'] == {'run_id': 't1'}
    assert bundle.preprocess(images).shape == (3, 3, SIZE, SIZE)


# --- saving -------------------------------------------------------------------------------------------------------------------

def test_save_refuses_to_overwrite_then_replaces_whole(saved, tmp_path):
    dest, learn = saved
    kw = dict(arch='resnet18', vocab=learn.dls.vocab, **dls_preprocessing(learn.dls))
    target = save_bundle(learn, tmp_path/'b', extra=dict(run_id='a'), **kw)
    with pytest.raises(BundleError, match='already exists; pass overwrite=True'): save_bundle(learn, target, **kw)
    save_bundle(learn.model, target, extra=dict(run_id='b'), overwrite=True, **kw)
    assert json.loads((target/'config.json').read_text())['extra'] == {'run_id': 'b'}
    assert sorted(p.name for p in tmp_path.iterdir()) == ['b']
    (tmp_path/'keep').mkdir(); (tmp_path/'keep'/'x.txt').write_text('x')
    with pytest.raises(BundleError, match='not a model bundle'): save_bundle(learn, tmp_path/'keep', overwrite=True, **kw)
    assert (tmp_path/'keep'/'x.txt').read_text() == 'x'


def test_failed_save_leaves_nothing_behind_and_the_old_bundle_intact(saved, tmp_path, monkeypatch):
    dest, learn = saved
    kw = dict(arch='resnet18', vocab=learn.dls.vocab, **dls_preprocessing(learn.dls))
    old = save_bundle(learn, tmp_path/'old', extra=dict(run_id='old'), **kw)
    def disk_full(*a, **k): raise OSError('No space left on device')
    monkeypatch.setattr(fb, 'save_file', disk_full)
    with pytest.raises(OSError): save_bundle(learn, tmp_path/'new', **kw)
    with pytest.raises(OSError): save_bundle(learn, old, overwrite=True, extra=dict(run_id='new'), **kw)
    assert sorted(p.name for p in tmp_path.iterdir()) == ['old']
    assert load_bundle(old).config['extra'] == {'run_id': 'old'}


def test_save_refuses_mismatches_with_the_learner(saved, tmp_path):
    dest, learn = saved
    kw = dict(arch='resnet18', vocab=learn.dls.vocab, **dls_preprocessing(learn.dls))
    cases = [(dict(resize='crop'), "resize='crop' but the learner validates"), (dict(size=64), 'size=64 but'),
             (dict(mean=[0.5] * 3), 'but the learner normalises'), (dict(vocab=list(learn.dls.vocab)[::-1]), 'differs from the learner'),
             (dict(head=dict(lin_ftrs=[128])), 'but resnet18 with this head needs (128, 1024)'), (dict(arch='resnet34'), 'tensors missing'),
             (dict(vocab=['a/b'] + list(learn.dls.vocab)[1:]), 'path separator'), (dict(threshold=2), 'threshold 2 is not in')]
    for change, message in cases:
        with pytest.raises(BundleError) as e: save_bundle(learn, tmp_path/'b', **{**kw, **change})
        assert message in str(e.value) and '\n' not in str(e.value), (change, str(e.value))
    assert not (tmp_path/'b').exists()


# --- damaged bundles ----------------------------------------------------------------------------------------------------------

def _edit_config(**changes):
    def change(folder):
        cfg = json.loads((folder/'config.json').read_text()); cfg.update(changes)
        (folder/'config.json').write_text(json.dumps(cfg))
    return change


def _rewrite_weights(edit, fix_config=True):
    def change(folder):
        state = edit(load_file(folder/'model.safetensors')); save_file(state, folder/'model.safetensors')
        if fix_config: _edit_config(sha256=fb._sha256(folder/'model.safetensors'), n_tensors=len(state))(folder)
    return change


def _drop_config_key(folder, key):
    cfg = json.loads((folder/'config.json').read_text()); del cfg[key]
    (folder/'config.json').write_text(json.dumps(cfg))


def _truncate(folder):
    data = (folder/'model.safetensors').read_bytes(); (folder/'model.safetensors').write_bytes(data[:len(data) // 3])


def _truncate_and_rehash(folder):
    _truncate(folder); _edit_config(sha256=fb._sha256(folder/'model.safetensors'))(folder)


DAMAGE = {
    'missing config': (lambda f: (f/'config.json').unlink(), 'config.json', 'missing'),
    'config not JSON': (lambda f: (f/'config.json').write_text('{"arch": '), 'config.json', 'not valid JSON'),
    'not a bundle config': (lambda f: (f/'config.json').write_text('[1, 2]'), 'config.json', 'not a foodvision-bundle config'),
    'unknown format version': (_edit_config(format_version=99), 'config.json', 'format_version 99 is not supported'),
    'missing key': (lambda f: _drop_config_key(f, 'head'), 'config.json', 'missing keys head'),
    'vocab with path characters': (lambda f: _edit_config(vocab=['..\\evil'] + json.loads((f/'config.json').read_text())['vocab'][1:])(f), 'config.json', 'path separator'),
    'num_classes differs from vocab': (_edit_config(num_classes=2), 'config.json', 'num_classes is 2 but vocab has'),
    'unknown arch': (_edit_config(arch='no_such_net'), 'config.json', 'is not a timm architecture'),
    'head pool disagrees with arch': (lambda f: _edit_config(head={**json.loads((f/'config.json').read_text())['head'], 'pool': False})(f), 'config.json', 'needs pooling'),
    'missing weights': (lambda f: (f/'model.safetensors').unlink(), 'model.safetensors', 'missing'),
    'truncated weights': (_truncate, 'model.safetensors', 'truncated or was replaced'),
    'truncated weights, hash updated': (_truncate_and_rehash, 'model.safetensors', 'not a readable safetensors file'),
    'sha256 mismatch': (_edit_config(sha256='f' * 64), 'model.safetensors', 'does not match config.json'),
    'tensor count mismatch': (_edit_config(n_tensors=7), 'model.safetensors', 'but config.json says 7'),
    'wrong number of classes': (lambda f: _edit_config(num_classes=4, vocab=json.loads((f/'config.json').read_text())['vocab'][:4])(f),
                                'model.safetensors', 'but the model in config.json needs (4, 512)'),
    'wrong arch': (_edit_config(arch='resnet34'), 'model.safetensors', 'tensors missing'),
    'tensor missing': (_rewrite_weights(lambda s: {k: v for k, v in s.items() if k != '1.4.weight'}), 'model.safetensors', "1 tensors missing (first '1.4.weight')"),
    'tensor extra': (_rewrite_weights(lambda s: {**s, 'trojan.weight': torch.zeros(2)}), 'model.safetensors', "1 unexpected tensors (first 'trojan.weight')"),
    'tensor reshaped': (_rewrite_weights(lambda s: {**s, '1.8.weight': torch.zeros(3, 512)}), 'model.safetensors', "'1.8.weight' has shape (3, 512)"),
}


@pytest.mark.parametrize('case', list(DAMAGE))
def test_damaged_bundle_fails_with_one_line_naming_the_file(saved, tmp_path, case):
    dest, _ = saved
    change, file, message = DAMAGE[case]
    folder = tmp_path/'bundle'
    shutil.copytree(dest, folder)
    change(folder)
    with pytest.raises(BundleError) as e: load_bundle(folder)
    text = str(e.value)
    assert isinstance(e.value, ValueError)
    assert text.startswith(str(folder/file)), text
    assert message in text and '\n' not in text, text


def test_the_good_bundle_still_loads(saved):
    dest, learn = saved
    b = load_bundle(dest)
    assert b.config['sha256'] == fb._sha256(dest/'model.safetensors')
    assert b.config['n_tensors'] == len(learn.model.state_dict())
    assert not b.model.training


def test_a_huge_arch_in_the_config_is_refused_before_any_weight_is_allocated(saved, tmp_path, monkeypatch):
    "config.json names an 846-million-parameter convnext_xxlarge beside resnet18 weights: refused from shapes alone."
    dest, _ = saved
    folder = shutil.copytree(dest, tmp_path/'bundle')
    _edit_config(arch='convnext_xxlarge')(folder)
    devices, create = [], fb.timm.create_model
    def recording(*args, **kwargs):
        devices.append(torch.empty(0).device.type)  # where this call would put the model's weights
        if devices[-1] != 'meta': raise AssertionError(f"timm.create_model{args} built real weights")  # (the old code: 37 s, 3.4 GB)
        return create(*args, **kwargs)
    monkeypatch.setattr(fb.timm, 'create_model', recording)
    with pytest.raises(BundleError) as e: load_bundle(folder)
    text = str(e.value)
    assert text.startswith(str(folder/'model.safetensors')) and 'not the model in config.json' in text and '\n' not in text, text
    assert devices == ['meta']  # the config's model as names and shapes only: no memory, no initialisation


# --- the gate: distance to the training photos ------------------------------------------------------------------------------

@pytest.fixture(scope='module')
def gated(saved, tmp_path_factory):
    "A copy of the good bundle with a gate fitted on its learner's training and validation images."
    dest, learn = saved
    folder = Path(shutil.copytree(dest, tmp_path_factory.mktemp('gated')/'bundle'))
    gate = fb.fit_gate_on_items(load_bundle(folder), learn.dls.train_ds.items, learn.dls.valid_ds.items)
    fb.save_gate(folder, gate)
    return folder, gate, learn


def test_gate_round_trip_and_threshold(gated):
    folder, gate, learn = gated
    b = load_bundle(folder)
    assert b.config['gate']['sha256'] == fb._sha256(folder/'gate.safetensors') and b.config['gate']['n_valid'] == len(learn.dls.valid_ds)
    assert torch.allclose(b.gate.centroids, gate.centroids, atol=1e-6) and b.gate.max_distance == gate.max_distance
    assert torch.allclose(b.gate.centroids.norm(dim=1), torch.ones(len(b.vocab)))
    assert fb.load_gate(folder).max_distance == gate.max_distance
    images = valid_images(learn.dls)
    distances = gate.distances(b.proba_and_features(b.preprocess(images))[1])
    assert abs(float(torch.quantile(distances, 0.99)) - gate.max_distance) < 1e-6  # the threshold is the validation quantile
    rows = b.predict(images)
    assert [r['known'] for r in rows] == (distances <= gate.max_distance).tolist() and sum(r['known'] for r in rows) >= len(rows) - 1
    assert max(abs(r['distance'] - d) for r, d in zip(rows, distances.tolist())) < 1e-6


def test_a_bundle_without_a_gate_predicts_as_before(saved):
    dest, learn = saved
    b = load_bundle(dest)
    assert b.gate is None and 'gate' not in b.config and fb.load_gate(dest) is None
    assert all(r['distance'] is None and r['known'] is True for r in b.predict(valid_images(learn.dls)[:3]))


def test_fit_gate_refuses_what_it_cannot_fit(saved):
    dest, learn = saved
    b = load_bundle(dest)
    vocab, pool = list(b.vocab), valid_images(learn.dls)
    images = [pool[i % len(pool)] for i in range(len(vocab))]  # one image per class
    cases = [(dict(train_labels=vocab + vocab[:1]), f'{len(vocab)} training images but {len(vocab) + 1} labels'),
             (dict(train_labels=vocab[:-1] + ['moon_cheese']), "training label 'moon_cheese' is not one of the bundle's classes"),
             (dict(train_labels=vocab[:1] * len(vocab)), f"no training images of class '{vocab[1]}'"),
             (dict(valid_images=[]), 'no validation images'),
             (dict(quantile=0.0), r'quantile 0.0 is not in \(0, 1\]')]
    for change, message in cases:
        with pytest.raises(ValueError, match=message):
            fb.fit_gate(b, **{**dict(train_images=images, train_labels=vocab, valid_images=pool), **change})


def test_gate_loads_without_fastai_or_pickle(gated):
    folder, gate, learn = gated
    paths = [str(p) for p in learn.dls.valid.items.path[:4]]
    r = subprocess.run([sys.executable, '-c', NO_FASTAI, str(folder), *paths], capture_output=True, text=True, timeout=180,
                       env={**os.environ, 'TORCH_FORCE_WEIGHTS_ONLY_LOAD': '1'})
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    here = load_bundle(folder).predict([Image.open(p) for p in paths], top_k=3)
    assert out['loaded'] == [] and [p['known'] for p in out['preds']] == [p['known'] for p in here]
    assert max(abs(a['distance'] - b['distance']) for a, b in zip(out['preds'], here)) < 1e-6


def test_a_failed_save_gate_leaves_the_bundle_without_a_gate_never_a_wrong_one(gated, tmp_path, monkeypatch):
    folder, gate, _ = gated
    copy = Path(shutil.copytree(folder, tmp_path/'bundle'))
    replace = os.replace
    def crash_on_gate(src, dst):  # the moment between dropping the old record and moving the new file in
        if Path(dst).name == 'gate.safetensors': raise OSError('disk full')
        return replace(src, dst)
    monkeypatch.setattr(fb.os, 'replace', crash_on_gate)
    with pytest.raises(OSError, match='disk full'): fb.save_gate(copy, fb.FeatureGate(gate.centroids.flip(0), 0.3))
    monkeypatch.setattr(fb.os, 'replace', replace)
    b = load_bundle(copy)
    assert b.gate is None and 'gate' not in b.config and not [p for p in copy.iterdir() if p.name.startswith('.')]
    fb.save_gate(copy, fb.FeatureGate(gate.centroids.flip(0), 0.3))  # and a retry succeeds
    assert load_bundle(copy).gate.max_distance == 0.3


def _gate_record(folder): return json.loads((folder/'config.json').read_text())['gate']

def _rewrite_gate(tensors):
    "Write `tensors` as the gate file and record its sha256, as a careless tool would."
    def change(folder):
        save_file(tensors, folder/'gate.safetensors')
        _edit_config(gate={**_gate_record(folder), 'sha256': fb._sha256(folder/'gate.safetensors')})(folder)
    return change

def _edit_gate(**changes): return lambda folder: _edit_config(gate={**_gate_record(folder), **changes})(folder)

N_CLASSES, N_FEATURES = len(SYNTH_CLASSES), 512  # resnet18's pooled features

GATE_DAMAGE = {
    'gate file missing': (lambda f: (f/'gate.safetensors').unlink(), 'gate.safetensors', 'missing, but config.json records a gate'),
    'gate file replaced': (lambda f: save_file({'centroids': torch.ones(N_CLASSES, N_FEATURES)}, f/'gate.safetensors'), 'gate.safetensors', 'truncated or was replaced'),
    'gate file truncated, hash updated': (lambda f: ((f/'gate.safetensors').write_bytes((f/'gate.safetensors').read_bytes()[:100]),
                                                      _edit_gate(sha256=fb._sha256(f/'gate.safetensors'))(f)), 'gate.safetensors', 'not a readable safetensors file'),
    'wrong feature width': (_rewrite_gate({'centroids': torch.ones(N_CLASSES, 64)}), 'gate.safetensors', f"shape [{N_CLASSES}, {N_FEATURES}]"),
    'wrong class count': (_rewrite_gate({'centroids': torch.ones(3, N_FEATURES)}), 'gate.safetensors', "'centroids' [3, 512] F32"),
    'half precision': (_rewrite_gate({'centroids': torch.ones(N_CLASSES, N_FEATURES).half()}), 'gate.safetensors', 'F16'),
    'extra tensor': (_rewrite_gate({'centroids': torch.ones(N_CLASSES, N_FEATURES), 'payload': torch.zeros(4)}), 'gate.safetensors', "'payload' [4] F32"),
    'no tensors': (_rewrite_gate({}), 'gate.safetensors', 'holds no tensors'),
    'NaN centroids': (_rewrite_gate({'centroids': torch.full((N_CLASSES, N_FEATURES), float('nan'))}), 'gate.safetensors', 'finite and non-zero'),
    'zero centroid': (_rewrite_gate({'centroids': torch.zeros(N_CLASSES, N_FEATURES)}), 'gate.safetensors', 'finite and non-zero'),
    'NaN max_distance': (_edit_gate(max_distance=float('nan')), 'config.json', 'gate max_distance nan is not a cosine distance'),
    'infinite max_distance': (_edit_gate(max_distance=float('inf')), 'config.json', 'gate max_distance inf is not a cosine distance'),
    'max_distance a string': (_edit_gate(max_distance='0.5'), 'config.json', 'gate max_distance 0.5 is not a cosine distance'),
    'gate file elsewhere': (_edit_gate(file='../../etc/passwd'), 'config.json', "gate file '../../etc/passwd' is not 'gate.safetensors'"),
    'sha256 not hex': (_edit_gate(sha256='x' * 64), 'config.json', 'gate sha256 is not a SHA-256 hex digest'),
    'negative count': (_edit_gate(n_valid=-1), 'config.json', 'gate n_valid is not a count'),
    'quantile out of range': (_edit_gate(quantile=1.5), 'config.json', 'gate quantile is not in (0, 1]'),
    'gate not a dict': (_edit_config(gate=[0.5]), 'config.json', 'gate must have exactly the keys'),
    'extra key': (_edit_gate(url='http://example.com/gate'), 'config.json', 'gate must have exactly the keys'),
}


@pytest.mark.parametrize('case', list(GATE_DAMAGE))
def test_damaged_gate_fails_with_one_line_naming_the_file(gated, tmp_path, case):
    folder, _, _ = gated
    change, file, message = GATE_DAMAGE[case]
    copy = Path(shutil.copytree(folder, tmp_path/'bundle'))
    change(copy)
    for load in (load_bundle, fb.load_gate):
        with pytest.raises(BundleError) as e: load(copy)
        text = str(e.value)
        assert text.startswith(str(copy/file)) and message in text and '\n' not in text, text
