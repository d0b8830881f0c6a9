"""The documentation check: Quarto (nbdev-docs) cannot be installed on our machines, so every notebook is rendered to
HTML with nbconvert here — no errors, no missing images, a title on every page — and nbs/_quarto.yml stays valid for
nbdev-docs wherever Quarto exists. (Executing the notebooks is nbdev-test's job.)"""
import re
from pathlib import Path

import nbformat
import pytest
import yaml
from nbconvert import HTMLExporter

NBS = Path(__file__).resolve().parent.parent/'nbs'
NOTEBOOKS = sorted(NBS.glob('*.ipynb'))


def test_there_are_notebooks():
    assert len(NOTEBOOKS) >= 10


@pytest.mark.parametrize('nb_path', NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_renders_to_html(nb_path, tmp_path):
    nb = nbformat.read(nb_path, as_version=4)
    nbformat.validate(nb)
    body, resources = HTMLExporter(template_name='lab').from_notebook_node(nb)
    assert '<html' in body and len(body) > 1000
    md = '\n'.join(c.source for c in nb.cells if c.cell_type == 'markdown')
    assert re.search(r'^# \S', md, flags=re.M), f"{nb_path.name} has no H1 title"
    for src in re.findall(r'<img[^>]+src="([^"]+)"', body):
        if src.startswith(('data:', 'http://', 'https://')): continue
        assert (nb_path.parent/src).exists(), f"{nb_path.name}: missing image {src}"
    (tmp_path/nb_path.with_suffix('.html').name).write_text(body)


def test_module_notebooks_have_a_subtitle():
    for p in NOTEBOOKS:
        nb = nbformat.read(p, as_version=4)
        src = '\n'.join(c.source for c in nb.cells if c.cell_type == 'markdown')
        if p.name.startswith(tuple('0123456789')): assert re.search(r'^> \S', src, flags=re.M), f"{p.name} has no subtitle"


def test_quarto_config_is_ready_for_nbdev_docs():
    cfg = yaml.safe_load((NBS/'_quarto.yml').read_text())
    assert cfg['project']['type'] == 'website' and 'styles.css' in str(cfg['format']['html']['css'])
    sidebar = yaml.safe_load((NBS/'sidebar.yml').read_text())['website']['sidebar']['contents']
    listed = set(sidebar)
    missing = [p.name for p in NOTEBOOKS if p.name not in listed and p.name != 'dashboard.ipynb']
    assert not missing, f"notebooks missing from nbs/sidebar.yml: {missing}"
    assert all((NBS/s).exists() for s in sidebar), 'sidebar lists a notebook that does not exist'


def test_the_module_table_has_one_row_per_module_notebook():
    "README's 'Where things are' names every numbered notebook with the module it exports, and nothing that is gone."
    index = nbformat.read(NBS/'index.ipynb', as_version=4)
    table = '\n'.join(c.source for c in index.cells if c.cell_type == 'markdown' and '| notebook | module | what |' in c.source)
    rows = dict(re.findall(r'^\| `([^`]+)` \| `foodvision\.(\w+)` \|', table, flags=re.M))
    want = {}
    for p in NOTEBOOKS:
        if not p.name[0].isdigit(): continue
        src = '\n'.join(c.source for c in nbformat.read(p, as_version=4).cells if c.cell_type == 'code')
        m = re.search(r'^#\|\s*default_exp\s+(\S+)', src, flags=re.M)
        if m: want[p.stem] = m.group(1)
    assert rows == want, f"index.ipynb's module table differs: missing {sorted(set(want) - set(rows))}, gone {sorted(set(rows) - set(want))}, " \
                         f"wrong module {sorted(k for k in set(rows) & set(want) if rows[k] != want[k])}"
