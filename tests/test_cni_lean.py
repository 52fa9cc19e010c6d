"""The plugin's import graph stays lean: standard library plus topoipam's CNI-path modules.

The installed ``topoipam-cni`` is run under ``-X importtime`` for a full ADD,
CHECK and DEL against an SQLite datastore (the path a runtime takes for every
pod) and for VERSION; every module the interpreter imported is read from that
report. The test fails if a module outside the standard library is loaded, if
a topoipam module outside the documented CNI path is loaded (CLI, YAML codec,
validation, etcd), or if a heavy standard-library module (argparse, http,
urllib.request, ssl, asyncio) creeps in.
"""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from netns import PLUGIN, cni_env, python
from topoipam.model.codec import decode_documents
from topoipam.resources.service import ResourceService
from topoipam.ipam.pool_blocks import PoolBlocks
from topoipam.store import open_store

ALLOWED_TOPOIPAM = re.compile(
    r"^topoipam(\.(errors|structs|store|store\.base|store\.retry|store\.sqlite|store\.memory|selector(\..+)?|model|model\.types"
    r"|model\.storage|core(\..+)?|resources|resources\.repo|resources\.keys|ipam(\..+)?|cni(\..+)?))?$"
)
# Probed by the interpreter itself at start-up (site hooks, copy's Jython check), whether or not they exist.
INTERPRETER_PROBES = {"sitecustomize", "usercustomize", "_distutils_hack", "org", "org.python", "org.python.core"}
FORBIDDEN_STDLIB = {"argparse", "http", "urllib.request", "ssl", "asyncio", "email", "logging.handlers"}
FORBIDDEN_THIRD_PARTY = ("yaml", "grpc", "etcd3", "etcd", "pydantic", "typer", "rich", "requests", "httpx",
                         "prometheus_client", "google", "cryptography")
POOLS = """
apiVersion: projectcalico.org/v3
kind: Node
metadata: {name: kube-node-0, labels: {rack: "0"}}
---
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: rack-0-ippool}
spec: {cidr: 192.168.0.0/24, nodeSelector: rack == "0"}
"""


def imported_modules(env: dict, stdin: bytes) -> tuple[set[str], subprocess.CompletedProcess]:
    proc = subprocess.run([python(), "-X", "importtime", str(PLUGIN)], input=stdin, env=env,
                          capture_output=True)
    names = set()
    for line in proc.stderr.decode().splitlines():
        if line.startswith("import time:") and "|" in line and "imported package" not in line:
            names.add(line.rsplit("|", 1)[1].strip())
    return names, proc


def offenders(names: set[str]) -> list[str]:
    bad = []
    for name in sorted(names):
        top = name.split(".")[0]
        if name in INTERPRETER_PROBES:
            continue
        if top == "topoipam":
            if not ALLOWED_TOPOIPAM.match(name):
                bad.append(name)
        elif name in FORBIDDEN_STDLIB or top in FORBIDDEN_STDLIB or top in FORBIDDEN_THIRD_PARTY:
            bad.append(name)
        elif top not in sys.stdlib_module_names and not top.startswith("_"):
            bad.append(name)
    return bad


@pytest.fixture
def datastore(tmp_path):
    url = f"sqlite://{tmp_path}/lean.db"
    store = open_store(url)
    try:
        ResourceService(store, PoolBlocks(store)).create(decode_documents(POOLS, "test"))
    finally:
        store.close()
    return url


def test_add_check_del_import_only_lean_modules(datastore):
    conf = ('{"cniVersion": "1.0.0", "name": "lean", "type": "bridge", "ipam": {"type": "topoipam-cni", '
            f'"nodename": "kube-node-0", "datastore": "{datastore}"}}}}').encode()
    env = cni_env("ADD", container_id="lean1", netns="/run/netns/lean", args="IgnoreUnknown=1;K8S_POD_NAME=p")
    seen, proc = imported_modules(env, conf)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-2000:]
    assert b"192.168.0." in proc.stdout
    assert "topoipam.ipam" in seen and "topoipam.store.sqlite" in seen and "sqlite3" in seen
    assert offenders(seen) == []
    for command in ("CHECK", "DEL"):
        seen, proc = imported_modules(cni_env(command, container_id="lean1", netns="/run/netns/lean"), conf)
        assert proc.returncode == 0, proc.stdout
        assert offenders(seen) == []


def test_version_imports_no_datastore_code():
    seen, proc = imported_modules(cni_env("VERSION"), b'{"cniVersion": "1.1.0"}')
    assert proc.returncode == 0
    assert offenders(seen) == []
    assert not {m for m in seen if m.startswith(("topoipam.ipam", "topoipam.store.sqlite", "sqlite3"))}


def test_offenders_detects_heavy_modules():
    # The checker itself must catch what it is meant to catch.
    assert offenders({"yaml", "argparse", "topoipam.cli.main", "topoipam.model.codec", "grpc._cython",
                      "http.client", "json", "topoipam.ipam.assign"}) == [
        "argparse", "grpc._cython", "http.client", "topoipam.cli.main", "topoipam.model.codec", "yaml"]


def test_agent_mode_imports_no_datastore_code(tmp_path):
    """With ``ipam.agent_socket`` the plugin only forwards: nothing of the datastore path is loaded
    (no agent listens here, so the answer is code 11, try again later)."""
    conf = ('{"cniVersion": "1.0.0", "name": "lean", "ipam": {"type": "topoipam-cni", '
            f'"agent_socket": "{tmp_path}/no-agent.sock"}}}}').encode()
    seen, proc = imported_modules(cni_env("ADD", container_id="lean2", netns="/run/netns/lean"), conf)
    assert proc.returncode == 1 and b'"code": 11' in proc.stdout
    assert offenders(seen) == []
    assert not {m for m in seen if m.startswith(("topoipam.ipam", "topoipam.store", "topoipam.model", "sqlite3",
                                                 "topoipam.cni.handler"))}
