#!/usr/bin/env python3
"""Build ``topoipam-cni`` as one self-contained file for nodes that get no virtual environment.

    python3 deploy/make-cni-pyz.py OUT [--python /usr/bin/python3]

A zip application (the standard library's ``zipapp``) of the ``topoipam`` package with
``topoipam.cni.main:main`` as its entry point, byte-compiled inside the archive. The plugin's
import path is the standard library and topoipam's own modules only, so it runs on the node's own
Python 3.11+ with nothing installed: the DaemonSet's init container copies it into the host's CNI
bin directory (deploy/kubernetes/topoipam.yaml). ``-IS`` on the interpreter line keeps the node's
site-packages and environment variables out of the plugin's imports and skips ``site`` altogether
(the archive needs nothing it adds; about 3 ms of every exec, docs/cni-performance.md).
"""

from __future__ import annotations

import argparse
import compileall
import pathlib
import shutil
import tempfile
import zipapp

SRC = pathlib.Path(__file__).resolve().parents[1] / "src" / "topoipam"


def build(out: pathlib.Path, interpreter: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        package = pathlib.Path(tmp) / "topoipam"
        shutil.copytree(SRC, package, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"))
        # zipimport reads legacy .pyc files next to their sources (not __pycache__/): -b writes those.
        if not compileall.compile_dir(str(package), quiet=1, legacy=True):
            raise SystemExit("make-cni-pyz: byte-compiling failed")
        zipapp.create_archive(tmp, str(out), interpreter=interpreter, main="topoipam.cni.main:main")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=pathlib.Path)
    parser.add_argument("--python", default="/usr/bin/python3 -IS", help="the interpreter line (default %(default)s)")
    args = parser.parse_args()
    build(args.out, args.python)
    print(f"make-cni-pyz: wrote {args.out} ({args.out.stat().st_size // 1024} KiB)")


if __name__ == "__main__":
    main()
