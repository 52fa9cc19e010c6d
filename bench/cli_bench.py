"""Start-up cost of the CLI: wall time of ``topoipam get ippool -o wide`` next to ``python -c pass``.

Both run in the same session, alternating, N times each (default 40), as
separate processes with the real interpreter (the console script in
.venv/bin, not a pyenv shim). The datastore is a fresh SQLite file holding the
seed's two rack pools, so the command reads and prints a real table. Prints
median and p90 of each and their difference and ratio. Not a test: the
numbers depend on the machine and its load.

    .venv/bin/python bench/cli_bench.py [N]
"""

from __future__ import annotations

import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
VENV_BIN = ROOT / ".venv" / "bin"
sys.path.insert(0, str(ROOT / "tests"))
from seed_yaml import RACK_POOLS as POOLS  # the seed's two rack pools


def timed(argv: list[str], env: dict) -> float:
    start = time.perf_counter()
    subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def p90(values: list[float]) -> float:
    return sorted(values)[max(0, int(round(0.9 * len(values))) - 1)]


def main() -> int:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 40
    topoipam = str(VENV_BIN / "topoipam")
    python = str(VENV_BIN / "python")
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, TOPOIPAM_DATASTORE=f"sqlite://{tmp}/bench.db")
        subprocess.run([topoipam, "create", "-f", "-"], input=POOLS.encode(), env=env, check=True,
                       stdout=subprocess.DEVNULL)
        cli_cmd, base_cmd = [topoipam, "get", "ippool", "-o", "wide"], [python, "-c", "pass"]
        timed(cli_cmd, env), timed(base_cmd, env)  # warm the page cache
        cli, base = [], []
        for _ in range(n):
            cli.append(timed(cli_cmd, env))
            base.append(timed(base_cmd, env))
    ms = lambda s: s * 1000  # noqa: E731
    print(f"interpreter: {os.path.realpath(python)}  N={n} each, alternating")
    print(f"{'command':42} {'median ms':>10} {'p90 ms':>8}")
    print(f"{'python -c pass':42} {ms(statistics.median(base)):10.1f} {ms(p90(base)):8.1f}")
    print(f"{'topoipam get ippool -o wide':42} {ms(statistics.median(cli)):10.1f} {ms(p90(cli)):8.1f}")
    extra = statistics.median(cli) - statistics.median(base)
    print(f"topoipam adds {ms(extra):.1f} ms over a bare interpreter "
          f"(ratio {statistics.median(cli) / statistics.median(base):.2f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
