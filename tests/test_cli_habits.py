"""calicoctl habits: version, ``python -m``, global options after the verb, calicoctl's
configuration file and environment, no silent local fallback, "did you mean", bash completion.

Each runs the real entry point (in-process through ``main``, or the installed executables)
against real SQLite files and, for the calicoctl settings, a real etcd on loopback.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import sqlite_dump
from topoipam import __version__
from topoipam.cli.main import main

VENV_BIN = Path(__file__).resolve().parents[1] / ".venv" / "bin"
POOL = """apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: p1}
spec: {cidr: 10.7.0.0/24}
"""
CALICO_ENV = ("TOPOIPAM_DATASTORE", "DATASTORE_TYPE", "ETCD_ENDPOINTS", "ETCD_USERNAME", "ETCD_PASSWORD",
              "ETCD_CA_CERT_FILE", "ETCD_CERT_FILE", "ETCD_KEY_FILE")


@pytest.fixture
def run(capsys, monkeypatch, tmp_path):
    """``run(*argv, stdin=None, **env) -> (code, out, err)``: main() with only the given datastore settings."""
    import io

    for name in CALICO_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))

    def call(*argv, stdin=None, **env):
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        capsys.readouterr()
        monkeypatch.setattr("sys.stdin", io.StringIO(stdin or ""))
        code = main(list(argv))
        out, err = capsys.readouterr()
        for name in env:
            monkeypatch.delenv(name)
        return code, out, err

    return call


def test_version_flag_and_command(run):
    code, out, _ = run("--version")
    assert (code, out) == (0, f"topoipam {__version__}\n")
    code, out, _ = run("version", "--datastore", "sqlite:///nowhere/x.db")
    assert code == 0
    assert out.splitlines() == [f"Client Version:    v{__version__}",
                                f"Python:            {sys.version.split()[0]}",
                                "Datastore:         sqlite:///nowhere/x.db (--datastore)"]


def test_python_dash_m_runs_the_cli(tmp_path):
    proc = subprocess.run([str(VENV_BIN / "python"), "-m", "topoipam", "--datastore", f"sqlite://{tmp_path}/a.db",
                           "create", "-f", "-"], input=POOL, capture_output=True, text=True, timeout=60)
    assert (proc.returncode, proc.stdout) == (0, "Successfully created 1 'IPPool' resource(s)\n"), proc.stderr


def test_global_options_after_the_verb(run, tmp_path):
    url = f"sqlite://{tmp_path}/a.db"
    assert run("create", "-f", "-", "--datastore", url, stdin=POOL)[0] == 0
    code, out, _ = run("get", "ippool", "--datastore", url)
    assert code == 0 and "p1" in out
    code, out, _ = run("ipam", "show", "--datastore", url)  # a sub-command's sub-command too
    assert code == 0 and "10.7.0.0/24" in out
    code, out, _ = run("--datastore", f"sqlite://{tmp_path}/other.db", "get", "ippool", "--datastore", url)
    assert code == 0 and "p1" in out  # the one after the verb wins, as argparse orders them


@pytest.mark.parametrize("how", ["flag", "env"])
def test_empty_datastore_is_refused_not_the_default(run, tmp_path, how):
    argv = ("--datastore", "", "create", "-f", "-") if how == "flag" else ("create", "-f", "-")
    env = {} if how == "flag" else {"TOPOIPAM_DATASTORE": ""}
    code, out, err = run(*argv, stdin=POOL, **env)
    assert code == 2 and out == ""
    assert "is empty" in err and "never taken as the local default" in err
    assert not (tmp_path / "xdg").exists()  # no default file was made


def test_default_file_is_announced_once_when_created(run, tmp_path):
    code, _, err = run("create", "-f", "-", stdin=POOL)
    path = tmp_path / "xdg" / "topoipam" / "topoipam.db"
    assert code == 0 and path.exists()
    assert err == (f"topoipam: no datastore configured; creating a local one at sqlite://{path} "
                   "(use --datastore URL or TOPOIPAM_DATASTORE for a shared one)\n")
    code, out, err = run("get", "ippool")
    assert code == 0 and "p1" in out and err == ""


def _calicoctl_cfg(tmp_path, spec: dict, kind="CalicoAPIConfig") -> str:
    path = tmp_path / "calicoctl.cfg"
    path.write_text(json.dumps({"apiVersion": "projectcalico.org/v3", "kind": kind, "metadata": {}, "spec": spec}))
    return str(path)


@pytest.mark.etcd
def test_calicoctl_config_file_and_environment_reach_etcd(run, tmp_path, etcd_server):
    etcd_server.wipe()
    endpoints = ",".join(f"http://{e}" for e in etcd_server.endpoints().split(","))
    cfg = _calicoctl_cfg(tmp_path, {"datastoreType": "etcdv3", "etcdEndpoints": endpoints})
    code, out, err = run("-c", cfg, "create", "-f", "-", stdin=POOL)
    assert code == 0, err
    code, out, _ = run("get", "ippool", "--datastore", etcd_server.url())
    assert code == 0 and "p1" in out  # it really went to that etcd
    code, out, _ = run("get", "ippool", DATASTORE_TYPE="etcdv3", ETCD_ENDPOINTS=endpoints)
    assert code == 0 and "p1" in out
    code, out, _ = run("get", "ippool", ETCD_ENDPOINTS=endpoints)  # DATASTORE_TYPE may be left out
    assert code == 0 and "p1" in out
    code, out, _ = run("version", "--config", cfg)
    assert f"calicoctl configuration {cfg}" in out


@pytest.mark.parametrize("spec, kind, message", [
    ({"datastoreType": "kubernetes"}, "CalicoAPIConfig", "datastoreType 'kubernetes' is not supported"),
    ({"datastoreType": "etcdv3"}, "CalicoAPIConfig", "etcdEndpoints (ETCD_ENDPOINTS) names no endpoint"),
    ({"etcdEndpoints": "http://a:1", "k8sAPIEndpoint": "x"}, "CalicoAPIConfig", "spec.k8sAPIEndpoint is not supported"),
    ({"etcdEndpoints": "http://a:1,https://b:2"}, "CalicoAPIConfig", "all be http:// or all https://"),
    ({"etcdEndpoints": "http://a:1"}, "IPPool", "expected a document of kind CalicoAPIConfig"),
])
def test_bad_calicoctl_config_is_exit_2_and_writes_nothing(run, tmp_path, spec, kind, message):
    url = f"sqlite://{tmp_path}/a.db"
    assert run("--datastore", url, "create", "-f", "-", stdin=POOL)[0] == 0
    before = sqlite_dump(url)
    code, out, err = run("-c", _calicoctl_cfg(tmp_path, spec, kind), "delete", "ippool", "p1")
    assert (code, out) == (2, "") and message in err, err
    assert sqlite_dump(url) == before
    code, _, err = run("-c", str(tmp_path / "missing.cfg"), "get", "ippool")
    assert code == 2 and "cannot read it" in err


def test_calicoctl_environment_kubernetes_is_refused(run):
    code, _, err = run("get", "ippool", DATASTORE_TYPE="kubernetes")
    assert code == 2 and "not in the Kubernetes API" in err


@pytest.mark.parametrize("argv, hint", [
    (("gett", "ippool"), "(did you mean 'get'?)"),
    (("ipam", "shwo"), "(did you mean 'show'?)"),
    (("get", "ippoool"), "(did you mean 'ippool'?)"),
    (("get", "nodez"), "(did you mean 'node'?)"),
])
def test_did_you_mean(run, tmp_path, argv, hint):
    code, out, err = run("--datastore", f"sqlite://{tmp_path}/a.db", *argv)
    assert code == 2 and out == "" and hint in err, err


def test_agent_refuses_to_start_without_an_explicit_datastore(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in CALICO_ENV}
    env["XDG_DATA_HOME"] = str(tmp_path / "xdg")
    for extra in ([], ["--datastore", ""]):
        started = time.monotonic()
        proc = subprocess.run([str(VENV_BIN / "topoipam"), *extra, "agent", "--node", "n1",
                               "--socket", str(tmp_path / "a.sock")], env=env, capture_output=True, text=True,
                              timeout=60)
        assert proc.returncode == 2, proc.stderr
        assert ("no datastore configured" if not extra else "--datastore is empty") in proc.stderr
        assert "Traceback" not in proc.stderr and time.monotonic() - started < 60
    assert not (tmp_path / "xdg").exists() and not (tmp_path / "a.sock").exists()


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed")
@pytest.mark.parametrize("line, expected, absent", [
    ("topoipam ", {"get", "ipam", "version", "completion", "--datastore"}, {"show"}),
    ("topoipam ipam ", {"show", "check", "release", "split"}, {"get"}),
    ("topoipam ipam show --", {"--show-blocks", "--ip", "--datastore"}, {"--filename"}),
    ("topoipam get ", {"ippools", "nodes", "--output"}, {"check"}),
    ("topoipam --datastore sqlite:///x get ip", {"ippools", "ipamconfigurations", "ipreservations"}, {"nodes"}),
])
def test_bash_completion_from_the_parsers(run, line, expected, absent):
    code, script, _ = run("completion", "bash")
    assert code == 0
    words = line.split(" ")
    probe = (f"{script}\nCOMP_WORDS=({' '.join(repr(w) for w in words)}); COMP_CWORD={len(words) - 1}\n"
             "_topoipam; printf '%s\\n' \"${COMPREPLY[@]}\"\n")
    proc = subprocess.run(["bash", "--norc", "--noprofile"], input=probe, capture_output=True, text=True, timeout=30)
    offered = set(proc.stdout.split())
    assert expected <= offered, (expected - offered, proc.stderr)
    assert not (absent & offered)


def test_plugin_without_a_datastore_answers_code_7_and_makes_no_file(tmp_path):
    """Direct mode with no "datastore", no TOPOIPAM_DATASTORE and no agent: the spec's code 7, never
    a private default file (which would be an address space of its own on every node)."""
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "XDG_DATA_HOME": str(tmp_path / "xdg"),
           "CNI_CONTAINERID": "c1", "CNI_NETNS": "/run/netns/c1", "CNI_IFNAME": "eth0", "CNI_PATH": "/opt/cni/bin"}
    conf = {"cniVersion": "1.0.0", "name": "net", "type": "ptp",
            "ipam": {"type": "topoipam-cni", "nodename": "n1", "agent_socket": ""}}
    for command in ("ADD", "DEL"):
        proc = subprocess.run([str(VENV_BIN / "topoipam-cni")], input=json.dumps(conf), capture_output=True,
                              text=True, env={**env, "CNI_COMMAND": command}, timeout=60)
        answer = json.loads(proc.stdout)
        assert proc.returncode == 1 and answer["code"] == 7, proc.stdout
        assert "no datastore configured" in answer["msg"]
    assert not (tmp_path / "xdg").exists()
