"""The README's tutorial, run as a reader runs it: every ``console`` block, in order, in one bash
session from the repository root on a fresh datastore, each command's output compared with the
output the page shows (tests/readme_blocks.py)."""

from __future__ import annotations

import os
from pathlib import Path

from readme_blocks import REPO, run, steps


def test_readme_tutorial_prints_what_the_readme_shows(tmp_path):
    page = steps((REPO / "README.md").read_text())
    assert len(page) > 20  # the tutorial is there
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TOPOIPAM_", "ETCD_", "DATASTORE_TYPE"))}
    # a terminal shows stdout and stderr in the order they are written; a pipe would buffer stdout
    env.update(PYTHONUNBUFFERED="1", TMPDIR=str(tmp_path), HOME=str(tmp_path), COLUMNS="200")
    outputs = run(page, env)
    assert len(outputs) == len(page), "the shell stopped before the last command"
    for step, got in zip(page, outputs):
        assert got == step.expected, (f"README.md line {step.line}: $ {step.command.splitlines()[0]}\n"
                                      f"shown:\n" + "\n".join(step.expected) + "\nprinted:\n" + "\n".join(got))
    assert not list(Path(tmp_path).glob(".local/share/topoipam/*")), "the tutorial used the default datastore"
