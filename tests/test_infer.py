"""Serving: ONNX export with parity against PyTorch, damaged ONNX files, backend choice, predict over folders, CLI output."""
import io, json, re, shutil, struct, subprocess, sys, zlib
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

import foodvision.infer as fi
from foodvision.bundle import (BundleError, FeatureGate, build_model, fit_gate_on_items, load_bundle, read_config, save_bundle, save_gate,
                               update_config)
from foodvision.imaging import open_image_checked
from foodvision.infer import (ONNX_FILE, check_onnx_parity, export_onnx, export_onnx_command, load_predictor, predict,
                              predict_command)
from foodvision.run import Run
from foodvision.store import Store
from foodvision.synth import synth_store

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def png_declaring(width, height):
    "A small PNG whose header declares `width` x `height` pixels: a decompression bomb."
    def chunk(kind, data): return struct.pack('>I', len(data)) + kind + data + struct.pack('>I', zlib.crc32(kind + data))
    header = struct.pack('>IIBBBBB', width, height, 8, 2, 0, 0, 0)
    return b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', header) + chunk(b'IDAT', zlib.compress(b'\0' * 64)) + chunk(b'IEND', b'')


@pytest.fixture(scope='module')
def run_dir(tmp_path_factory):
    """A run folder as `train_run` lays it out (config.json naming the store, bundle/), holding an untrained resnet18 at 32 px
    with a sharpened last layer, exported to ONNX by `export_onnx_command` (the only dynamo export in this file)."""
    tmp = tmp_path_factory.mktemp('infer')
    store = Store.create(tmp/'food')
    synth_store(store, n=45, size=40, seed=2)
    vocab = sorted(store.items().label.unique())
    torch.manual_seed(0)
    model = build_model('resnet18', len(vocab))
    with torch.no_grad(): model[1][-1].weight.mul_(30.)
    run = tmp/'runs'/'run-1'
    save_bundle(model, Run(run).bundle, arch='resnet18', vocab=vocab, size=32, mean=MEAN, std=STD, resize='pad')
    Run(run).config_file.write_text(json.dumps(dict(run_id='run-1', store=str(store.path))))
    out = io.StringIO()
    assert export_onnx_command(run, n_check=6, out=out) == 0
    run.joinpath('export.log').write_text(out.getvalue())
    return run


@pytest.fixture(scope='module')
def test_images(run_dir):
    store = Store(json.loads(Run(run_dir).config_file.read_text())['store'])
    return [open_image_checked(p) for p in store.items(split='test').path]


def copy_bundle(run_dir, tmp_path, name='copy'):
    return Path(shutil.copytree(Run(run_dir).bundle, tmp_path/name))


# --- export and parity --------------------------------------------------------------------------------------------------------

def test_export_writes_checked_recorded_onnx(run_dir):
    bundle = Run(run_dir).bundle
    proto = onnx.load(str(bundle/ONNX_FILE))
    onnx.checker.check_model(proto)
    assert [i.name for i in proto.graph.input] == ['pixels'] and [o.name for o in proto.graph.output] == ['logits', 'features']
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # a named, dynamic batch axis
    config = read_config(bundle)
    record = config['onnx']
    assert record['sha256'] == fi._sha256(bundle/ONNX_FILE) and record['weights_sha256'] == config['sha256']
    assert record['parity']['ok'] and record['parity']['n_images'] == 6
    assert not [p for p in bundle.iterdir() if p.name.startswith('.')]  # no temporary files left
    log = (run_dir/'export.log').read_text()
    assert 'parity on 6 test images' in log and 'top-1 agreement 6/6' in log


def test_parity_with_pytorch(run_dir, test_images):
    p = check_onnx_parity(Run(run_dir).bundle, test_images)
    assert p['ok'] and p['max_abs_diff'] < 1e-3 and p['top1_agree'] == p['n_images'] == len(test_images) > 0
    probs = load_predictor(Run(run_dir).bundle, backend='torch').predict(test_images)
    assert len({r['label'] for r in probs}) > 1 or max(r['prob'] for r in probs) > 0.2  # not a degenerate model


def test_parity_on_batch_sizes(run_dir, test_images):
    "One image, an odd batch and a full batch: the batch axis is really dynamic."
    onnx_p, torch_p = load_predictor(Run(run_dir).bundle, backend='onnx', bs=3), load_predictor(Run(run_dir).bundle, backend='torch')
    for images in (test_images[:1], test_images[:5], test_images):
        a, b = onnx_p.predict(images), torch_p.predict(images)
        assert [r['label'] for r in a] == [r['label'] for r in b]
        assert np.abs(np.array([r['prob'] for r in a]) - np.array([r['prob'] for r in b])).max() < 1e-3


def test_export_refuses_when_parity_fails(run_dir, test_images, tmp_path, monkeypatch):
    bundle = copy_bundle(run_dir, tmp_path)
    def sloppy_export(model, size, dest, opset=None, dynamo=True):  # the real graph, plus 3 on one class's logit
        proto = onnx.load(str(Run(run_dir).bundle/ONNX_FILE))
        last = next(n for n in proto.graph.node if 'logits' in n.output)
        last.output[list(last.output).index('logits')] = 'raw'
        shift = np.zeros(len(read_config(bundle)['vocab']), dtype=np.float32); shift[1] = 3
        proto.graph.initializer.append(onnx.numpy_helper.from_array(shift, 'shift'))
        proto.graph.node.append(onnx.helper.make_node('Add', ['raw', 'shift'], ['logits']))
        onnx.save(proto, str(dest))
    monkeypatch.setattr(fi, '_torch_export', sloppy_export)
    with pytest.raises(BundleError, match='disagrees with PyTorch') as e: export_onnx(bundle, sample_images=test_images[:4])
    assert '\n' not in str(e.value) and ONNX_FILE in str(e.value)
    assert not (bundle/ONNX_FILE).exists() and 'onnx' not in read_config(bundle)
    assert load_predictor(bundle).backend == 'torch'  # the bundle goes on serving, with PyTorch


def test_legacy_exporter_and_opset(run_dir, test_images, tmp_path):
    bundle = copy_bundle(run_dir, tmp_path)
    export_onnx(bundle, opset=17, sample_images=test_images[:3], dynamo=False)
    record = read_config(bundle)['onnx']
    assert record['opset'] == 17 and record['parity']['ok'] and 'torchscript' in record['exporter']


def test_config_rewrite_keeps_every_key(run_dir, tmp_path):
    bundle = copy_bundle(run_dir, tmp_path)
    before = json.loads((bundle/'config.json').read_text())
    update_config(bundle, 'onnx', None)
    after = json.loads((bundle/'config.json').read_text())
    assert after == {k: v for k, v in before.items() if k != 'onnx'} and list(before)[:-1] == list(after)


# --- damaged files ------------------------------------------------------------------------------------------------------------

def one_line_error(bundle, **kw):
    with pytest.raises(BundleError) as e: load_predictor(bundle, **kw)
    msg = str(e.value)
    assert '\n' not in msg and str(bundle/ONNX_FILE) in msg
    return msg


def test_truncated_onnx_is_a_clear_error(run_dir, tmp_path):
    bundle = copy_bundle(run_dir, tmp_path)
    with open(bundle/ONNX_FILE, 'r+b') as f: f.truncate(2000)
    assert 'sha256' in one_line_error(bundle) and 'export-onnx' in one_line_error(bundle, backend='onnx')


def test_garbage_onnx_with_matching_record_is_a_clear_error(run_dir, tmp_path):
    "Even when the record was rewritten to match, a file ONNX Runtime cannot load fails with one line naming it."
    bundle = copy_bundle(run_dir, tmp_path)
    (bundle/ONNX_FILE).write_bytes(b'\x08\x07garbage' * 100)
    update_config(bundle, 'onnx', {**read_config(bundle)['onnx'], 'sha256': fi._sha256(bundle/ONNX_FILE)})
    assert 'not a loadable ONNX model' in one_line_error(bundle)


def test_unrecorded_or_stale_onnx_is_refused(run_dir, tmp_path):
    bundle = copy_bundle(run_dir, tmp_path)
    record = read_config(bundle)['onnx']
    update_config(bundle, 'onnx', None)
    assert 'not recorded' in one_line_error(bundle)
    update_config(bundle, 'onnx', {**record, 'weights_sha256': '0' * 64})
    assert 'other weights' in one_line_error(bundle)


# --- backends -------------------------------------------------------------------------------------------------------------------

def test_auto_picks_onnx_when_present(run_dir, tmp_path, test_images):
    auto = load_predictor(run_dir)  # a run folder works too
    assert auto.backend == 'onnx' and auto.size == 32 and auto.threshold == 0.5 and auto.vocab == read_config(Run(run_dir).bundle)['vocab']
    plain = copy_bundle(run_dir, tmp_path); (plain/ONNX_FILE).unlink()
    assert load_predictor(plain).backend == 'torch'
    with pytest.raises(BundleError, match='export-onnx'): load_predictor(plain, backend='onnx')
    with pytest.raises(ValueError, match='backend'): load_predictor(plain, backend='tflite')
    r = auto.predict(test_images[0], top_k=3)[0]
    assert set(r) == {'label', 'prob', 'top_k', 'sure', 'distance', 'known'} and len(r['top_k']) == 3 and r['top_k'][0] == (r['label'], r['prob'])
    assert r['sure'] == (r['prob'] >= 0.5)


def test_serving_imports_no_fastai_and_onnxruntime_lazily(run_dir):
    code = f"""
import sys
from PIL import Image
import foodvision.infer as fi
lazy = not {{'onnx', 'onnxruntime'}} & set(sys.modules)
p = fi.load_predictor({str(run_dir)!r})
r = p.predict(Image.new('RGB', (40, 30), 'red'))[0]
print(p.backend, lazy, any(m.split('.')[0] == 'fastai' for m in sys.modules), r['label'] in p.vocab)
"""
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ['onnx', 'True', 'False', 'True']


# --- predict over files -------------------------------------------------------------------------------------------------------

@pytest.fixture
def photos(run_dir, tmp_path):
    store = Store(json.loads(Run(run_dir).config_file.read_text())['store'])
    folder = tmp_path/'photos'; (folder/'sub').mkdir(parents=True)
    paths = list(store.items(split='test').path)
    shutil.copy(paths[0], folder/'a_good.jpg')
    (folder/'b_broken.jpg').write_bytes(b'<html>not a photo</html>')
    (folder/'c_bomb.png').write_bytes(png_declaring(100_000, 100_000))
    shutil.copy(paths[1], folder/'sub'/'d_good.jpg')
    (folder/'notes.txt').write_text('skipped: not an image file')
    return folder


def test_predict_folder_reports_bad_files_and_goes_on(run_dir, photos):
    results = predict(Run(run_dir).bundle, [photos, (photos/'a_good.jpg').read_bytes()], top_k=2, bs=2)
    assert [Path(r['path']).name if r['path'] else None for r in results] == ['a_good.jpg', 'b_broken.jpg', 'c_bomb.png', 'd_good.jpg', None]
    good, broken, bomb, good2, raw = results
    assert 'not a decodable image' in broken['error'] and 'decompression bomb' in bomb['error']
    assert set(broken) == set(bomb) == {'path', 'error'}
    assert set(good) == set(good2) == {'path', 'label', 'prob', 'top_k', 'sure', 'distance', 'known'} and len(good['top_k']) == 2
    assert raw['label'] == good['label'] and abs(raw['prob'] - good['prob']) < 1e-6
    assert predict(run_dir, photos/'missing.jpg')[0]['error'] == 'no such file or folder'


def test_predict_with_a_predictor_matches_torch(run_dir, photos):
    onnx_rows = predict(load_predictor(run_dir), [photos])
    torch_rows = predict(run_dir, [photos], backend='torch')
    assert [r.get('label') for r in onnx_rows] == [r.get('label') for r in torch_rows]
    with pytest.raises(ValueError, match='runs onnx'): predict(load_predictor(run_dir), photos, backend='torch')


def test_predict_command_prints_to_stdout_by_default(run_dir, photos, capsys):
    assert predict_command(run_dir, [str(photos/'b_broken.jpg')]) == 1
    assert capsys.readouterr().out.strip() == f"{photos/'b_broken.jpg'}  error: not a decodable image"


def test_predict_command_json_lines_and_exit_code(run_dir, photos):
    out = io.StringIO()
    assert predict_command(Run(run_dir).bundle, [str(photos)], top_k=3, as_json=True, out=out) == 1
    rows = [json.loads(line) for line in out.getvalue().splitlines()]
    assert len(rows) == 4 and sum('error' in r for r in rows) == 2
    ok = [r for r in rows if 'error' not in r]
    assert all(len(r['top_k']) == 3 and r['top_k'][0] == [r['label'], r['prob']] and isinstance(r['sure'], bool) for r in ok)
    out = io.StringIO()
    assert predict_command(run_dir, [str(photos/'a_good.jpg')], out=out) == 0
    path, label, prob, *rest = out.getvalue().split()
    assert path.endswith('a_good.jpg') and label in read_config(Run(run_dir).bundle)['vocab'] and 0 < float(prob) <= 1


def test_export_command_without_store_uses_noise(run_dir, tmp_path):
    bundle = copy_bundle(run_dir, tmp_path)  # a bundle alone: no run config beside it
    images, what = fi._check_images(bundle, 5)
    assert len(images) == 5 and 'random-noise' in what and images[0].size != (32, 32)


# --- a bundle with a gate -----------------------------------------------------------------------------------------------------

@pytest.fixture(scope='module')
def gated_dir(run_dir, tmp_path_factory):
    "A copy of the run's bundle (with its ONNX export) and a gate fitted on its store's training and validation images."
    bundle = Path(shutil.copytree(Run(run_dir).bundle, tmp_path_factory.mktemp('gated')/'bundle'))
    store = Store(json.loads(Run(run_dir).config_file.read_text())['store'])
    save_gate(bundle, fit_gate_on_items(load_bundle(bundle), store.items(split='train'), store.items(split='valid')))
    return bundle


def test_both_backends_measure_the_same_gate_distance(gated_dir, test_images):
    onnx_p, torch_p = load_predictor(gated_dir, bs=3), load_predictor(gated_dir, backend='torch')
    assert onnx_p.backend == 'onnx' and onnx_p.gate.max_distance == torch_p.gate.max_distance
    a, b = onnx_p.predict(test_images), torch_p.predict(test_images)
    assert [r['known'] for r in a] == [r['known'] for r in b]
    assert max(abs(x['distance'] - y['distance']) for x, y in zip(a, b)) < 1e-5
    p = check_onnx_parity(gated_dir, test_images)
    assert p['ok'] and p['max_feature_diff'] < 1e-5


def test_export_refuses_when_the_features_disagree(run_dir, test_images, tmp_path, monkeypatch):
    "An exporter bug in the features alone: every probability and top class agrees, and the export is still refused."
    bundle = copy_bundle(run_dir, tmp_path)
    def sloppy_export(model, size, dest, opset=None, dynamo=True):  # the real graph, plus 1 on one pooled feature
        proto = onnx.load(str(Run(run_dir).bundle/ONNX_FILE))
        last = next(n for n in proto.graph.node if 'features' in n.output)
        last.output[list(last.output).index('features')] = 'raw'
        shift = np.zeros(512, dtype=np.float32); shift[1] = 1.0
        proto.graph.initializer.append(onnx.numpy_helper.from_array(shift, 'shift'))
        proto.graph.node.append(onnx.helper.make_node('Add', ['raw', 'shift'], ['features']))
        onnx.save(proto, str(dest))
    monkeypatch.setattr(fi, '_torch_export', sloppy_export)
    with pytest.raises(BundleError, match='disagrees with PyTorch') as e: export_onnx(bundle, sample_images=test_images[:4])
    msg = str(e.value)
    prob_diff, feature_diff = (float(re.search(rf'max \|{what} difference\| (\S+?),? ', msg).group(1)) for what in ('prob', 'unit feature'))
    assert 'top-1 agreement 4/4' in msg and prob_diff < 1e-5 and feature_diff > 0.1, msg
    assert not (bundle/ONNX_FILE).exists() and 'onnx' not in read_config(bundle)


def test_an_onnx_file_without_features_cannot_serve_a_gate(gated_dir, tmp_path, test_images):
    bundle = Path(shutil.copytree(gated_dir, tmp_path/'old'))
    proto = onnx.load(str(bundle/ONNX_FILE))
    del proto.graph.output[1]  # a graph as exported before the gate existed: logits only
    onnx.save(proto, str(bundle/ONNX_FILE))
    record = {**read_config(bundle)['onnx'], 'sha256': fi._sha256(bundle/ONNX_FILE)}
    update_config(bundle, 'onnx', record)
    assert 'gives no features' in one_line_error(bundle)
    update_config(bundle, 'onnx', {k: v for k, v in record.items() if k != 'features'})
    assert 'exported without the features' in one_line_error(bundle)
    update_config(bundle, 'gate', None)  # without a gate, the old graph serves as before
    p = load_predictor(bundle)
    r = p.predict(test_images[0])[0]
    assert p.backend == 'onnx' and p.gate is None and r['known'] is True and r['distance'] is None


def test_outside_the_gate_in_command_output(gated_dir, tmp_path, photos):
    bundle = Path(shutil.copytree(gated_dir, tmp_path/'strict'))
    save_gate(bundle, FeatureGate(load_predictor(bundle).gate.centroids, 0.0))  # a gate that lets nothing in
    out = io.StringIO()
    assert predict_command(bundle, [str(photos/'a_good.jpg')], out=out) == 0
    assert '(unlike the training photos: distance 0.' in out.getvalue()
    out = io.StringIO()
    predict_command(bundle, [str(photos/'a_good.jpg')], as_json=True, out=out)
    row = json.loads(out.getvalue())
    assert row['known'] is False and 0 < row['distance'] <= 2 and row['distance'] == round(row['distance'], 6)
