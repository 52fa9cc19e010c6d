"""Random sequences of assign, release, relabel, pool create/disable/delete, strict affinity on/off
against a small reference model.

Invariants after every step: never a duplicate address; allocated + free = size in every block; the
allocations are exactly the model's (handle -> address); handle counts and summaries consistent
(``check`` clean); and at assignment time the address lies in a pool that selected the node then.
"""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from test_ipam_world import World
from topoipam.errors import AllocationError, NotFoundError
from topoipam.ipam import keys
from topoipam.core.block import Block
from topoipam.store import open_store

POOL_CIDRS = ["10.0.0.0/27", "10.0.1.0/27", "10.0.2.0/28"]
SELECTORS = ['rack == "0"', 'rack == "1"', "all()"]
NODES = ["n0", "n1", "n2"]
RACKS = ["0", "1", "2"]


class IpamMachine(RuleBasedStateMachine):
    url = "memory://"

    def __init__(self):
        super().__init__()
        self.store = open_store(self.make_url())
        self.w = World(self.store)
        self.pools: dict[str, dict] = {}  # name -> {"cidr", "selector", "disabled"}
        self.racks = {n: "0" for n in NODES}
        self.held: dict[str, ipaddress.IPv4Address] = {}  # handle -> address
        self.counter = 0
        for n in NODES:
            self.w.node(n, rack="0")

    def make_url(self):
        return self.url

    def teardown(self):
        self.store.close()

    def _selects(self, pool, node):
        return pool["selector"] == "all()" or pool["selector"] == f'rack == "{self.racks[node]}"'

    @rule(i=st.integers(0, 2), sel=st.sampled_from(SELECTORS))
    def create_pool(self, i, sel):
        name = f"p{i}"
        if name in self.pools:
            return
        self.w.pool(name, POOL_CIDRS[i], node_selector=sel, block_size=28)
        self.pools[name] = {"cidr": ipaddress.ip_network(POOL_CIDRS[i]), "selector": sel, "disabled": False}

    @rule(i=st.integers(0, 2), disabled=st.booleans())
    def toggle_pool(self, i, disabled):
        name = f"p{i}"
        if name in self.pools:
            self.w.update_pool(name, disabled=disabled)
            self.pools[name]["disabled"] = disabled

    @rule(i=st.integers(0, 2))
    def delete_pool(self, i):
        name = f"p{i}"
        if name in self.pools:
            self.w.delete_pool(name)
            del self.pools[name]

    @rule(node=st.sampled_from(NODES), rack=st.sampled_from(RACKS))
    def relabel(self, node, rack):
        self.w.relabel(node, rack=rack)
        self.racks[node] = rack

    @rule(strict=st.booleans())
    def strict_affinity(self, strict):
        self.w.config(strict_affinity=strict)

    @rule(node=st.sampled_from(NODES), n=st.integers(1, 3))
    def assign(self, node, n):
        self.counter += 1
        handle = f"h{self.counter}"
        eligible = [p["cidr"] for p in self.pools.values() if not p["disabled"] and self._selects(p, node)]
        before = self.w.ipam_state()
        try:
            res = self.w.assign(node, handle, num4=n, attrs={"node": node})
        except AllocationError:
            assert {k: v for k, v in self.w.ipam_state().items() if "/handle/" in k} == \
                {k: v for k, v in before.items() if "/handle/" in k}
            assert self._allocated() == {a for a in self.held.values()}
            return
        assert eligible, "assigned although no pool selects the node"
        assert len(res.ipv4) == n
        for ip in res.ipv4:
            assert any(ip.ip in c for c in eligible), f"{ip} outside the pools selecting {node}"
        self.held.update({f"{handle}#{k}": ip.ip for k, ip in enumerate(res.ipv4)})

    @rule(data=st.data())
    def release_handle(self, data):
        handles = sorted({h.split("#")[0] for h in self.held})
        if not handles:
            with pytest.raises(NotFoundError):
                self.w.svc.release_by_handle("nope")
            return
        handle = data.draw(st.sampled_from(handles))
        released = set(self.w.svc.release_by_handle(handle))
        mine = {k for k in self.held if k.split("#")[0] == handle}
        assert released == {self.held[k] for k in mine}
        for k in mine:
            del self.held[k]

    @rule(data=st.data())
    def release_ip(self, data):
        if not self.held:
            return
        key = data.draw(st.sampled_from(sorted(self.held)))
        assert self.w.svc.release_ips([self.held[key]]) == []
        assert self.w.svc.release_ips([self.held[key]]) == [self.held[key]]
        del self.held[key]

    def _allocated(self):
        ips = [a.ip.ip for a in self.w.svc.allocations()]
        assert len(ips) == len(set(ips)), "duplicate address"
        return set(ips)

    @invariant()
    def consistent(self):
        assert self._allocated() == set(self.held.values())
        for v in (4, 6):
            for rec in self.store.list(keys.block_prefix(v)):
                b = Block.from_json(rec.value)
                assert b.in_use + len(b.unallocated) == b.size
                assert sorted(b.unallocated + b.allocated_ordinals()) == list(range(b.size))
                node = b.affinity[5:] if b.affinity else None
                hint = self.store.get(keys.affinity_key(node, b.cidr)) if node else None
                if hint is not None and b'"full":true' in hint.value:
                    assert not b.unallocated, f"block {b.cidr} marked full but has free addresses"
        report = self.w.svc.check()
        # allocations left in blocks of a deleted pool are a true finding (Calico's "not in active IP pools")
        for f in report.problems:
            if f.kind == "outside-pools":
                assert not any(f.ip in p["cidr"] for p in self.pools.values())
        assert [f for f in report.problems if f.kind != "outside-pools"] == []


SETTINGS = settings(max_examples=40, stateful_step_count=25, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])

TestIpamMemory = IpamMachine.TestCase
TestIpamMemory.settings = SETTINGS


class SqliteMachine(IpamMachine):
    def make_url(self):
        import tempfile
        self._dir = tempfile.TemporaryDirectory()
        return f"sqlite://{self._dir.name}/p.db"

    def teardown(self):
        super().teardown()
        self._dir.cleanup()


TestIpamSqlite = SqliteMachine.TestCase
TestIpamSqlite.settings = settings(SETTINGS, max_examples=10)
