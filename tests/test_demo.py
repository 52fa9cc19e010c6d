"""``topoipam demo``: the seed tutorial end to end, through the real CLI and the CNI request handler."""

from __future__ import annotations

import os
import tempfile

import pytest

RACK_POOLS_WIDE = (
    "NAME            CIDR             NAT    IPIPMODE   VXLANMODE   DISABLED   DISABLEBGPEXPORT   SELECTOR      "
    "ASSIGNMENTMODE   \n"
    "rack-0-ippool   192.168.0.0/24   true   Always     Never       false      false              rack == \"0\"   "
    "Automatic        \n"
    "rack-1-ippool   192.168.1.0/24   true   Always     Never       false      false              rack == \"1\"   "
    "Automatic        \n\n")

PODS_WIDE = (
    "$ topoipam get workloadendpoints -o wide\n"
    "NAME                   NAMESPACE   IP              NODE          POOL            BLOCK              \n"
    "nginx-5c7588df-62lnf   default     192.168.1.128   kube-node-3   rack-1-ippool   192.168.1.128/26   \n"
    "nginx-5c7588df-pnsvv   default     192.168.1.193   kube-node-2   rack-1-ippool   192.168.1.192/26   \n"
    "nginx-5c7588df-prx4z   default     192.168.0.64    kube-node-0   rack-0-ippool   192.168.0.64/26    \n"
    "nginx-5c7588df-s7qw6   default     192.168.0.128   kube-node-1   rack-0-ippool   192.168.0.128/26   \n"
    "nginx-5c7588df-w7r7g   default     192.168.1.192   kube-node-2   rack-1-ippool   192.168.1.192/26   \n\n")


@pytest.fixture
def own_tmp(tmp_path, monkeypatch):
    """The demo's temporary directory goes under tmp_path, so the test can see it is removed."""
    base = tmp_path / "tmp"
    base.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(base))
    return base


def test_demo_runs_the_seed_end_to_end_and_exits_0(cli, sqlite_url, own_tmp, monkeypatch):
    monkeypatch.setenv("CALICO_IPV4POOL_CIDR", "10.0.0.0/8")  # the demo installs as a fresh cluster would
    monkeypatch.delenv("TOPOIPAM_DATASTORE", raising=False)
    r = cli("demo")
    assert (r.code, r.err) == (0, ""), r
    out = r.out
    steps = ["$ topoipam init\n", "$ topoipam create -f - <<EOF\n---\napiVersion: projectcalico.org/v3\nkind: Node\n",
             "$ topoipam get ippool -o wide\n", "default-ipv4-ippool   192.168.0.0/16   true   Always",
             "$ topoipam delete ippools default-ipv4-ippool\nSuccessfully deleted 1 'IPPool' resource(s)\n",
             "$ topoipam label nodes kube-node-3 rack=1\nSuccessfully set label rack on nodes kube-node-3\n",
             '  nodeSelector: rack == "1"\nEOF\nSuccessfully created 1 \'IPPool\' resource(s)\n',
             "$ topoipam get ippool -o wide\n" + RACK_POOLS_WIDE,
             "K8S_POD_NAME=nginx-5c7588df-pnsvv' topoipam-cni   # on kube-node-2\n"
             '{"cniVersion": "1.0.0", "ips": [{"address": "192.168.1.193/26", "gateway": "169.254.1.1"}], "dns": {}}\n',
             PODS_WIDE,
             "CHECK OK: all 5 addresses lie in their rack's pool (rack 0: 192.168.0.0/24, rack 1: 192.168.1.0/24)\n",
             "$ topoipam label nodes kube-node-1 rack=1 --overwrite\n",
             "CHECK OK: running pod nginx-5c7588df-s7qw6 kept 192.168.0.128 (rack-0's pool 192.168.0.0/24)\n",
             "$ CNI_COMMAND=DEL ", "$ CNI_COMMAND=ADD ",
             "CHECK OK: recreated pod nginx-5c7588df-k8vz2 on kube-node-1 got 192.168.1.",
             "$ topoipam ipam show --show-blocks\n", "$ topoipam ipam check\n",
             "Check complete; found 0 problems.\n", "Demo complete: every check holds.\n"]
    at = 0
    for step in steps:  # in this order
        found = out.find(step, at)
        assert found >= 0, f"missing after offset {at}: {step!r}"
        at = found + len(step)
    # the seed's pool creation is shown exactly as the seed writes it
    assert ("$ topoipam create -f - <<EOF\napiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata:\n"
            "  name: rack-0-ippool\nspec:\n  cidr: 192.168.0.0/24\n  ipipMode: Always\n  natOutgoing: true\n"
            '  nodeSelector: rack == "0"\nEOF\n') in out
    # kube-node-1's emptied rack-0 block went back; the other nodes' blocks stay
    blocks = out[out.index("$ topoipam ipam show --show-blocks"):]
    assert "| Block    | 192.168.0.128/26 |" not in blocks and "| Block    | 192.168.0.64/26  |" in blocks
    assert list(own_tmp.iterdir()) == []  # the throwaway datastore is gone
    assert not os.path.exists(sqlite_url[len("sqlite://"):])  # --datastore is not touched
    assert "TOPOIPAM_DATASTORE" not in os.environ and os.environ["CALICO_IPV4POOL_CIDR"] == "10.0.0.0/8"


def test_demo_check_fails_for_real_when_the_racks_have_no_pools(tmp_path):
    """The demo's pod check against a real cluster set up wrongly (one pool for all nodes, no rack pools):
    it fails, names the pod, its rack and address, and raises DemoFailed (run_demo turns that into exit 1)."""
    import io

    from topoipam.cli import demo

    out = io.StringIO()
    one_pool = ("apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata:\n  name: everyone\n"
                "spec:\n  cidr: 10.0.0.0/24\n")
    with demo._demo_environment(f"sqlite://{tmp_path}/wrong.db"):
        d = demo.Demo(out)
        d.cli("create", "-f", "-", stdin=demo.NODES_YAML)
        d.cli("create", "-f", "-", stdin=one_pool)
        with pytest.raises(demo.DemoFailed, match="nginx-5c7588df-prx4z on kube-node-0 .rack 0. got 10.0.0."):
            d.pods()
    assert "CHECK FAILED: nginx-5c7588df-prx4z on kube-node-0 (rack 0) got 10.0.0." in out.getvalue()
    assert "outside 192.168.0.0/24" in out.getvalue()

def test_demo_writes_exactly_the_seed_texts_the_tests_use():
    """The demo keeps its own copy of the seed's here-documents (src/ does not import tests/): the same text."""
    from seed_yaml import NODES_YAML, RACK_POOL
    from topoipam.cli import demo

    assert (demo.NODES_YAML, demo.RACK_POOL) == (NODES_YAML, RACK_POOL)
