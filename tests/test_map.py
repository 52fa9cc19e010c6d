"""``topoipam ipam map``: the file written, opened in headless Chromium (the DOM and a screenshot), the
blocks drawn counted against the datastore, the scaled-down grid of a /8, and bad input."""

from __future__ import annotations

import re

import pytest

import chromium
import map_world
from conftest import sqlite_dump
from png_pixels import distinct_colours, pixels

pytestmark = pytest.mark.skipif(not chromium.available(), reason="needs /usr/bin/chromium (scripts/setup.sh)")

CELL = re.compile(r'<g class="cell" data-blocks="(\d+)">')


def stored_blocks(url: str) -> int:
    from topoipam.ipam import keys
    from topoipam.store import open_store

    store = open_store(url)
    try:
        return sum(len(store.list(keys.block_prefix(v))) for v in (4, 6))
    finally:
        store.close()


@pytest.fixture
def world(sqlite_url):
    assert map_world.build(sqlite_url) == 1024
    return sqlite_url


def test_map_of_a_slash16_is_drawn_block_by_block_and_chromium_shows_it(world, cli, tmp_path):
    html = tmp_path / "map.html"
    r = cli("ipam", "map", "-o", str(html), "--by", "rack")
    assert r.code == 0, r
    assert "1024 claimed block(s)" in r.out
    text = html.read_text()
    assert "http://" not in text.replace("http://www.w3.org/2000/svg", "") and "https://" not in text
    assert "<script" not in text and "@import" not in text and "url(#" in text  # only in-document references
    cells = [int(n) for n in CELL.findall(text)]
    assert len(cells) == 1024 and set(cells) == {1}  # one cell per block of the /16, every one claimed
    assert sum(cells) == stored_blocks(world)
    assert text.count("borrowed by other nodes: 1") == 1
    assert "10.0.0.64/26" in text and "rack=3 (256 blocks)" in text

    dom = chromium.dump_dom(html)  # what the browser parsed: the same number of block cells
    assert sum(int(n) for n in re.findall(r'<g class="cell" data-blocks="(\d+)"', dom)) == stored_blocks(world)
    png = chromium.screenshot(html, tmp_path / "map.png", 1000, 820)
    width, height, _ = pixels(png)
    assert (width, height) == (1000, 820) and len(png) > 10_000
    assert distinct_colours(png, step=3) > 20  # four racks shaded by use, hatching, text: not a blank page


def test_map_svg_has_the_same_cells(world, cli, tmp_path):
    svg = tmp_path / "map.svg"
    assert cli("ipam", "map", "-o", str(svg)).code == 0  # by node: sixteen colours
    text = svg.read_text()
    assert text.startswith('<svg xmlns="http://www.w3.org/2000/svg"')
    assert sum(int(n) for n in CELL.findall(text)) == stored_blocks(world) == 1024
    assert "node-3-3 (64 blocks)" in text
    png = chromium.screenshot(svg, tmp_path / "svg.png", 900, 700)
    assert len(png) > 10_000 and distinct_colours(png, step=3) > 20


def test_map_of_a_slash8_is_a_scaled_grid_counting_every_claimed_block(cli, sqlite_url, tmp_path):
    map_world.build(sqlite_url, "10.0.0.0/8", claim=False)
    for node, n in (("node-0-0", 200), ("node-1-0", 64), ("node-2-1", 1)):
        assert cli("ipam", "assign", "--node", node, "--ipv4", str(n)).code == 0
    out = tmp_path / "big.svg"
    assert cli("ipam", "map", "-o", str(out), "--by", "rack").code == 0
    text = out.read_text()
    cells = [int(n) for n in CELL.findall(text)]
    assert len(cells) == 4096  # 262,144 blocks drawn as 4,096 cells of 64 blocks
    assert sum(cells) == stored_blocks(sqlite_url) == 4 + 1 + 1
    assert "one cell = 64 blocks" in text and "claimed blocks: " in text


@pytest.mark.parametrize("target, code, message", [
    ("map.png", 2, "the file name must end in .html, .htm or .svg"),
    ("missing/map.svg", 2, "does not exist"),
    ("adir.svg", 2, "it is a directory"),
])
def test_map_bad_output_is_rejected_and_writes_nothing(cli, sqlite_url, tmp_path, target, code, message):
    map_world.build(sqlite_url, claim=False)
    before = sqlite_dump(sqlite_url)
    out = tmp_path / "out"
    (out / "adir.svg").mkdir(parents=True)
    r = cli("ipam", "map", "-o", str(out / target))
    assert (r.code, r.out) == (code, "") and message in r.err and "Traceback" not in r.err
    assert [p.name for p in out.iterdir()] == ["adir.svg"] and not any((out / "adir.svg").iterdir())
    assert sqlite_dump(sqlite_url) == before


def test_map_write_failure_exits_1_and_leaves_no_partial_file(cli, sqlite_url):
    map_world.build(sqlite_url, claim=False)
    r = cli("ipam", "map", "-o", "/proc/topoipam-map.svg")  # /proc takes no new file, not even root's
    assert (r.code, r.out) == (1, "") and r.err.startswith("cannot write the map to /proc/topoipam-map.svg: ")


def test_map_flag_errors(cli, tmp_path):
    assert cli("ipam", "map").code == 2
    r = cli("ipam", "map", "-o", str(tmp_path / "m.svg"), "--by", " ")
    assert r.code == 2 and "--by needs a label name" in r.err and not (tmp_path / "m.svg").exists()
