"""``pip install .`` with no extras: the CLI and the CNI plugin work on SQLite, and a feature that
needs an extra names it (exit 1, no traceback). Installs this checkout non-editable into a fresh
virtual environment, with the exact versions of constraints.txt, as a node without etcd would."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
POOL = ("apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: p1}\nspec: {cidr: 10.9.0.0/26}\n---\n"
        "apiVersion: projectcalico.org/v3\nkind: Node\nmetadata: {name: n1}\n")


@pytest.fixture(scope="module")
def bare_venv(tmp_path_factory) -> Path:
    venv = tmp_path_factory.mktemp("bare") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    proc = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                           "-c", str(REPO / "constraints.txt"), str(REPO)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return venv


def _run(venv: Path, *argv: str, stdin: str = "", env: dict | None = None):
    return subprocess.run([str(venv / "bin" / argv[0]), *argv[1:]], input=stdin, capture_output=True, text=True,
                          timeout=120, env=env)


@pytest.mark.slow
def test_no_extras_installs_no_grpc_and_no_prometheus(bare_venv):
    proc = _run(bare_venv, "python", "-c", "import importlib.util as u; print(u.find_spec('grpc'), "
                "u.find_spec('prometheus_client'), u.find_spec('yaml') is not None)")
    assert proc.stdout.split() == ["None", "None", "True"], proc.stderr


@pytest.mark.slow
def test_cli_and_plugin_on_sqlite_without_extras(bare_venv, tmp_path):
    url = f"sqlite://{tmp_path}/t.db"
    assert _run(bare_venv, "topoipam", "--datastore", url, "create", "-f", "-", stdin=POOL).returncode == 0
    env = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c1", "CNI_NETNS": "/run/netns/c1", "CNI_IFNAME": "eth0",
           "CNI_PATH": "/opt/cni/bin", "PATH": "/usr/bin:/bin"}
    conf = {"cniVersion": "1.0.0", "name": "net", "type": "ptp",
            "ipam": {"type": "topoipam-cni", "datastore": url, "nodename": "n1"}}
    proc = _run(bare_venv, "topoipam-cni", stdin=json.dumps(conf), env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads(proc.stdout)["ips"][0]["address"].startswith("10.9.0.")
    shown = _run(bare_venv, "topoipam", "--datastore", url, "ipam", "show")
    assert shown.returncode == 0 and "10.9.0.0/26" in shown.stdout


@pytest.mark.slow
@pytest.mark.parametrize("argv, extra", [
    (("--datastore", "etcd://127.0.0.1:1", "get", "ippool"), "etcd"),
    (("ipam", "headroom", "--by", "rack", "-o", "prometheus"), "metrics"),
    (("metrics", "serve", "--listen", "127.0.0.1:0"), "metrics"),
    (("agent", "--node", "n0", "--socket", "/nonexistent/a.sock", "--metrics-listen", "127.0.0.1:0"), "metrics"),
])
def test_a_feature_without_its_extra_names_the_extra(bare_venv, tmp_path, argv, extra):
    if "--datastore" not in argv:
        argv = ("--datastore", f"sqlite://{tmp_path}/t.db", *argv)
    proc = _run(bare_venv, "topoipam", *argv)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert f"pip install 'topoipam[{extra}]'" in proc.stderr, proc.stderr
