"""Selector evaluation, parsing and import cost.

Baseline for evaluation: the same test written by hand as a Python lambda
(the floor any implementation could reach). Measured: ``Selector.evaluate``
of the compiled selector, on a matching and a non-matching label set.
Also: an uncached parse (tokenize + parse + compile + canonical text), a
cached ``parse`` call, and the import time of ``topoipam.selector`` in a
fresh interpreter against a bare interpreter start.

    .venv/bin/python bench/selector_bench.py [--seconds 1]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

from topoipam.selector import Selector, parse
from topoipam.selector.parser import parse_tree

CASES = [
    ('rack == "0"',
     lambda l: l.get("rack") == "0"),
    ('zone in {"a", "b", "c"} && !has(edge)',
     lambda l: l.get("zone") in {"a", "b", "c"} and "edge" not in l),
    ('(kubernetes.io/os == "linux" && rack != "3") || node-role.kubernetes.io/ingress starts with "t"',
     lambda l: (l.get("kubernetes.io/os") == "linux" and l.get("rack") != "3")
     or (l.get("node-role.kubernetes.io/ingress") or "\0").startswith("t")),
]
LABEL_SETS = [
    {"rack": "0", "zone": "a", "kubernetes.io/os": "linux", "kubernetes.io/hostname": "node-1"},
    {"rack": "3", "zone": "z", "edge": "", "kubernetes.io/os": "windows", "kubernetes.io/hostname": "node-2"},
]


def per_call(fn, arg, seconds: float) -> float:
    """Seconds per call of fn(arg), timed in batches of 1000."""
    n, start = 0, time.perf_counter()
    deadline = start + seconds
    while time.perf_counter() < deadline:
        for _ in range(1000):
            fn(arg)
        n += 1000
    return (time.perf_counter() - start) / n


def import_cost(runs: int = 15) -> tuple[float, float]:
    def best(code: str) -> float:
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            subprocess.run([sys.executable, "-c", code], check=True)
            times.append(time.perf_counter() - start)
        return min(times)
    return best("pass"), best("import topoipam.selector")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=1.0)
    args = ap.parse_args()
    print(f"{'selector':<60} {'labels':>6} {'hand us':>8} {'ours us':>8} {'ratio':>6}")
    for text, hand in CASES:
        sel = parse(text)
        for index, labels in enumerate(LABEL_SETS):
            assert sel.evaluate(labels) == bool(hand(labels)), text
            base = per_call(hand, labels, args.seconds)
            ours = per_call(sel.evaluate, labels, args.seconds)
            print(f"{text[:60]:<60} {index:>6} {base * 1e6:8.3f} {ours * 1e6:8.3f} {ours / base:6.2f}")
    for text, _ in CASES:
        uncached = per_call(lambda t: Selector(parse_tree(t)), text, args.seconds)
        cached = per_call(parse, text, args.seconds)
        print(f"parse {text[:50]!r:<54} uncached {uncached * 1e6:8.1f} us   cached {cached * 1e6:6.3f} us")
    bare, loaded = import_cost()
    print(f"interpreter start {bare * 1e3:.1f} ms; with import topoipam.selector {loaded * 1e3:.1f} ms "
          f"(+{(loaded - bare) * 1e3:.1f} ms)")


if __name__ == "__main__":
    main()
