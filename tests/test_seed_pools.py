"""The seed tutorial's pool steps end to end, with ``topoipam`` typed where the seed types calicoctl/kubectl.

Steps (seed/000_f45c358d4eeae7f9.txt): install (``init``), four nodes, list the
default pool, delete it, label the nodes by rack, create one pool per rack
from stdin exactly as the seed writes them, list the pools again.
"""

from __future__ import annotations

from seed_yaml import NODES_YAML, RACK_POOL

WIDE_HEADER = ("NAME                  CIDR             NAT    IPIPMODE   VXLANMODE   DISABLED   "
               "DISABLEBGPEXPORT   SELECTOR   ASSIGNMENTMODE   \n")


def test_seed_pool_steps(cli, sqlite_url, tmp_path, monkeypatch):
    for var in ("CALICO_IPV4POOL_CIDR", "CALICO_IPV4POOL_IPIP", "NO_DEFAULT_POOLS", "CALICO_IPV6POOL_CIDR"):
        monkeypatch.delenv(var, raising=False)
    r = cli("init")
    assert r.code == 0 and "default-ipv4-ippool (192.168.0.0/16)" in r.out

    nodes = tmp_path / "nodes.yaml"
    nodes.write_text(NODES_YAML)
    assert cli("create", "-f", str(nodes)).out == "Successfully created 4 'Node' resource(s)\n"

    r = cli("get", "ippool", "-o", "wide")
    assert r.out == (
        WIDE_HEADER
        + "default-ipv4-ippool   192.168.0.0/16   true   Always     Never       false      false              all()      Automatic        \n"
        + "\n"
    )

    r = cli("delete", "ippools", "default-ipv4-ippool")
    assert (r.code, r.out) == (0, "Successfully deleted 1 'IPPool' resource(s)\n")

    for i in range(4):
        r = cli("label", "nodes", f"kube-node-{i}", f"rack={i // 2}")
        assert (r.code, r.out) == (0, f"Successfully set label rack on nodes kube-node-{i}\n")

    for rack in (0, 1):
        r = cli("create", "-f", "-", stdin=RACK_POOL.format(rack=rack))
        assert (r.code, r.out, r.err) == (0, "Successfully created 1 'IPPool' resource(s)\n", "")

    r = cli("get", "ippool", "-o", "wide")
    assert r.out == (
        "NAME            CIDR             NAT    IPIPMODE   VXLANMODE   DISABLED   DISABLEBGPEXPORT   SELECTOR      ASSIGNMENTMODE   \n"
        "rack-0-ippool   192.168.0.0/24   true   Always     Never       false      false              rack == \"0\"   Automatic        \n"
        "rack-1-ippool   192.168.1.0/24   true   Always     Never       false      false              rack == \"1\"   Automatic        \n"
        "\n"
    )

    # The labels the pools select on are where the tutorial put them.
    from topoipam.resources import repo
    from topoipam.selector import parse
    from topoipam.store import open_store

    with open_store(sqlite_url) as store:
        pools = repo.list_pools(store)
        nodes_by_pool = {
            p.name: sorted(n.name for n in repo.list_nodes(store) if parse(p.spec.node_selector).evaluate(n.labels))
            for p in pools
        }
    assert nodes_by_pool == {"rack-0-ippool": ["kube-node-0", "kube-node-1"],
                             "rack-1-ippool": ["kube-node-2", "kube-node-3"]}

