"""Four processes, four nodes of one rack, claiming the rack's first block at the same moment
(``topoipam ipam assign`` in each, released together): one block, affine to rack=0, on SQLite and
on a real etcd. A domain's affinity key names the domain, not the node, so the four claims are one
compare-and-swap race on the same keys; the losers retry and assign from the winner's block."""

from __future__ import annotations

import ipaddress
import subprocess
import sys
import textwrap
import time

import pytest

from netns import python
from topoipam.cli.main import main
from topoipam.ipam import IpamService, keys
from topoipam.store import open_store

PROCS, ROUNDS = 4, 3

WORKER = textwrap.dedent("""
    import os, sys, time
    from topoipam.cli.main import main
    url, node, go = sys.argv[1], sys.argv[2], sys.argv[3]
    # A first command imports the CLI and the backend before the start line, so that what races is the claim.
    import contextlib, io
    with contextlib.redirect_stdout(io.StringIO()):
        main(["--datastore", url, "get", "nodes", node])
    while not os.path.exists(go):
        time.sleep(0.0005)
    sys.exit(main(["--datastore", url, "ipam", "assign", "--node", node, "--handle", f"race.{node}"]))
""")


def _cli(url, *argv, stdin=None):
    import io

    saved = sys.stdin
    sys.stdin = io.StringIO(stdin or "")
    try:
        assert main(["--datastore", url, *argv]) == 0, argv
    finally:
        sys.stdin = saved


def _setup(url, round_):
    nodes = [f"rack0-{round_}-{i}" for i in range(PROCS)]
    docs = "".join(f"---\napiVersion: projectcalico.org/v3\nkind: Node\nmetadata:\n  name: {n}\n"
                   f"  labels:\n    rack: \"r{round_}\"\n" for n in nodes)
    _cli(url, "create", "-f", "-", stdin=docs)
    pool = (f"apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata:\n  name: rack-r{round_}\n"
            f"  annotations:\n    topoipam.io/affinity-label: rack\nspec:\n  cidr: 10.{round_}.0.0/24\n"
            f"  blockSize: 26\n  nodeSelector: rack == \"r{round_}\"\n")
    _cli(url, "create", "-f", "-", stdin=pool)
    return nodes


def _race(url, nodes, go):
    procs = [subprocess.Popen([python(), "-c", WORKER, url, n, str(go)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for n in nodes]
    try:
        time.sleep(1.0)  # let every worker reach its start line
        go.touch()
        outputs = [p.communicate(timeout=120) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for p, (out, err) in zip(procs, outputs):
        assert p.returncode == 0, err
    return [ipaddress.ip_address(out.strip()) for out, _ in outputs]


@pytest.mark.parametrize("backend", ["sqlite", "etcd"])
def test_four_processes_of_one_rack_claim_one_block(tmp_path, request, backend):
    if backend == "etcd":
        server = request.getfixturevalue("etcd_server")
        server.wipe()
        url = server.url()
    else:
        url = f"sqlite://{tmp_path}/race.db"
    for round_ in range(ROUNDS):
        nodes = _setup(url, round_)
        ips = _race(url, nodes, tmp_path / f"go-{round_}")
        assert len(set(ips)) == PROCS
        store = open_store(url)
        try:
            blocks = [b for b in IpamService(store).block_usage() if b.pool == f"rack-r{round_}"]
            assert [(b.holder.display, b.in_use) for b in blocks] == [(f"rack=r{round_}", PROCS)]
            assert {ipaddress.ip_network(f"{ip}/26", strict=False) for ip in ips} == {blocks[0].cidr}
            affinities = [r.key for r in store.list(keys.ROOT + "domain/")
                          if r.key.startswith(keys.ROOT + f"domain/rack=r{round_}/")]
            assert len(affinities) == 1
            assert IpamService(store).check().ok
        finally:
            store.close()


def test_a_claim_landing_between_the_listing_and_the_block_choice_makes_no_second_block(tmp_path):
    """The interleaving the processes above hit only sometimes, made to happen: node B lists its
    domain's blocks (none), then node A's claim lands, then B looks for an unclaimed block and finds
    the next one free. B's claim commit moves the domain's claim guard on the revision B read before
    its listing, so it fails; B's retry lists again and assigns from A's block."""
    from topoipam.ipam import AssignRequest
    from topoipam.store.counting import CountingStore

    url = f"sqlite://{tmp_path}/interleave.db"
    first, second = _setup(url, 9)[:2]
    store_a, inner_b = open_store(url), open_store(url)
    try:
        node_a = IpamService(store_a)

        class ClaimOfAInBetween(CountingStore):
            done = False

            def list(self, prefix, *, start=None, limit=None):
                if not self.done and "/summary/" in prefix:  # B is choosing its block: A claims first
                    self.done = True
                    node_a.auto_assign(AssignRequest(node=first, handle="a", attrs={"node": first}))
                return super().list(prefix, start=start, limit=limit)

        store_b = ClaimOfAInBetween(inner_b)
        [ip_b] = IpamService(store_b).auto_assign(AssignRequest(node=second, handle="b", attrs={"node": second})).ipv4
        assert store_b.done
        blocks = [b for b in IpamService(store_a).block_usage() if b.pool == "rack-r9"]
        assert [(b.holder.display, b.in_use) for b in blocks] == [("rack=r9", 2)]
        assert ip_b.network == blocks[0].cidr
        assert store_b.counts().failed_writes == 1  # B's first claim lost on the guard, then used A's block
    finally:
        store_a.close()
        inner_b.close()
