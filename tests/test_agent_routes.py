"""``topoipam agent --routes blackhole``: the agent, run inside a network namespace the test made,
keeps one blackhole route per block affine to its node (IPv4 and IPv6) and removes it when the
block is no longer the node's. The routes are read back with ``ip -n NS -j route``."""

from __future__ import annotations

import ipaddress
import json
import subprocess
import time

import pytest

from agent_proc import AgentProc, exec_cni
from netns import IP, Netns, netns_unavailable_reason
from topoipam.cli.main import main

pytestmark = pytest.mark.netns
POOLS = """apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: v4}
spec: {cidr: 10.78.0.0/24, blockSize: 26}
---
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: v6}
spec: {cidr: "fd00:78::/120", blockSize: 122}
"""


def blackholes(ns: str) -> dict[str, dict]:
    routes = {}
    for family in ("-4", "-6"):
        out = subprocess.run([IP, "-n", ns, family, "-j", "route", "show", "type", "blackhole"],
                             check=True, capture_output=True, text=True).stdout
        routes.update({r["dst"]: r for r in json.loads(out or "[]")})
    return routes


def wait_for(predicate, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def test_blackhole_route_per_affine_block(tmp_path, monkeypatch):
    reason = netns_unavailable_reason()
    if reason:
        pytest.skip(reason)
    url = f"sqlite://{tmp_path}/t.db"
    monkeypatch.setattr("sys.stdin", __import__("io").StringIO(POOLS))
    assert main(["--datastore", url, "create", "-f", "-"]) == 0
    with Netns() as ns:
        node_ns = ns.add("routes")
        agent = AgentProc(tmp_path, url, "n1", extra_args=("--routes", "blackhole"),
                          prefix=(IP, "netns", "exec", node_ns))
        try:
            agent.start()
            add = exec_cni("ADD", agent.socket, "c1", assign_ipv6=True)
            assert add.returncode == 0, add.stdout
            v4, v6 = (str(ipaddress.ip_interface(ip["address"]).network) for ip in add.json["ips"])
            wait_for(lambda: {v4, v6} <= set(blackholes(node_ns)))
            route = blackholes(node_ns)[v4]
            assert route["protocol"] in ("199", 199) and route["metric"] == 4096, route
            assert set(blackholes(node_ns)) == {v4, v6}  # nothing else added
            # The machine's own routing table is untouched.
            assert v4 not in subprocess.run([IP, "-4", "route", "show"], capture_output=True, text=True).stdout
            assert exec_cni("DEL", agent.socket, "c1", assign_ipv6=True).returncode == 0
            # The empty block stays affine (as in Calico), so its route stays; deleting the pool releases
            # the affinity, and the agent removes the route.
            assert main(["--datastore", url, "delete", "ippool", "v4"]) == 0
            wait_for(lambda: set(blackholes(node_ns)) == {v6})
        finally:
            assert agent.stop() == 0, agent.log()[-3000:]
        assert f"route: blackhole {v4} (block affine to n1)" in agent.log()
        assert f"route: removed blackhole {v4} (no longer affine to n1)" in agent.log()
