"""Installed as a user installs it: a wheel built from this checkout, in a fresh virtual environment, serves the dashboard.

The scratch environment reuses .venv's packages (torch & co are not reinstalled) but imports foodvision only from the wheel,
and everything runs from a temporary working directory, so nothing of the checkout can stand in for what the wheel lacks."""
import json, os, shutil, signal, socket, subprocess, sys, sysconfig, time, urllib.request
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from foodvision.run import Run
from foodvision.store import Store

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.timeout(240)


def sh(*cmd, **kw): return subprocess.run([str(c) for c in cmd], check=True, capture_output=True, text=True, timeout=180, **kw)


@pytest.fixture(scope='module')
def venv(tmp_path_factory):
    "A scratch venv with only the wheel of this checkout installed (dependencies: .venv's, through a .pth)."
    tmp = tmp_path_factory.mktemp('wheel')
    src = tmp/'src'; src.mkdir()  # build from a copy: the shared checkout gets no build/ or egg-info from this test
    for f in ('pyproject.toml', 'README.md'): shutil.copy(ROOT/f, src)
    shutil.copytree(ROOT/'foodvision', src/'foodvision', ignore=shutil.ignore_patterns('__pycache__'))
    sh(sys.executable, '-m', 'pip', 'wheel', '-q', '--no-deps', '--no-build-isolation', '-w', tmp/'dist', src)
    (wheel,) = (tmp/'dist').glob('foodvision-*.whl')
    env = tmp/'venv'
    sh(sys.executable, '-m', 'venv', '--system-site-packages', '--without-pip', env)
    py = env/'bin'/'python'
    purelib = sh(py, '-c', 'import sysconfig; print(sysconfig.get_paths()["purelib"])').stdout.strip()
    # .venv is itself a venv, so --system-site-packages reaches the base Python, not .venv's packages: name those in a .pth
    # (a plain path line: .venv's own .pth files, among them the editable install of this checkout, are not read)
    Path(purelib, 'foodvision-deps.pth').write_text(sysconfig.get_paths()['purelib'] + '\n')
    sh(sys.executable, '-m', 'pip', '--python', py, 'install', '-q', '--no-deps', '--no-index', wheel)
    # the same for the data files voila and nbconvert install (templates, widget extensions): all of .venv's but its kernels,
    # so that Jupyter falls back to the scratch Python's own kernel
    share = env/'share'/'jupyter'; share.mkdir(parents=True)
    for d in (Path(sys.prefix)/'share'/'jupyter').iterdir():
        if d.name != 'kernels': (share/d.name).symlink_to(d)
    return env


def test_the_wheel_is_what_the_scratch_venv_imports(venv, tmp_path):
    out = sh(venv/'bin'/'python', '-c', 'import foodvision.cli as c; print(c.__file__); print(c.dashboard_notebook())', cwd=tmp_path).stdout.split()
    assert all(Path(p).is_relative_to(venv) for p in out), out
    assert Path(out[1]).read_bytes() == (ROOT/'nbs'/'dashboard.ipynb').read_bytes(), 'the packaged dashboard is nbs/dashboard.ipynb'


def free_port()->int:
    with socket.socket() as s: s.bind(('127.0.0.1', 0)); return s.getsockname()[1]


def test_review_serves_the_dashboard_from_the_installed_package(venv, tmp_path):
    photos = tmp_path/'photos'
    for label, colour in [('pizza', 'red'), ('sushi', 'white')]:
        (photos/label).mkdir(parents=True)
        for i in range(2): Image.new('RGB', (16 + i, 16), colour).save(photos/label/f'{i}.jpg')
    store = Store.create(tmp_path/'store'); store.import_path(photos)
    items = store.items()
    run = Run(tmp_path/'runs'/'r1'); run.path.mkdir(parents=True)
    run.config_file.write_text(json.dumps(dict(run_id='r1', store=str(store.path))))
    pd.DataFrame(dict(ranking='most_wrong', item_id=items.id, rank=range(1, len(items) + 1), score=0.9, label_quality=0.1,
                      suggested_label=items.label[::-1].values, is_issue=True, detail='')).to_parquet(run.issues_file())
    port, token = free_port(), 'wheel-test-token'
    server = subprocess.Popen([venv/'bin'/'foodvision', 'review', store.path, run.path, '--port', str(port), '--token', token],
                              cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        page, deadline = None, time.monotonic() + 120
        while page is None and time.monotonic() < deadline and server.poll() is None:
            try: page = urllib.request.urlopen(f'http://127.0.0.1:{port}/?token={token}', timeout=90).read().decode()
            except OSError: time.sleep(1)
        assert page is not None, f"no page (server exit code {server.poll()})"
        assert 'Cleaning dashboard' in page
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try: out = server.communicate(timeout=20)[0]
        except subprocess.TimeoutExpired: os.killpg(server.pid, signal.SIGKILL); out = server.communicate()[0]
    assert f'review: http://127.0.0.1:{port}/?token={token}' in out and 'Kernel started' in out, out[-2000:]


def test_the_check_step_of_make_test_leaves_pyproject_alone(tmp_path):
    "scripts/check_sync.py runs nbdev-export and nbdev-clean; pyproject.toml must keep its mtime, or `make` reinstalls the package."
    copy = tmp_path/'checkout'
    for d in ('nbs', 'foodvision', 'scripts'): shutil.copytree(ROOT/d, copy/d, ignore=shutil.ignore_patterns('__pycache__'))
    shutil.copy(ROOT/'pyproject.toml', copy)
    os.utime(copy/'pyproject.toml', (1e9, 1e9))
    before = (copy/'pyproject.toml').stat().st_mtime_ns
    subprocess.run([sys.executable, copy/'scripts'/'check_sync.py'], cwd=copy, capture_output=True, timeout=300)  # its verdict is make test's
    assert (copy/'pyproject.toml').stat().st_mtime_ns == before
    assert (copy/'pyproject.toml').read_bytes() == (ROOT/'pyproject.toml').read_bytes()
