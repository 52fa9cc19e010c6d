"""CNI spec conformance of the installed ``topoipam-cni``: the protocol edge.

Each test execs .venv/bin/topoipam-cni as a runtime does (environment, stdin,
stdout, exit code) and checks the spec's error object and codes for every
command and version: 1 incompatible version, 2 unsupported field, 4 invalid
environment, 6 decode failure, 7 invalid network config. Requests that are
refused here never open the datastore (the SQLite file is not even created).
The IPAM behaviour (ADD/DEL/CHECK/GC/STATUS against a datastore) is in
test_cni_plugin.py.
"""

from __future__ import annotations

import json
import subprocess

import pytest

from netns import PLUGIN, cni_env, run_plugin

VERSIONS = ["0.3.1", "0.4.0", "1.0.0", "1.1.0"]
COMMANDS = ["ADD", "DEL", "CHECK", "GC", "STATUS"]


@pytest.fixture
def db(tmp_path):
    return tmp_path / "never-created.db"


def conf(db, version="1.0.0", **ipam):
    return {"cniVersion": version, "name": "net1", "type": "bridge",
            "ipam": {"type": "topoipam-cni", "datastore": f"sqlite://{db}", "nodename": "kube-node-0", **ipam}}


def env_for(command, **kw):
    defaults = {"container_id": "ctr1", "netns": "/run/netns/none", "ifname": "eth0"}
    if command in ("GC", "STATUS"):
        defaults = {"container_id": None, "netns": None, "ifname": None}
    defaults.update(kw)
    return cni_env(command, **defaults)


def assert_error(call, code, version="1.1.0", msg_has=""):
    assert call.returncode == 1, (call.stdout, call.stderr)
    err = call.json
    assert err["code"] == code, err
    assert err["cniVersion"] == version
    assert isinstance(err["msg"], str) and err["msg"]
    assert msg_has in err["msg"] + err.get("details", ""), err
    assert "Traceback" not in call.stderr
    return err


@pytest.mark.parametrize("version", VERSIONS)
def test_version_echoes_requested_version(version):
    call = run_plugin(PLUGIN, cni_env("VERSION"), {"cniVersion": version})
    assert call.returncode == 0, call.stderr
    assert call.json == {"cniVersion": version, "supportedVersions": VERSIONS}


def test_version_without_stdin_reports_latest():
    call = run_plugin(PLUGIN, cni_env("VERSION"), b"")
    assert call.returncode == 0
    assert call.json["cniVersion"] == "1.1.0" and call.json["supportedVersions"] == VERSIONS


def test_dash_v_prints_versions():
    out = subprocess.run([str(PLUGIN), "-v"], capture_output=True, text=True)
    assert out.returncode == 0 and "1.1.0" in out.stdout and "topoipam-cni" in out.stdout


def test_main_in_process_returns_the_exit_code(capsys):
    from topoipam.cni.main import main

    assert main(["--version"]) == 0
    assert "CNI protocol versions supported: 0.3.1, 0.4.0, 1.0.0, 1.1.0" in capsys.readouterr().out


def test_missing_cni_command_is_code_4(db):
    env = cni_env("ADD")
    del env["CNI_COMMAND"]
    call = run_plugin(PLUGIN, env, conf(db))
    assert_error(call, 4, "1.0.0", "CNI_COMMAND")
    assert "CNI protocol versions supported" in call.stderr


def test_unknown_cni_command_is_code_4(db):
    assert_error(run_plugin(PLUGIN, env_for("FROB"), conf(db)), 4, "1.0.0", "FROB")


@pytest.mark.parametrize("command", ["ADD", "DEL", "CHECK"])
@pytest.mark.parametrize("variable", ["container_id", "ifname"])
def test_missing_required_variable_is_code_4(db, command, variable):
    env = env_for(command, **{variable: None})
    name = {"container_id": "CNI_CONTAINERID", "ifname": "CNI_IFNAME"}[variable]
    assert_error(run_plugin(PLUGIN, env, conf(db, "1.1.0")), 4, msg_has=name)
    assert not db.exists()


@pytest.mark.parametrize("command", ["ADD", "CHECK"])
def test_missing_netns_is_code_4_for_add_and_check(db, command):
    assert_error(run_plugin(PLUGIN, env_for(command, netns=None), conf(db, "1.1.0")), 4, msg_has="CNI_NETNS")


@pytest.mark.parametrize("container_id,ifname,what", [
    ("-leading-dash", "eth0", "CNI_CONTAINERID"),
    ("has space", "eth0", "CNI_CONTAINERID"),
    ("ok", "a-name-longer-than-15", "too long"),
    ("ok", "eth/0", "CNI_IFNAME"),
    ("ok", "..", "CNI_IFNAME"),
])
def test_invalid_container_id_or_ifname_is_code_4(db, container_id, ifname, what):
    env = env_for("ADD", container_id=container_id, ifname=ifname)
    assert_error(run_plugin(PLUGIN, env, conf(db, "1.1.0")), 4, msg_has=what)


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("stdin", [b"{not json", b"[1, 2]", b"", b"\xff\xfe"])
def test_undecodable_config_is_code_6(db, command, stdin):
    assert_error(run_plugin(PLUGIN, env_for(command), stdin), 6, msg_has="decoding network config")


def test_non_string_cni_version_is_code_6(db):
    c = conf(db)
    c["cniVersion"] = 1.0
    assert_error(run_plugin(PLUGIN, env_for("ADD"), c), 6, msg_has="cniVersion")


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("version", ["0.1.0", "0.2.0", "0.3.0", "1.2.0", "2.0.0", ""])
def test_unsupported_version_is_code_1(db, command, version):
    c = conf(db, version)
    if not version:
        del c["cniVersion"]
    err = assert_error(run_plugin(PLUGIN, env_for(command), c), 1)
    assert err["msg"] == "incompatible CNI versions"
    assert json.dumps(VERSIONS) in err["details"]
    assert not db.exists()


@pytest.mark.parametrize("command,version", [("CHECK", "0.3.1"), ("GC", "0.3.1"), ("GC", "0.4.0"), ("GC", "1.0.0"),
                                             ("STATUS", "0.4.0"), ("STATUS", "1.0.0")])
def test_command_newer_than_version_is_code_1(db, command, version):
    err = assert_error(run_plugin(PLUGIN, env_for(command), conf(db, version)), 1, version)
    assert err["msg"] == f"config version does not allow {command}"


@pytest.mark.parametrize("name", [None, "", "-bad", "sp ace", 7])
def test_missing_or_invalid_network_name_is_code_7(db, name):
    c = conf(db)
    c["name"] = name
    if name is None:
        del c["name"]
    assert_error(run_plugin(PLUGIN, env_for("ADD"), c), 7, "1.0.0", "network name")


@pytest.mark.parametrize("version", VERSIONS)
def test_error_object_carries_requested_version(db, version):
    c = conf(db, version, assign_ipv4="maybe")
    assert_error(run_plugin(PLUGIN, env_for("ADD"), c), 7, version, "assign_ipv4")


@pytest.mark.parametrize("ipam,what", [
    ({"assign_ipv4": False}, "nothing to assign"),
    ({"assign_ipv6": 1}, "assign_ipv6"),
    ({"nodename": 5}, "ipam.nodename"),
    ({"ipv4_pools": "rack-0-ippool"}, "ipv4_pools"),
    ({"ipv4_pools": ["fd00::/64"]}, "isn't a IPv4 address"),
    ({"ipv6_pools": ["10.0.0.0/8"]}, "isn't a IPv6 address"),
    ({"ipv4_pools": ["10.0.0.0/33"]}, "error parsing pool"),
    ({"gateway": "not-an-ip"}, "ipam.gateway"),
    ({"gateway": ["10.0.0.1", "10.0.0.2"]}, "two IPv4"),
    ({"gateway": "none", "routes": [{"dst": "0.0.0.0/0"}]}, "has no gw"),
    ({"segment": "flat"}, "ipam.segment"),
    ({"routes": [{"dst": "0.0.0.0/0", "gw": "fd00::1"}]}, "different IP families"),
    ({"routes": [{"dst": "nowhere", "gw": "10.0.0.1"}]}, "is not a CIDR"),
    ({"routes": [{"dst": "0.0.0.0/0", "gw": "10.0.0.1", "mtu": 1}]}, "ipam.routes[0]"),
])
def test_invalid_ipam_config_is_code_7(db, ipam, what):
    assert_error(run_plugin(PLUGIN, env_for("ADD"), conf(db, **ipam)), 7, "1.0.0", what)
    assert not db.exists()


def test_missing_ipam_section_is_code_7(db):
    c = conf(db)
    del c["ipam"]
    assert_error(run_plugin(PLUGIN, env_for("ADD"), c), 7, "1.0.0", '"ipam"')


def test_unknown_ipam_field_is_code_2_naming_key_and_value(db):
    err = assert_error(run_plugin(PLUGIN, env_for("ADD"), conf(db, subnet="10.0.0.0/24")), 2, "1.0.0")
    assert "ipam.subnet" in err["msg"] and '"10.0.0.0/24"' in err["msg"]
    assert not db.exists()


@pytest.mark.parametrize("args,what", [
    ("FOO=bar", "unknown args"),
    ("K8S_POD_NAME=p;FOO=bar;IgnoreUnknown=0", "FOO"),
    ("justakey", "invalid pair"),
    ("IgnoreUnknown=1;IP=10.0.0.300", "not an IP address"),
    ("IgnoreUnknown=1;IP=10.0.0.1,10.0.0.2", "two IPv4"),
])
def test_invalid_cni_args_are_code_4(db, args, what):
    assert_error(run_plugin(PLUGIN, env_for("ADD", args=args), conf(db)), 4, "1.0.0", what)
    assert not db.exists()


def test_datastore_in_no_directory_is_a_configuration_error_code_7(tmp_path):
    """Permanent: code 7, not 11 (which a kubelet would retry forever)."""
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    c = conf(blocker / "sub" / "store.db", "1.1.0")
    err = assert_error(run_plugin(PLUGIN, env_for("ADD"), c), 7)
    assert str(blocker) in err["msg"]


def test_status_with_unopenable_datastore_is_code_50(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    err = assert_error(run_plugin(PLUGIN, env_for("STATUS"), conf(blocker / "x.db", "1.1.0")), 50)
    assert "does not answer" in err["msg"]
