"""The README's main job, shortened: `foodvision demo` runs the whole loop and writes a report; its errors are one line."""
import json, subprocess, sys
from pathlib import Path

FV = str(Path(sys.executable).with_name('foodvision'))


def test_short_demo_runs_the_whole_loop(tmp_path):
    out = tmp_path/'demo'
    r = subprocess.run([FV, 'demo', str(out), '--n', '180', '--size', '32', '--epochs', '2', '--bs', '32', '--rounds', '1'],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert 'clean test accuracy: before' in r.stdout and 'label fixes:' in r.stdout and 'foodvision app' in r.stdout
    summary = json.loads((out/'summary.json').read_text())
    assert len(summary['runs']) == 2 and summary['test_accuracy']['ceiling'] is not None
    runs = [Path(p) for p in summary['runs']]
    first, second = [json.loads((p/'config.json').read_text())['dataset_version'] for p in runs]
    assert first != second or summary['fixes']['accepted'] == 0, 'the retrain learned from the new dataset version'
    assert (runs[-1]/'bundle'/'model.onnx').exists()
    html = (out/'report'/'report.html').read_text()
    for needle in ['Accuracy on the clean test tier', 'Label fixes against the known truth', 'confusion-before.png', 'Lineage']:
        assert needle in html
    for img in ['accuracy.png', 'confusion-before.png', 'confusion-after.png']: assert (out/'report'/img).exists()
    from foodvision.store import Store
    ev = Store(summary['store']).events()
    fixes = ev[ev.action == 'relabel']
    assert len(fixes) == summary['fixes']['accepted'] and set(fixes.actor) <= {'auto'}
    assert set(fixes.run_id) <= {runs[0].name}, 'each fix names the run that suggested it'


def test_demo_refuses_a_used_folder(tmp_path):
    (tmp_path/'x').mkdir(); (tmp_path/'x'/'keep.txt').write_text('mine')
    r = subprocess.run([FV, 'demo', str(tmp_path/'x')], capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1 and 'not empty' in r.stderr
    assert (tmp_path/'x'/'keep.txt').read_text() == 'mine'
