"""The README's main job, shortened: `foodvision demo` runs the whole loop and writes a report; its errors are one line."""
import json, subprocess, sys
from pathlib import Path

from foodvision.run import Run, run_config

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
    first, second = [run_config(p)['dataset_version'] for p in runs]
    fixes = summary['fixes']
    assert fixes['accepted'] + fixes['quarantined'] > 0 and fixes['correct'] + fixes['quarantined_flipped'] > 0, fixes  # something was fixed
    assert first != second, 'the store changed and the retrain learned from the new dataset version'
    assert (Run(runs[-1]).bundle/'model.onnx').exists()
    html = (out/'report'/'report.html').read_text()
    for needle in ['Accuracy on the clean test tier', 'Label fixes against the known truth', 'confusion-before.png', 'Lineage']:
        assert needle in html
    for img in ['accuracy.png', 'confusion-before.png', 'confusion-after.png']: assert (out/'report'/img).exists()
    from foodvision.store import Store
    ev = Store(summary['store']).events()
    done = ev[ev.action.isin(['relabel', 'quarantine'])]
    assert (done.action == 'relabel').sum() == fixes['accepted'] and (done.action == 'quarantine').sum() == fixes['quarantined']
    assert set(done.actor) == {'auto'} and done.batch.nunique() == 1, 'one audited batch per round'
    assert set(done.run_id) == {runs[0].name}, 'each fix names the run that suggested it'


def test_flywheel_demo_writes_the_report_with_the_curves_and_the_table(tmp_path):
    out = tmp_path/'fw'
    r = subprocess.run([FV, 'demo', str(out), '--flywheel', '--n', '180', '--size', '32', '--train-size', '64',
                        '--flywheel-budget', '10', '--flywheel-rounds', '2'], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    report = out/'report'
    md, html = (report/'report.md').read_text(), (report/'report.html').read_text()
    assert (report/'flywheel.png').stat().st_size > 10_000 and '(flywheel.png)' in md and '<img src="flywheel.png"' in html
    assert 'Accuracy against labels used' in md and '| strategy ' in md and 'labels to 95% of all' in md
    assert 'Guarded auto-labelling' in md and 'measured_precision' in md
    fw = json.loads((out/'summary.json').read_text())['flywheel']
    assert set(fw['curves']) == {'random', 'margin', 'entropy', 'diversity', 'class_need', 'hybrid'}
    assert all([c['labels'] for c in curve] == [13, 23, 33] for curve in fw['curves'].values())
    from foodvision.store import Store
    ev = Store(fw['stores']['hybrid']).events()
    assert (ev[ev.reason.fillna('').str.startswith('flywheel round')].action == 'label').sum() == 20  # through the store, audited


def test_demo_refuses_a_used_folder(tmp_path):
    (tmp_path/'x').mkdir(); (tmp_path/'x'/'keep.txt').write_text('mine')
    r = subprocess.run([FV, 'demo', str(tmp_path/'x')], capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1 and 'not empty' in r.stderr
    assert (tmp_path/'x'/'keep.txt').read_text() == 'mine'
