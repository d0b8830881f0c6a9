"""Copy the files foodvision ships besides its modules from nbs/ into the package (nbs/ stays their source).

The cleaner dashboard, nbs/dashboard.ipynb, is served by `foodvision review` from an installed package too, so the
wheel carries a copy: foodvision/dashboard.ipynb (listed in pyproject.toml's [tool.setuptools.package-data]).
Usage: python scripts/package_data.py [--check]  (--check: exit 1 if a copy is stale, writing nothing)"""
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COPIES = {ROOT/'nbs'/'dashboard.ipynb': ROOT/'foodvision'/'dashboard.ipynb'}  # source -> packaged copy

def stale()->list:
    "The packaged copies whose bytes differ from their source."
    return [dst for src, dst in COPIES.items() if not dst.exists() or dst.read_bytes() != src.read_bytes()]

def main():
    todo = stale()
    if '--check' in sys.argv:
        for dst in todo: print(f"{dst.relative_to(ROOT)} is stale: run `python scripts/package_data.py`", file=sys.stderr)
        return 1 if todo else 0
    for src, dst in COPIES.items():
        if dst in todo: dst.write_bytes(src.read_bytes()); print(f"wrote {dst.relative_to(ROOT)}")
    return 0

if __name__ == '__main__': sys.exit(main())
