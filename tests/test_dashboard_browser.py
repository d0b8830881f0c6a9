"""End to end: the Voilà dashboard in real headless Chromium relabels and quarantines through the UI and the store records both.

Needs Debian's `chromium` at /usr/bin/chromium (never a Playwright-downloaded browser) plus the `playwright`, `voila` and
`ipywidgets` Python packages. Skipped, with that reason, only when /usr/bin/chromium is missing."""
import json, os, secrets, signal, socket, subprocess, sys, time, urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from foodvision.store import Store
from foodvision.synth import synth_store
from fakes import fake_predictions

CHROMIUM = Path('/usr/bin/chromium')
ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT/'nbs'/'dashboard.ipynb'
CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking',
                 '--disable-component-update', '--disable-sync']

pytestmark = [pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium (apt-get install chromium)"),
              pytest.mark.timeout(180)]

def free_port()->int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); return s.getsockname()[1]


@pytest.fixture
def store_and_run(tmp_path):
    "A tiny store and a run folder holding only what the dashboard reads: config.json and the evaluation tables."
    store = Store.create(tmp_path/'store')
    synth_store(store, n=18, size=32, seed=0)
    run = tmp_path/'runs'/'20260101-000000-resnet18-e2e000'
    (run/'eval').mkdir(parents=True)
    (run/'config.json').write_text(json.dumps(dict(run_id=run.name, arch='resnet18', store=str(store.path))))
    preds = fake_predictions(store)
    for split, t in preds.groupby('split'): t.to_parquet(run/'eval'/f'predictions-{split}.parquet', index=False)
    return store, run, preds


@pytest.fixture
def voila(store_and_run, tmp_path):
    "Voilà serving the dashboard on 127.0.0.1 with a token; always stopped (with its kernels) at the end."
    store, run, _ = store_and_run
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


def test_dashboard_relabel_and_quarantine_in_chromium(store_and_run, voila, tmp_path):
    from playwright.sync_api import sync_playwright
    store, run, preds = store_and_run
    url, log = voila
    wrong = preds[~preds.correct].sort_values('prob', ascending=False)  # the page-one order of 'most_wrong'
    a, b = wrong.item_id.iloc[0], wrong.item_id.iloc[1]
    new_a = wrong.pred.iloc[0]
    # the token is enforced: without it voila answers with its login page, not the dashboard
    with urllib.request.urlopen(url.split('?')[0], timeout=30) as r: assert '/login' in r.url
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.goto(url, timeout=60_000)
            try:
                page.wait_for_selector(f'.fv-item-{a} select', timeout=60_000)
                page.select_option(f'.fv-item-{a} select', label=f'relabel: {new_a}')
                page.select_option(f'.fv-item-{b} select', label='quarantine')
                page.wait_for_function("document.querySelector('.fv-summary').innerText.includes('1 relabel, 1 quarantine')", timeout=20_000)
                page.click('.fv-apply')
                page.wait_for_function("document.querySelector('.fv-status').innerText.includes('applied 2')", timeout=20_000)
            except Exception:
                page.screenshot(path=str(tmp_path/'dashboard.png'), full_page=True)
                print(log.read_text()[-3000:])
                raise
        finally: browser.close()
    ev = store.events()
    done = ev[ev.action.isin(['relabel', 'quarantine'])]
    assert done[['item_id', 'action', 'new']].values.tolist() == [[a, 'relabel', new_a], [b, 'quarantine', 'quarantined']]
    assert set(done.actor) == {'human'} and set(done.run_id) == {run.name}
    assert len(set(done.batch)) == 1  # one transaction for the whole apply
    state = store.items(status=None).set_index('id')
    assert state.at[a, 'label'] == new_a and state.at[b, 'status'] == 'quarantined'
