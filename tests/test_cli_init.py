"""``topoipam init``: the default pools of reference 1.4, driven by calico-node's environment variables."""

from __future__ import annotations

import ipaddress
import json

import pytest

from conftest import sqlite_dump

ENV_VARS = [
    "NO_DEFAULT_POOLS", "FELIX_IPV6SUPPORT",
    *(f"CALICO_IPV{v}POOL_{s}" for v in (4, 6) for s in
      ("CIDR", "BLOCK_SIZE", "IPIP", "VXLAN", "NAT_OUTGOING", "NODE_SELECTOR", "DISABLE_BGP_EXPORT")),
]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for var in ENV_VARS:
        monkeypatch.delenv(var, raising=False)


def pools(cli) -> dict:
    out = json.loads(cli("get", "ippool", "-o", "json").out)
    return {p["metadata"]["name"]: p["spec"] for p in out["items"]}


def test_default_pool_and_idempotence(cli, sqlite_url):
    r = cli("init")
    assert (r.code, r.err) == (0, "")
    assert r.out == ("Created default IPv4 pool default-ipv4-ippool (192.168.0.0/16) with NAT outgoing true. "
                     "IPIP mode: Always, VXLAN mode: Never, DisableBGPExport: false\n")
    assert pools(cli) == {"default-ipv4-ippool": {
        "cidr": "192.168.0.0/16", "vxlanMode": "Never", "ipipMode": "Always", "natOutgoing": True, "blockSize": 26,
        "nodeSelector": "all()", "allowedUses": ["Workload", "Tunnel"], "assignmentMode": "Automatic"}}
    before = sqlite_dump(sqlite_url)
    r = cli("init")
    assert (r.code, r.out) == (0, "Not creating default IPv4 pool default-ipv4-ippool: "
                                  "an IPv4 pool exists already (default-ipv4-ippool)\n")
    assert sqlite_dump(sqlite_url) == before


def test_any_pool_of_the_family_prevents_the_default_even_disabled(cli):
    doc = "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: mine}\nspec: {cidr: 10.9.0.0/16, disabled: true}\n"
    cli("create", "-f", "-", stdin=doc)
    assert "an IPv4 pool exists already (mine)" in cli("init").out
    assert list(pools(cli)) == ["mine"]


def test_environment_overrides(cli, monkeypatch):
    env = {"CALICO_IPV4POOL_CIDR": "10.10.0.0/16", "CALICO_IPV4POOL_BLOCK_SIZE": "24",
           "CALICO_IPV4POOL_IPIP": "off", "CALICO_IPV4POOL_VXLAN": "CrossSubnet",
           "CALICO_IPV4POOL_NAT_OUTGOING": "no", "CALICO_IPV4POOL_NODE_SELECTOR": 'rack == "0"',
           "CALICO_IPV4POOL_DISABLE_BGP_EXPORT": "yes",
           "CALICO_IPV6POOL_CIDR": "fd00:10::/48", "CALICO_IPV6POOL_BLOCK_SIZE": "120",
           "CALICO_IPV6POOL_VXLAN": "always"}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    r = cli("init")
    assert r.code == 0, r
    got = pools(cli)
    assert got["default-ipv4-ippool"] == {
        "cidr": "10.10.0.0/16", "vxlanMode": "CrossSubnet", "ipipMode": "Never", "disableBGPExport": True,
        "blockSize": 24, "nodeSelector": 'rack == "0"', "allowedUses": ["Workload", "Tunnel"],
        "assignmentMode": "Automatic"}
    v6 = got["default-ipv6-ippool"]
    assert (v6["cidr"], v6["blockSize"], v6["vxlanMode"], v6["ipipMode"]) == ("fd00:10::/48", 120, "Always", "Never")
    assert "natOutgoing" not in v6  # IPv6 NAT defaults to false


def test_cidr_none_skips_a_family_and_ipv6_ula(cli, monkeypatch):
    monkeypatch.setenv("CALICO_IPV4POOL_CIDR", "none")
    monkeypatch.setenv("FELIX_IPV6SUPPORT", "true")
    assert cli("init").code == 0
    got = pools(cli)
    assert list(got) == ["default-ipv6-ippool"]
    net = ipaddress.ip_network(got["default-ipv6-ippool"]["cidr"])
    assert net.prefixlen == 48 and net.subnet_of(ipaddress.ip_network("fd00::/8"))


def test_no_default_pools(cli, monkeypatch):
    monkeypatch.setenv("NO_DEFAULT_POOLS", "TRUE")
    r = cli("init")
    assert r.code == 0 and pools(cli) == {}
    monkeypatch.setenv("CALICO_IPV4POOL_CIDR", "10.0.0.0/16")
    r = cli("init")
    assert (r.code, r.err) == (2, "Invalid configuration with NO_DEFAULT_POOLS defined and CALICO_IPV4POOL_CIDR "
                                  "or CALICO_IPV6POOL_CIDR defined.\n")


@pytest.mark.parametrize("var, value, message", [
    ("CALICO_IPV4POOL_BLOCK_SIZE", "19", "Invalid blocksize 19 for version 4"),
    ("CALICO_IPV4POOL_BLOCK_SIZE", "x", 'Unable to convert blocksize to int: strconv.Atoi: parsing "x": invalid syntax'),
    ("CALICO_IPV6POOL_BLOCK_SIZE", "64", None),  # IPv6 not asked for: its variables are not read
    ("CALICO_IPV4POOL_IPIP", "sometimes", "Unrecognized IPIP mode specified in CALICO_IPV4POOL_IPIP 'sometimes'"),
    ("CALICO_IPV4POOL_VXLAN", "maybe", "Unrecognized VXLAN mode specified in CALICO_IPV4POOL_VXLAN 'maybe'"),
    ("CALICO_IPV4POOL_CIDR", "10.0.0.0/33", "Invalid CIDR specified in CALICO_IPV4POOL_CIDR '10.0.0.0/33'"),
    ("CALICO_IPV4POOL_CIDR", "fd00::/48", "Invalid CIDR specified in CALICO_IPV4POOL_CIDR 'fd00::/48'"),
    ("CALICO_IPV4POOL_NODE_SELECTOR", "rack ==", "Invalid node selector 'rack ==' for version 4: "),
    ("CALICO_IPV4POOL_VXLAN", "Always", "Failed to create default IPv4 IP pool: 192.168.0.0/16: error with field "
     "IPPool.Spec.VXLANMode = 'Always' (Cannot enable both VXLAN and IPIP on the same IPPool)"),
])
def test_fatal_configuration_exits_2_and_writes_nothing(cli, sqlite_url, monkeypatch, var, value, message):
    cli("get", "ippool")  # creates the file
    before = sqlite_dump(sqlite_url)
    monkeypatch.setenv(var, value)
    r = cli("init")
    if message is None:
        assert r.code == 0
        return
    assert r.code == 2 and r.err.startswith(message) and "Traceback" not in r.err, r
    assert sqlite_dump(sqlite_url) == before
