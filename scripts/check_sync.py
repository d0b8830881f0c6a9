"""Fail if foodvision/ is out of sync with nbs/ (modules or packaged data) or if notebooks are not clean.

Runs nbdev-export and nbdev-clean and compares file contents before and after, so it works on a
fresh clone and in a working tree with uncommitted changes alike. Neither rewrites pyproject.toml
(`update_pyproject = false`), so `make test` leaves the install stamp's prerequisite alone."""
import hashlib, subprocess, sys
from pathlib import Path

import package_data  # scripts/package_data.py: the packaged copies of files in nbs/

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent  # nbdev's commands live beside the interpreter running this script

def digest(pattern):
    return {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in ROOT.glob(pattern)}

def changed_by(cmd, pattern):
    before = digest(pattern)
    subprocess.run(cmd, cwd=ROOT, check=True)
    after = digest(pattern)
    return sorted(str(p.relative_to(ROOT)) for p in before.keys() | after.keys() if before.get(p) != after.get(p))

def main():
    problems = []
    if stale := changed_by([str(BIN/'nbdev-export')], 'foodvision/**/*.py'):
        problems.append(f"library out of sync with notebooks (nbdev-export changed: {', '.join(stale)})")
    if dirty := changed_by([str(BIN/'nbdev-clean')], 'nbs/**/*.ipynb'):
        problems.append(f"notebooks not clean (nbdev-clean changed: {', '.join(dirty)})")
    if copies := package_data.stale():
        problems.append(f"packaged copies stale ({', '.join(str(p.relative_to(ROOT)) for p in copies)}: run scripts/package_data.py)")
    for p in problems: print(f"check_sync: {p}; review and commit the result", file=sys.stderr)
    if not problems: print("check_sync: library in sync with notebooks; notebooks clean")
    return 1 if problems else 0

if __name__ == '__main__': sys.exit(main())
