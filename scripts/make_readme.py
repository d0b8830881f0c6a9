"""Write README.md from nbs/index.ipynb with nbconvert's Markdown exporter.

nbdev-readme needs Quarto, which cannot be installed on our machines; this does the same job:
hidden cells (`#| hide`) are dropped and nbdev's `#|` directives are stripped from code cells.
Usage: python scripts/make_readme.py [--check]  (--check: exit 1 if README.md is stale)"""
import re, sys
from pathlib import Path

import nbformat
from nbconvert import MarkdownExporter

ROOT = Path(__file__).resolve().parent.parent
HEADER = '<!-- WARNING: generated from nbs/index.ipynb by scripts/make_readme.py; edit the notebook, not this file. -->\n\n'
_directive = re.compile(r'^\s*#\|\s*(.*)$')

def directives(src):
    return [m.group(1).strip() for line in src.splitlines() if (m := _directive.match(line))]

def readme_text():
    nb = nbformat.read(ROOT/'nbs'/'index.ipynb', as_version=4)
    cells = []
    for c in nb.cells:
        flags = directives(c.source) if c.cell_type == 'code' else []
        if any(f.startswith(('hide', 'include: false')) for f in flags): continue
        if c.cell_type == 'code':
            c.source = '\n'.join(l for l in c.source.splitlines() if not _directive.match(l)).strip('\n')
        cells.append(c)
    nb.cells = cells
    body, _ = MarkdownExporter().from_notebook_node(nb)
    return HEADER + re.sub(r'\n{3,}', '\n\n', body).strip() + '\n'

def main():
    text, readme = readme_text(), ROOT/'README.md'
    if '--check' in sys.argv:
        if not readme.exists() or readme.read_text() != text:
            print('README.md is stale: run `python scripts/make_readme.py`', file=sys.stderr); return 1
        return 0
    readme.write_text(text); print(f"wrote {readme.relative_to(ROOT)}")
    return 0

if __name__ == '__main__': sys.exit(main())
