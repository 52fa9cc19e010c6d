"""``ipam map``: writing the file and Chromium rendering it, next to baselines measured in the same run.

1. a /16 pool of /26 blocks with all 1,024 blocks claimed (tests/map_world.py: 16 nodes in 4 racks):
   wall time of ``topoipam ipam map -o map.html --by rack`` (a whole process, as an operator runs it),
   next to ``topoipam ipam show`` on the same datastore (the CLI's own start-up and one read);
2. headless Chromium screenshotting that map, next to Chromium screenshotting an empty page;
3. a /8 pool (262,144 blocks of /26) with 1,024 claimed blocks: wall time of ``ipam map`` (drawn as a
   4,096-cell scaled grid), and the pure renderer alone on a /8 with every one of its 262,144 blocks
   claimed (``core.addrmap.render_svg`` in this process, the worst case for the layout).

    .venv/bin/python bench/map_bench.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import ipaddress
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

import chromium  # noqa: E402
import map_world  # noqa: E402

TOPOIPAM = [sys.executable, "-m", "topoipam.cli.main"]


def timed(fn, repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def cli(url: str, *argv: str) -> None:
    subprocess.run([*TOPOIPAM, "--datastore", url, *argv], check=True, capture_output=True)


def line(what: str, times: list[float], base: list[float] | None = None, base_what: str = "") -> None:
    med = statistics.median(times)
    text = f"{what:<58} median {med * 1000:8.1f} ms  (min {min(times) * 1000:.1f}, n={len(times)})"
    if base:
        bmed = statistics.median(base)
        text += f"\n{'  baseline: ' + base_what:<58} median {bmed * 1000:8.1f} ms  -> ratio {med / bmed:.2f}"
    print(text)


def slash8_claimed(url: str) -> None:
    """1,024 claimed blocks spread over a /8 (each node claims 64 blocks in its own /12)."""
    from topoipam.ipam import IpamService
    from topoipam.store import open_store

    map_world.build(url, "10.0.0.0/8", claim=False)
    store = open_store(url)
    try:
        svc = IpamService(store)
        nodes = [f"node-{r}-{i}" for r in range(map_world.RACKS) for i in range(map_world.NODES_PER_RACK)]
        for node, part in zip(nodes, ipaddress.ip_network("10.0.0.0/8").subnets(new_prefix=12)):
            svc.claim_affinity(str(next(part.subnets(new_prefix=20))), node)
    finally:
        store.close()


def full_slash8_render() -> float:
    from topoipam.core.addrmap import MapBlock, MapPool, render_svg

    net = ipaddress.ip_network("10.0.0.0/8")
    blocks = [MapBlock(b, f"node-{i % 16}", str(i % 4), 64, i % 65) for i, b in enumerate(net.subnets(new_prefix=26))]
    pool = MapPool("big", net, 26, blocks)
    t = time.perf_counter()
    text = render_svg([pool], label="rack")
    elapsed = time.perf_counter() - t
    print(f"{'pure render, /8 with all 262,144 blocks claimed':<58} {elapsed * 1000:8.1f} ms  "
          f"({len(text) / 1e6:.2f} MB of SVG)")
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="topoipam-map-bench-") as d:
        tmp = Path(d)
        url16 = f"sqlite:///{tmp}/slash16.db"
        t = time.perf_counter()
        map_world.build(url16)
        print(f"built a /16 with 1,024 claimed blocks in {time.perf_counter() - t:.1f} s")
        html = tmp / "map.html"
        write = timed(lambda: cli(url16, "ipam", "map", "-o", str(html), "--by", "rack"), args.repeat)
        show = timed(lambda: cli(url16, "ipam", "show"), args.repeat)
        line("ipam map -o map.html --by rack (/16, 1,024 blocks)", write, show, "ipam show, same datastore")
        print(f"  map.html: {html.stat().st_size / 1024:.0f} KiB")
        empty = tmp / "empty.html"
        empty.write_text("<!DOCTYPE html><html><body></body></html>\n")
        render = timed(lambda: chromium.screenshot(html, tmp / "map.png", 1000, 820), args.repeat)
        blank = timed(lambda: chromium.screenshot(empty, tmp / "empty.png", 1000, 820), args.repeat)
        line("chromium --screenshot of map.html", render, blank, "chromium --screenshot of an empty page")
        url8 = f"sqlite:///{tmp}/slash8.db"
        slash8_claimed(url8)
        big = timed(lambda: cli(url8, "ipam", "map", "-o", str(tmp / "big.svg"), "--by", "rack"), args.repeat)
        line("ipam map -o big.svg (/8: 262,144 blocks, 1,024 claimed)", big, show, "ipam show on the /16")
        print(f"  big.svg: {(tmp / 'big.svg').stat().st_size / 1024:.0f} KiB")
        full_slash8_render()


if __name__ == "__main__":
    main()
