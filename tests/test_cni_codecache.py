"""The CNI path's code cache (topoipam/cni/codecache.py): used when it matches, never when it does not.

Every check runs a fresh interpreter as the launcher starts it (``-IS``, topoipam
on ``sys.path``) and looks at which loader served each module: a module comes
from the cache only while its source is exactly what the cache was built from,
and a missing, foreign or damaged cache file changes nothing but speed.
"""

from __future__ import annotations

import json
import marshal
import os
import pathlib
import shutil
import subprocess
import sys

import pytest

from netns import PLUGIN, cni_env
from topoipam.cni import codecache
from topoipam.model.codec import decode_documents
from topoipam.ipam.pool_blocks import PoolBlocks
from topoipam.resources.service import ResourceService
from topoipam.store import open_store

SRC = pathlib.Path(__file__).resolve().parents[1] / "src"
POOLS = """
apiVersion: projectcalico.org/v3
kind: Node
metadata: {name: n0}
---
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: p0}
spec: {cidr: 10.9.0.0/24, nodeSelector: all()}
"""
# Run in a fresh -IS interpreter: serve one CNI request with the plugin's own direct path (as the
# exec'd plugin does), then report which loader served each topoipam module and the answer.
REPORT = """
import json, sys
sys.path[:0] = [{src!r}]
from topoipam.cni import main
code, out = main._direct({stdin!r}, exec_d=True)
loaders = {{n: type(m.__spec__.loader).__name__ for n, m in sys.modules.items()
            if n.startswith("topoipam") and getattr(m, "__spec__", None)}}
print(json.dumps({{"code": code, "out": out.decode(), "loaders": loaders,
                   "mark": getattr(sys.modules.get("topoipam.core.pools"), "MARK", None)}}))
"""


def _interpreter() -> str:
    return PLUGIN.read_bytes().split(b"\n", 1)[0].decode()[2:].split()[0]


@pytest.fixture
def tree(tmp_path):
    """A copy of topoipam's source, its cache built as install-launcher builds it, and a datastore."""
    src = tmp_path / "src"
    shutil.copytree(SRC / "topoipam", src / "topoipam", ignore=shutil.ignore_patterns("__pycache__"))
    url = f"sqlite://{tmp_path}/cache.db"
    store = open_store(url)
    try:
        ResourceService(store, PoolBlocks(store)).create(decode_documents(POOLS, "test"))
    finally:
        store.close()
    cache = codecache.cache_path(str(src / "topoipam"))
    build = (f"import sys; sys.path[:0] = [{str(src)!r}]\n"
             f"from topoipam.cni import codecache\nprint(codecache.build({cache!r}))\n")
    proc = subprocess.run([_interpreter(), "-IS", "-c", build], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert int(proc.stdout) > 30
    return src, pathlib.Path(cache), url


def serve(src: pathlib.Path, url: str, command: str = "ADD", container: str = "c1") -> dict:
    stdin = json.dumps({"cniVersion": "1.0.0", "name": "net", "type": "ptp",
                        "ipam": {"type": "topoipam-cni", "nodename": "n0", "datastore": url}}).encode()
    env = cni_env(command, container_id=container, netns="/run/netns/x")
    proc = subprocess.run([_interpreter(), "-IS", "-c", REPORT.format(src=str(src), stdin=stdin)], env=env,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def from_cache(report: dict) -> set[str]:
    return {n for n, loader in report["loaders"].items() if loader == "CodeCacheFinder"}


def test_a_request_is_served_from_the_cache(tree):
    src, _, url = tree
    report = serve(src, url)
    assert report["code"] == 0 and json.loads(report["out"])["ips"][0]["address"].startswith("10.9.0.")
    served = from_cache(report)
    assert {"topoipam.cni.handler", "topoipam.ipam.service", "topoipam.store.sqlite", "topoipam.core.block"} <= served
    # Imported before the plugin knows it serves the request itself: from the files, as usual.
    assert {"topoipam.cni.main", "topoipam.cni.agent_client", "topoipam.cni.codecache"}.isdisjoint(served)
    assert serve(src, url, "DEL")["code"] == 0


def test_an_edited_module_is_compiled_from_its_source(tree):
    src, _, url = tree
    pools = src / "topoipam" / "core" / "pools.py"
    pools.write_text(pools.read_text() + "\nMARK = 'edited'\n")
    report = serve(src, url)
    assert report["code"] == 0 and report["mark"] == "edited"
    assert report["loaders"]["topoipam.core.pools"] == "SourceFileLoader"
    assert "topoipam.core.block" in from_cache(report)  # the others still come from the cache


def test_a_same_size_edit_with_a_new_time_is_seen(tree):
    src, _, url = tree
    pools = src / "topoipam" / "core" / "pools.py"
    stat = pools.stat()
    os.utime(pools, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert serve(src, url)["loaders"]["topoipam.core.pools"] == "SourceFileLoader"


def test_a_removed_module_fails_as_without_the_cache(tree):
    src, _, url = tree
    (src / "topoipam" / "ipam" / "kept.py").unlink()
    stdin = json.dumps({"cniVersion": "1.0.0", "name": "net", "type": "ptp",
                        "ipam": {"type": "topoipam-cni", "nodename": "n0", "datastore": url}}).encode()
    proc = subprocess.run([_interpreter(), "-IS", "-c", REPORT.format(src=str(src), stdin=stdin)],
                          env=cni_env("ADD", container_id="c2", netns="/run/netns/x"), capture_output=True, text=True)
    assert "No module named 'topoipam.ipam.kept'" in proc.stdout + proc.stderr


@pytest.mark.parametrize("damage", ["missing", "empty", "truncated", "foreign magic", "not a dict", "garbage"])
def test_an_unusable_cache_file_changes_nothing_but_speed(tree, damage):
    src, cache, url = tree
    data = cache.read_bytes()
    head = data.index(b"\n") + 1
    damaged = {"missing": None, "empty": b"", "truncated": data[:len(data) // 2],
               "foreign magic": data[:head] + b"\x00\x00\r\n" + data[head + 4:],
               "not a dict": data[:head + 4] + marshal.dumps(["topoipam.cni.handler"]),
               "garbage": os.urandom(4096)}[damage]
    if damaged is None:
        cache.unlink()
    else:
        cache.write_bytes(damaged)
    report = serve(src, url)
    assert report["code"] == 0, report["out"]
    assert from_cache(report) == set()


def test_install_launcher_builds_the_cache_and_says_so(tmp_path):
    out = subprocess.run([str(PLUGIN.parent / "topoipam-cni"), "install-launcher", str(tmp_path / "plugin")],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "code cache of" in out.stdout and "modules in" in out.stdout
    cache = pathlib.Path(out.stdout.rsplit("modules in ", 1)[1].strip())
    assert cache.is_file() and cache.name == f"cni-path.{sys.implementation.cache_tag}.codecache"
    text = (tmp_path / "plugin").read_text()
    assert text.startswith(f"#!{_interpreter()} -IS\n")
