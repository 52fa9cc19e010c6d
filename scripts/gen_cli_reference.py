#!/usr/bin/env python3
"""Write docs/commands.md: every topoipam command's help, generated from the argument parsers.

    .venv/bin/python scripts/gen_cli_reference.py            # rewrite docs/commands.md
    .venv/bin/python scripts/gen_cli_reference.py --check    # exit 1 if it is out of date

tests/test_docs.py runs the check, so the reference cannot drift from the parsers.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys

OUT = pathlib.Path(__file__).resolve().parents[1] / "docs" / "commands.md"
HEADER = """# Command reference

Generated from the argument parsers by `scripts/gen_cli_reference.py` (do not edit by hand).
Global options (`--datastore URL`, `-c/--config FILE`) are accepted before or after any verb.
Exit codes: 0 success, 1 operation failed, 2 usage or validation error, 3 datastore unavailable,
4 problems found (`ipam check`, `coverage`, `drift`, and the impact of a dry run); see
[troubleshooting.md](troubleshooting.md).
"""


def parsers(parser: argparse.ArgumentParser, path: str = "topoipam"):
    yield path, parser
    for action in parser._actions:  # argparse keeps no public list of sub-parsers
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from parsers(sub, f"{path} {name}")


def render() -> str:
    os.environ["COLUMNS"] = "100"  # argparse wraps help to the terminal: fix the width
    from topoipam.cli.main import build_parser

    parts = [HEADER]
    for path, parser in parsers(build_parser()):
        parser.prog = path
        parts.append(f"## `{path}`\n\n```text\n{parser.format_help().rstrip()}\n```\n")
    return "\n".join(parts)


def main() -> int:
    text = render()
    if "--check" in sys.argv[1:]:
        if not OUT.exists() or OUT.read_text() != text:
            print(f"{OUT} is out of date: run scripts/gen_cli_reference.py", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text)
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
