"""README.md is generated from nbs/index.ipynb (Quarto, and so nbdev-readme, cannot run here)."""
import subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_readme_is_fresh():
    r = subprocess.run([sys.executable, 'scripts/make_readme.py', '--check'], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_readme_names_the_two_commands_and_ci_runs_the_test_one():
    readme = (ROOT/'README.md').read_text()
    assert 'make demo' in readme and 'make test' in readme
    assert 'make test' in (ROOT/'.ci'/'run').read_text()


def test_pyproject_flags_are_a_toml_list():
    import tomllib
    cfg = tomllib.loads((ROOT/'pyproject.toml').read_text())
    assert cfg['tool']['nbdev']['tst_flags'] == ['notest', 'slow', 'cuda', 'net']
    assert any(d.startswith('nbdev==') for d in cfg['project']['optional-dependencies']['dev'])
