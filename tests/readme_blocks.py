"""Run the ``console`` blocks of a Markdown page as a reader would type them, and compare.

A block is a fenced ```console block. ``$ `` starts a command; a command whose line holds
``<<EOF`` takes the following lines up to ``EOF`` as its here-document; every other line is the
output the command is shown to print (stdout and stderr as a terminal shows them, trailing spaces
trimmed, as the page trims them). All commands of a page run in ONE bash session from the repository
root, in order, so ``export`` and ``$?`` carry over as they would in a terminal.

``python tests/readme_blocks.py README.md`` prints each command with its real output;
``--write`` puts those outputs into the page in place of the shown ones (after a change of output:
read the diff before committing). tests/test_readme.py compares.
"""

from __future__ import annotations

import re
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


@dataclass
class Step:
    command: str
    expected: list[str]
    line: int  # where the command stands in the page (1-based), for messages


def steps(text: str) -> list[Step]:
    out: list[Step] = []
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        if lines[i].strip() != "```console":
            i += 1
            continue
        i += 1
        while i < len(lines) and lines[i].strip() != "```":
            line = lines[i]
            if line.startswith("$ "):
                command, start = line[2:], i + 1
                if "<<EOF" in command or "<<'EOF'" in command:
                    while lines[i] != "EOF":
                        i += 1
                        command += "\n" + lines[i]
                out.append(Step(command, [], start))
            elif out:
                out[-1].expected.append(line.rstrip())
            i += 1
        i += 1
    for step in out:
        while step.expected and step.expected[-1] == "":
            step.expected.pop()
    return out


def run(page_steps: list[Step], env: dict[str, str], timeout: float = 300) -> list[list[str]]:
    """Every step's output lines, from one bash session."""
    marker = f"--step-{uuid.uuid4().hex}--"
    script = []
    for step in page_steps:
        # the step's status is restored after the marker, so that `echo $?` sees it
        script.append(f"{step.command}\n__rc=$?; echo '{marker}'; (exit $__rc)")
    proc = subprocess.run(["bash", "--norc", "--noprofile"], input="\n".join(script) + "\n", cwd=REPO, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout)
    chunks = proc.stdout.split(marker + "\n")
    outputs = []
    for chunk in chunks[:len(page_steps)]:
        lines = [line.rstrip() for line in chunk.split("\n")]
        while lines and lines[-1] == "":
            lines.pop()
        outputs.append(lines)
    return outputs


def rewrite(text: str, page_steps: list[Step], outputs: list[list[str]]) -> str:
    """``text`` with each step's shown output replaced by ``outputs``."""
    lines = text.split("\n")
    for step, got in sorted(zip(page_steps, outputs), key=lambda pair: -pair[0].line):
        start = step.line + step.command.count("\n")  # the first line after the command (0-based)
        end = start
        while end < len(lines) and not lines[end].startswith("$ ") and lines[end].strip() != "```":
            end += 1
        lines[start:end] = got
    return "\n".join(lines)


if __name__ == "__main__":
    import os

    page = Path(sys.argv[-1])
    text = page.read_text()
    found = steps(text)
    outputs = run(found, {**os.environ, "PYTHONUNBUFFERED": "1"})
    if "--write" in sys.argv[1:-1]:
        page.write_text(rewrite(text, found, outputs))
    else:
        for step, got in zip(found, outputs):
            print(f"$ {step.command}")
            print("\n".join(got))
