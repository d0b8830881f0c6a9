"""End to end: the Voilà dashboard in real headless Chromium opens on the cleaner, says in plain words what each card is,
relabels and quarantines, and labels an inbox photo with its pre-label through the UI; the store records every change.
Screenshots stay in $FOODVISION_SCREENSHOT_DIR, else tests/artifacts/ (which ignores itself in git).

Needs Debian's `chromium` at /usr/bin/chromium (never a Playwright-downloaded browser) plus the `playwright`, `voila` and
`ipywidgets` Python packages. Skipped, with that reason, only when /usr/bin/chromium is missing."""
import json, os, secrets, signal, socket, subprocess, sys, time, urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from foodvision.draw import synth_jpeg
from foodvision.issues import issues_table, most_wrong, ranked, top_losses, write_issues
from foodvision.store import Store
from foodvision.synth import synth_store
from fakes import fake_predictions

CHROMIUM = Path('/usr/bin/chromium')
ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT/'nbs'/'dashboard.ipynb'
CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking',
                 '--disable-component-update', '--disable-sync']

PNG = b'\x89PNG\r\n\x1a\n'
DEVELOPER_TEXT = ['token', 'FOODVISION_STORE', 'voila nbs/dashboard.ipynb', 'SSH tunnel']  # the serving instructions

def screenshot_dir()->Path:
    "Where the test keeps its screenshots: $FOODVISION_SCREENSHOT_DIR, else tests/artifacts/ (ignored by git through its own .gitignore)."
    if os.environ.get('FOODVISION_SCREENSHOT_DIR'): d = Path(os.environ['FOODVISION_SCREENSHOT_DIR'])
    else:
        d = ROOT/'tests'/'artifacts'; d.mkdir(parents=True, exist_ok=True); (d/'.gitignore').write_text('*\n')
    d.mkdir(parents=True, exist_ok=True)
    return d

pytestmark = [pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium (apt-get install chromium)"),
              pytest.mark.timeout(180)]

def free_port()->int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); return s.getsockname()[1]


@pytest.fixture
def store_and_run(tmp_path):
    "A tiny store with two photos in its inbox, and a run with what the dashboard reads: config, evaluation, issues with an 'inbox' ranking."
    store = Store.create(tmp_path/'store')
    synth_store(store, n=18, size=32, seed=0)
    run = tmp_path/'runs'/'20260101-000000-resnet18-e2e000'
    (run/'eval').mkdir(parents=True)
    (run/'config.json').write_text(json.dumps(dict(run_id=run.name, arch='resnet18', store=str(store.path))))
    preds = fake_predictions(store)
    for split, t in preds.groupby('split'): t.to_parquet(run/'eval'/f'predictions-{split}.parquet', index=False)
    pre = sorted(preds.label.unique())[:2]
    waiting = store.add_to_inbox([dict(data=synth_jpeg(c, seed=5, index=k, size=32)) for k, c in enumerate(pre)]).added
    inbox = issues_table([ranked('inbox', pd.DataFrame(dict(item_id=waiting, score=[0.9, 0.8], is_issue=True, suggested_label=pre,
                                                            label_quality=[0.994, 0.7], detail='pre-label')))])
    write_issues(pd.concat([issues_table([most_wrong(preds), top_losses(preds)], table=preds),
                            inbox.assign(pred=inbox.suggested_label, prob=inbox.label_quality)]), run)
    return store, run, preds, dict(zip(waiting, pre))


@pytest.fixture
def voila(store_and_run, tmp_path):
    "Voilà serving the dashboard on 127.0.0.1 with a token; always stopped (with its kernels) at the end."
    store, run, *_ = store_and_run
    port, token = free_port(), secrets.token_hex(16)
    env = dict(os.environ, FOODVISION_STORE=str(store.path), FOODVISION_RUN=str(run), FOODVISION_PAGE_SIZE='6',
               PYTHONUNBUFFERED='1')
    log = open(tmp_path/'voila.log', 'wb')
    proc = subprocess.Popen([sys.executable, '-m', 'voila', str(DASHBOARD), '--no-browser', '--Voila.ip=127.0.0.1',
                             f'--port={port}', f'--token={token}', '--Voila.port_retries=0', '--show_tracebacks=True'],
                            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + 30
        while True:
            if proc.poll() is not None: pytest.fail(f"voila exited: {(tmp_path/'voila.log').read_text()[-2000:]}")
            try:
                with socket.create_connection(('127.0.0.1', port), timeout=1): break
            except OSError:
                if time.time() > deadline: pytest.fail(f"voila did not listen: {(tmp_path/'voila.log').read_text()[-2000:]}")
                time.sleep(0.3)
        yield f"http://127.0.0.1:{port}/?token={token}", tmp_path/'voila.log'
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try: proc.wait(timeout=10)
            except subprocess.TimeoutExpired: os.killpg(proc.pid, signal.SIGKILL); proc.wait(timeout=10)
        log.close()


def test_dashboard_relabel_quarantine_and_label_the_inbox_in_chromium(store_and_run, voila, tmp_path):
    from playwright.sync_api import sync_playwright
    store, run, preds, waiting = store_and_run
    url, log = voila
    wrong = preds[~preds.correct].sort_values('prob', ascending=False)  # the page-one order of 'most_wrong'
    a, b = wrong.item_id.iloc[0], wrong.item_id.iloc[1]
    new_a = wrong.pred.iloc[0]
    words_a = f"Labelled {wrong.label.iloc[0]} · model says {new_a} ({wrong.prob.iloc[0]:.0%} sure)"
    (w0, pre0), = list(waiting.items())[:1]
    shots = screenshot_dir()
    for old in ('dashboard.png', 'dashboard-inbox.png'): (shots/old).unlink(missing_ok=True)
    # the token is enforced: without it voila answers with its login page, not the dashboard
    with urllib.request.urlopen(url.split('?')[0], timeout=30) as r: assert '/login' in r.url
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport=dict(width=1280, height=1000))
            page.goto(url, timeout=60_000)
            try:
                page.wait_for_selector(f'.fv-item-{a} select', timeout=60_000)
                # it opens on the cleaner: the cards speak plainly, the serving instructions are not shown
                assert words_a in page.inner_text(f'.fv-item-{a} .fv-caption')
                body = page.inner_text('body')
                assert not [t for t in DEVELOPER_TEXT if t in body], body[:2000]
                page.screenshot(path=str(shots/'dashboard.png'), full_page=True)
                page.select_option(f'.fv-item-{a} select', label=f'relabel: {new_a}')
                page.select_option(f'.fv-item-{b} select', label='quarantine')
                page.wait_for_function("document.querySelector('.fv-summary').innerText.includes('1 relabel, 1 quarantine')", timeout=20_000)
                page.click('.fv-apply')
                page.wait_for_function("document.querySelector('.fv-status').innerText.includes('applied 2')", timeout=20_000)
                # the inbox: one click accepts the pre-label
                page.select_option('.fv-ranking select', label='inbox')
                page.wait_for_selector(f'.fv-item-{w0} .fv-caption', timeout=20_000)
                assert f"Not labelled yet · model suggests {pre0} (99% sure)" in page.inner_text(f'.fv-item-{w0} .fv-caption')
                page.screenshot(path=str(shots/'dashboard-inbox.png'), full_page=True)
                page.click(f'.fv-item-{w0} .fv-accept-prelabel')
                page.wait_for_function("document.querySelector('.fv-summary').innerText.includes('1 first label')", timeout=20_000)
                page.click('.fv-apply')
                page.wait_for_function("document.querySelector('.fv-status').innerText.includes('applied 1')", timeout=20_000)
            except Exception:
                page.screenshot(path=str(shots/'dashboard-failure.png'), full_page=True)
                print(log.read_text()[-3000:])
                raise
        finally: browser.close()
    for name in ('dashboard.png', 'dashboard-inbox.png'):
        data = (shots/name).read_bytes()
        assert len(data) > 1000 and data.startswith(PNG), name
    ev = store.events()
    done = ev[ev.action.isin(['relabel', 'quarantine'])]
    assert done[['item_id', 'action', 'new']].values.tolist() == [[a, 'relabel', new_a], [b, 'quarantine', 'quarantined']]
    assert set(done.actor) == {'human'} and set(done.run_id) == {run.name}
    assert len(set(done.batch)) == 1  # one transaction for the whole apply
    labelled = ev[ev.action == 'label']
    assert labelled[['item_id', 'new', 'actor', 'run_id']].values.tolist() == [[w0, pre0, 'human', run.name]]
    state = store.items(status=None).set_index('id')
    assert state.at[a, 'label'] == new_a and state.at[b, 'status'] == 'quarantined'
    assert (state.at[w0, 'label'], state.at[w0, 'status']) == (pre0, 'active') and set(store.inbox().id) == set(waiting) - {w0}

