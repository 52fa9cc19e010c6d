"""The plugin's import graph stays lean: standard library plus topoipam's CNI-path modules.

The installed ``topoipam-cni`` (the lean launcher, ``cni/launcher.py``) is run
as its shebang says, plus ``-X importtime``, for a full ADD, CHECK and DEL
against an SQLite datastore (the path a runtime takes for every pod), for
VERSION, and for an ADD answered by a real agent; every module the
interpreter imported is read from that report. The direct path fails if a
module outside the standard library is loaded, if a topoipam module outside
the documented CNI path is loaded (CLI, YAML codec, validation, etcd), or if a
standard-library module outside its allowed list creeps in (``json``, ``re``,
``enum``, ``typing``, ``sqlite3``'s Python layer, ``datetime`` and ``threading``
each cost milliseconds per exec: ``leanjson``, ``_sqlite3`` and ``_thread``
stand in for them). The agent path is held to an allowed list: the interpreter's own
start-up (``-c pass`` with the same options), ``_socket`` (not ``os``),
``binascii`` and four topoipam modules.
"""

from __future__ import annotations

import json
import pathlib
import re
import subprocess
import sys

import pytest

from agent_proc import AgentProc
from netns import PLUGIN, cni_env
from topoipam.model.codec import decode_documents
from topoipam.resources.service import ResourceService
from topoipam.ipam.pool_blocks import PoolBlocks
from topoipam.store import open_store

ALLOWED_TOPOIPAM = re.compile(
    r"^topoipam(\.(errors|structs|leanjson|store|store\.base|store\.retry|store\.sqlite|store\.memory|selector(\..+)?|model|model\.types"
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


# The standard library the direct (embedded) path may load beyond the interpreter's own start-up:
# the datastore's C driver, the C JSON codec, ipaddress (with functools and collections) and os.
DIRECT_MODE_STDLIB = {"os", "stat", "_stat", "posixpath", "genericpath", "_collections_abc", "binascii", "__future__",
                      "collections", "collections.abc", "_collections", "itertools", "keyword", "operator", "_operator",
                      "reprlib", "types", "functools", "_functools", "ipaddress", "_json", "_sqlite3", "_weakrefset",
                      "_socket"}
# Each of these costs milliseconds of every exec; leanjson, _sqlite3 and _thread stand in for them.
NEVER_IN_DIRECT_MODE = {"json", "re", "enum", "typing", "sqlite3", "datetime", "threading", "dataclasses", "inspect",
                        "socket", "weakref", "contextlib", "warnings"}

NEVER_IN_DEL = {"topoipam.ipam.assign", "topoipam.ipam.kept", "topoipam.core.pools", "topoipam.selector",
                "topoipam.model.types", "topoipam.model.storage", "topoipam.resources.repo"}

# What the plugin itself may import in agent mode, beyond the interpreter's own start-up.
AGENT_MODE_ALLOWED = {"_socket", "binascii", "topoipam", "topoipam.cni", "topoipam.cni.main", "topoipam.cni.agent_client",
                      "topoipam.cni.wire"}
NEVER_IN_AGENT_MODE = {"os", "json", "re", "enum", "socket", "sqlite3", "ipaddress", "datetime", "typing",
                       "collections", "topoipam.errors", "topoipam.cni.protocol", "topoipam.model", "topoipam.store"}


def launch_command() -> list[str]:
    """How the kernel starts the installed plugin: its shebang's interpreter and options."""
    first = PLUGIN.read_bytes().split(b"\n", 1)[0].decode()
    assert first.startswith("#!") and first.endswith(" -IS"), (
        f"{PLUGIN} is not the lean launcher ({first!r}): run scripts/setup.sh (topoipam-cni install-launcher)")
    return first[2:].split()


def import_report(argv: list[str], env: dict, stdin: bytes) -> tuple[set[str], subprocess.CompletedProcess]:
    proc = subprocess.run(argv, input=stdin, env=env, capture_output=True)
    names = set()
    for line in proc.stderr.decode().splitlines():
        if line.startswith("import time:") and "|" in line and "imported package" not in line:
            names.add(line.rsplit("|", 1)[1].strip())
    return names, proc


def imported_modules(env: dict, stdin: bytes) -> tuple[set[str], subprocess.CompletedProcess]:
    return import_report([*launch_command(), "-X", "importtime", str(PLUGIN)], env, stdin)


def interpreter_start_up() -> set[str]:
    names, proc = import_report([*launch_command(), "-X", "importtime", "-c", "pass"], {}, b"")
    assert proc.returncode == 0
    return names


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
    # A neighbour in the block, as on any busy node: the DEL below leaves the block in use (emptying
    # it is the one release that reads the topology, to decide whether the block stays affine).
    neighbour = subprocess.run([str(PLUGIN)], input=conf, capture_output=True,
                               env=cni_env("ADD", container_id="lean0", netns="/run/netns/lean0"))
    assert neighbour.returncode == 0, neighbour.stdout
    env = cni_env("ADD", container_id="lean1", netns="/run/netns/lean", args="IgnoreUnknown=1;K8S_POD_NAME=p")
    seen, proc = imported_modules(env, conf)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-2000:]
    assert b"192.168.0." in proc.stdout
    assert "topoipam.ipam" in seen and "topoipam.store.sqlite" in seen and "_sqlite3" in seen
    start_up = interpreter_start_up()
    for command in ("ADD", "CHECK", "DEL"):
        if command != "ADD":
            seen, proc = imported_modules(cni_env(command, container_id="lean1", netns="/run/netns/lean"), conf)
            assert proc.returncode == 0, proc.stdout
        assert offenders(seen) == []
        stdlib = {m for m in seen - start_up - INTERPRETER_PROBES if not m.startswith("topoipam")}
        assert stdlib - DIRECT_MODE_STDLIB == set(), f"{command} imported {sorted(stdlib - DIRECT_MODE_STDLIB)}"
        assert not seen & NEVER_IN_DIRECT_MODE, f"{command} imported {sorted(seen & NEVER_IN_DIRECT_MODE)}"
        if command == "DEL":  # a release reads no resource: the assignment engine and the model stay unloaded
            assert not seen & NEVER_IN_DEL, f"DEL imported {sorted(seen & NEVER_IN_DEL)}"


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


def test_agent_mode_add_imports_only_the_allowed_modules(tmp_path, datastore):
    """A real ADD answered by a real agent: the plugin loads the socket and the wire encoder only."""
    agent = AgentProc(tmp_path, datastore, "kube-node-0")
    try:
        agent.start()
        conf = json.dumps({"cniVersion": "1.0.0", "name": "lean", "type": "ptp",
                           "ipam": {"type": "topoipam-cni", "agent_socket": agent.socket}}).encode()
        env = cni_env("ADD", container_id="lean3", netns="/run/netns/lean", args="K8S_POD_NAMESPACE=default")
        seen, proc = imported_modules(env, conf)
        assert proc.returncode == 0, proc.stdout + proc.stderr[-2000:]
        assert json.loads(proc.stdout)["ips"][0]["address"].startswith("192.168.0.")
    finally:
        agent.stop()
    start_up = interpreter_start_up()
    assert not start_up & NEVER_IN_AGENT_MODE
    extra = seen - start_up - INTERPRETER_PROBES
    assert extra - AGENT_MODE_ALLOWED == set(), f"agent-mode plugin imported {sorted(extra - AGENT_MODE_ALLOWED)}"
    assert {"topoipam.cni.wire", "_socket"} <= extra
    assert not seen & NEVER_IN_AGENT_MODE


def test_wire_format_is_json_both_ways():
    """The hand-written request is JSON the agent decodes; the answer parser reads what the agent writes."""
    from topoipam.cni import agent_client, wire

    env = {"CNI_COMMAND": "ADD", "CNI_ARGS": 'K8S_POD_NAME=a"b\\c\tx\udcff', "CNI_NETNS": "/run/ns/é",
           "HOME": "/root"}
    data = wire.encode_request(env, b"\x00{}")
    assert json.loads(data)["protocol"] == 1
    got_env, stdin = agent_client.decode_request(data)
    assert got_env == {k: v for k, v in env.items() if k != "HOME"} and stdin == b"\x00{}"
    assert wire.decode_response(wire.encode_response(-3, b"out\n")) == (-3, b"out\n")
    assert json.loads(wire.encode_response(0, b"x")) == {"code": 0, "stdout": "eA=="}
    for bad in (b"", b'{"code": 0}', b'{"code": x, "stdout": ""}', b'{"code": 0, "stdout": "!!"}'):
        with pytest.raises(ValueError):
            wire.decode_response(bad)


@pytest.mark.parametrize("conf, expect", [
    (b'{"ipam": {"agent_socket": "/a.sock"}}', "/a.sock"),
    (b'{"ipam": {"agent_socket" :  ""}}', ""),
    (b'{"ipam": {"type": "x"}}', None),
    (b'{"ipam": {"agent_socket": "/a\\"b"}}', ...),  # escaped: decode properly
    (b'{"agent_socket": "/top", "ipam": {}}', ...),  # not under ipam
    (b'{"ipam": {"agent_socket": null}}', ...),
    (b'{"ipam": {"agent_socket": "/a"}, "x": {"agent_socket": "/b"}}', ...),
])
def test_agent_socket_scan_is_sure_or_defers_to_json(conf, expect):
    from topoipam.cni import agent_client, wire

    assert wire.agent_socket_in(conf) is expect if expect in (None, ...) else wire.agent_socket_in(conf) == expect
    decoded = json.loads(conf).get("ipam", {}).get("agent_socket")
    assert agent_client.agent_socket_for(conf) == (decoded if isinstance(decoded, str) and decoded else None)


@pytest.mark.slow
def test_launcher_works_in_a_non_editable_install(tmp_path, datastore):
    """A wheel installed into a fresh venv: pip's console script and then the launcher serve an ADD."""
    root = pathlib.Path(__file__).resolve().parents[1]
    pip = [sys.executable, "-m", "pip", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, "wheel", "--no-deps", "-w", str(tmp_path / "wheel"), str(root)], check=True,
                   capture_output=True)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    [wheel] = (tmp_path / "wheel").glob("topoipam-*.whl")
    subprocess.run([*pip, "--python", str(venv / "bin/python"), "install", "--no-deps", "--no-index", str(wheel)],
                   check=True, capture_output=True)
    plugin = venv / "bin/topoipam-cni"
    conf = json.dumps({"cniVersion": "1.0.0", "name": "wheel", "type": "ptp",
                       "ipam": {"type": "topoipam-cni", "nodename": "kube-node-0", "datastore": datastore,
                                "agent_socket": ""}}).encode()
    for i, step in enumerate(("pip's console script", "the launcher")):
        if i:
            out = subprocess.run([str(plugin), "install-launcher"], capture_output=True, text=True)
            assert out.returncode == 0, out.stderr
            text = plugin.read_text()
            assert text.startswith(f"#!{venv}/bin/python") and " -IS\n" in text.splitlines(True)[0]
            assert str(root) not in text  # nothing of the source checkout: the installed package is used
        env = cni_env("ADD", container_id=f"wheel{i}", netns="/run/netns/w")
        proc = subprocess.run([str(plugin)], input=conf, env=env, capture_output=True)
        assert proc.returncode == 0, (step, proc.stdout, proc.stderr[-2000:])
        assert json.loads(proc.stdout)["ips"][0]["address"].startswith("192.168.0."), step


def test_agent_logs_where_a_request_spent_its_time(tmp_path, datastore):
    """--log-level debug --slow-request-ms 0: every request's phases are in the agent's log."""
    agent = AgentProc(tmp_path, datastore, "kube-node-0",
                      extra_args=("--log-level", "debug", "--slow-request-ms", "0"))
    try:
        agent.start()
        conf = json.dumps({"cniVersion": "1.0.0", "name": "t", "type": "ptp",
                           "ipam": {"type": "topoipam-cni", "agent_socket": agent.socket}}).encode()
        for command in ("ADD", "DEL"):
            proc = subprocess.run([str(PLUGIN)], input=conf, capture_output=True,
                                  env=cni_env(command, container_id="timed1", netns="/run/netns/t"))
            assert proc.returncode == 0, proc.stdout
    finally:
        agent.stop()
    lines = [line for line in agent.log().splitlines() if "request ADD timed1" in line or "request DEL timed1" in line]
    assert len(lines) == 2, agent.log()[-3000:]
    assert re.search(r"request ADD timed1 \(exit 0\): [\d.]+ ms; own CPU [\d.]+ ms; read\+decode [\d.]+ ms \(CPU "
                     r"[\d.]+\), serve [\d.]+ ms \(CPU [\d.]+, the rest waiting on the datastore or the interpreter "
                     r"lock\), encode\+send [\d.]+ ms \(CPU [\d.]+\)", lines[0]), lines[0]


def test_agent_refuses_a_negative_slow_request_threshold(tmp_path):
    proc = subprocess.run([str(PLUGIN.parent / "topoipam"), "agent", "--node", "n", "--socket", f"{tmp_path}/s",
                           "--datastore", f"sqlite://{tmp_path}/x.db", "--slow-request-ms", "-1"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "--slow-request-ms must not be negative" in proc.stderr, proc.stderr
    assert not (tmp_path / "x.db").exists()


def test_cni_environment_reads_what_os_environ_reads():
    """Without ``os``, the CNI variables come from ``posix.environ`` decoded as ``os.environ`` decodes
    them (undecodable bytes as surrogates); unrelated variables are left out."""
    code = ("import sys; sys.path[:0] = %r\nfrom topoipam.cni import wire\n"
            "assert 'os' not in sys.modules\ngot = wire.cni_environment()\nimport os\n"
            "want = {k: os.environ[k] for k in wire.ENV_NAMES if k in os.environ}\n"
            "print(got == want, sorted(got), ascii(got['CNI_ARGS']), wire.cni_environment() == want)\n"
            % [str(pathlib.Path(__file__).resolve().parents[1] / "src")])
    env = {b"CNI_COMMAND": b"ADD", b"CNI_ARGS": b"K8S_POD_NAME=a\xffb\xc3\xa9", b"CNI_IFNAME": b"eth0",
           b"OTHER": b"x"}
    proc = subprocess.run([*launch_command(), "-c", code], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["True", "['CNI_ARGS',", "'CNI_COMMAND',", "'CNI_IFNAME']",
                                   "'K8S_POD_NAME=a\\udcffb\\xe9'", "True"]
