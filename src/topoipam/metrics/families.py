"""The datastore's metric families, computed from one ``World`` (one snapshot) by the insights' own code.

Pools and domains come from ``ipam.insights.headroom`` (the numbers ``ipam headroom`` prints),
uncovered pairs from ``coverage``, drifted workloads from ``drift``; per-node allocations and
borrowed addresses are counted as ``ipam show --show-borrowed`` counts them (the allocation's
``node`` attribute against the block's affinity). Every name, its help text and its labels are
in ``HELP`` (docs/metrics.md lists the same, a test checks that they agree).
"""

from __future__ import annotations

import ipaddress
from collections import Counter

from prometheus_client.core import GaugeMetricFamily

from topoipam.core.affinity import holder_of
from topoipam.ipam.check import borrows
from topoipam.ipam.insights import World, coverage, drift, headroom

# name -> (labels, help)
HELP: dict[str, tuple[tuple[str, ...], str]] = {
    "topoipam_pool_addresses": (("pool", "family"), "Addresses in the pool's CIDR"),
    "topoipam_pool_addresses_in_use": (("pool", "family"), "Addresses allocated in the pool"),
    "topoipam_pool_addresses_free": (("pool", "family"), "Addresses auto-assign may still hand out from the pool "
                                     "(free in claimed blocks plus unclaimed blocks; reservations excluded)"),
    "topoipam_pool_blocks_claimed": (("pool", "family"), "Blocks of the pool claimed (present in the datastore)"),
    "topoipam_pool_blocks_unclaimed": (("pool", "family"), "Blocks of the pool not claimed yet and not wholly "
                                       "reserved"),
    "topoipam_node_allocations": (("node", "family"), "Addresses allocated for the node (the allocation's node "
                                  "attribute), in any block"),
    "topoipam_node_borrowed_addresses": (("node", "family"), "Of the node's allocations, those in a block affine "
                                         "to another node or to none (as ipam show --show-borrowed lists them)"),
    "topoipam_node_blocks": (("node", "family"), "Blocks affine to the node"),
    "topoipam_node_block_addresses_in_use": (("node", "family"), "Addresses allocated in the blocks affine to the "
                                             "node (to it or borrowed by others)"),
    "topoipam_node_block_addresses_free": (("node", "family"), "Free addresses in the blocks affine to the node "
                                           "(reservations excluded)"),
    "topoipam_domain_nodes": (("label", "value", "family"), "Nodes whose label has this value (value <none>: "
                              "nodes without the label)"),
    "topoipam_domain_addresses": (("label", "value", "family"), "Addresses of the pools the domain's nodes use "
                                  "(as ipam headroom --by LABEL: IPS TOTAL)"),
    "topoipam_domain_addresses_in_use": (("label", "value", "family"), "Addresses allocated in those pools "
                                         "(IPS IN USE)"),
    "topoipam_domain_addresses_free": (("label", "value", "family"), "Addresses assignable in those pools "
                                       "(IPS FREE)"),
    "topoipam_domain_blocks_claimed": (("label", "value", "family"), "Claimed blocks of those pools"),
    "topoipam_domain_blocks_unclaimed": (("label", "value", "family"), "Unclaimed blocks of those pools"),
    "topoipam_domain_workloads_fit": (("label", "value", "family"), "More single-address workloads the domain's "
                                      "nodes can get (WORKLOADS FIT)"),
    "topoipam_domain_exhaustion_days": (("label", "value", "family"), "Naive linear forecast of days until the "
                                        "domain's pools are exhausted (absent: no history or no growth)"),
    "topoipam_uncovered_nodes": (("family",), "Nodes that no enabled, Automatic pool with room covers for the "
                                 "family (ipam coverage's NOT covered pairs)"),
    "topoipam_node_uncovered": (("node", "family"), "1 for each uncovered node/family pair (only those are "
                                "exported)"),
    "topoipam_pools_selecting_no_node": (("family",), "Enabled, Automatic pools whose selector matches no node"),
    "topoipam_drifted_workloads": (("family",), "Workload addresses outside every pool that now selects their "
                                   "node (ipam drift)"),
}


HEADROOM_PREFIXES = ("topoipam_pool_", "topoipam_domain_", "topoipam_node_blocks", "topoipam_node_block_")


def empty_families() -> dict[str, GaugeMetricFamily]:
    return {name: GaugeMetricFamily(name, text, labels=names) for name, (names, text) in HELP.items()}


def _put(families: dict, name: str, labelvalues, value) -> None:
    if value is not None:
        families[name].add_metric([str(v) for v in labelvalues], value)


def add_headroom(families: dict, report, pools_and_nodes: bool = True) -> None:
    """The pool, node-block and (for ``report.label``) domain families of one ``headroom`` report."""
    if pools_and_nodes:  # the same whatever the label: added once per scrape
        for p in report.pools:
            key = (p.pool, p.version)
            for name, value in (("addresses", p.total), ("addresses_in_use", p.in_use), ("addresses_free", p.free),
                                ("blocks_claimed", p.blocks_claimed), ("blocks_unclaimed", p.blocks_unclaimed)):
                _put(families, f"topoipam_pool_{name}", key, value)
        for n in report.nodes:
            _put(families, "topoipam_node_blocks", (n.node, n.version), n.blocks)
            _put(families, "topoipam_node_block_addresses_in_use", (n.node, n.version), n.in_use)
            _put(families, "topoipam_node_block_addresses_free", (n.node, n.version), n.free)
    if not report.label:
        return
    for d in report.domains:
        key = (report.label, d.domain, d.version)
        for name, value in (("nodes", len(d.nodes)), ("addresses", d.total), ("addresses_in_use", d.in_use),
                            ("addresses_free", d.free), ("blocks_claimed", d.blocks_claimed),
                            ("blocks_unclaimed", d.blocks_unclaimed), ("workloads_fit", d.fit),
                            ("exhaustion_days", d.days_left)):
            _put(families, f"topoipam_domain_{name}", key, value)


def headroom_text(report) -> str:
    """``ipam headroom -o prometheus``: the report's families as a scrape shows them, in the text format."""
    families = empty_families()
    add_headroom(families, report)
    return render([f for name, f in families.items() if name.startswith(HEADROOM_PREFIXES)])


def render(families) -> str:
    from prometheus_client import CollectorRegistry, generate_latest

    class Fixed:
        def collect(self):
            return families

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Fixed())
    return generate_latest(registry).decode()


def compute(world: World, labels: list[str], now: float) -> list[GaugeMetricFamily]:
    """Every datastore family, from ``world`` (built with ``now``) and one headroom per label."""
    families = empty_families()
    for i, label in enumerate(labels or [""]):
        add_headroom(families, headroom(world.store, label, now, world=world), pools_and_nodes=i == 0)
    allocations, borrowed = _node_allocations(world)
    for n in world.nodes:
        for version in world.families(None):
            key = (n.name, version)
            _put(families, "topoipam_node_allocations", key, allocations.get(key, 0))
            _put(families, "topoipam_node_borrowed_addresses", key, borrowed.get(key, 0))
    _coverage(families, world, now)
    drifted = Counter(ipaddress.ip_address(d.ip).version for d in drift(world.store, world=world))
    for version in sorted(set(world.families(None)) | set(drifted)):
        _put(families, "topoipam_drifted_workloads", (version,), drifted[version])
    # An empty family still carries its HELP/TYPE: a dashboard sees "none uncovered", not "no data".
    return list(families.values())


def _node_allocations(world: World) -> tuple[dict, dict]:
    """(node, family) -> allocations for the node, and those borrowed (``cli.ipam.borrowed``'s rule:
    the node is not of the block's holder, a host or a domain such as rack=0, or the block has none)."""
    allocations: Counter = Counter()
    borrowed: Counter = Counter()
    labels_of = {n.name: n.labels for n in world.nodes}.get
    holders: dict = {}  # affinity -> core.affinity.Holder: one parse per holder, not per address
    for b, o in world.held():
        node = world.attrs_of(b, o).get("node")
        if not node:
            continue  # no node attribute: unclassified, as ipam show --show-borrowed notes them
        key = (node, b.cidr.version)
        allocations[key] += 1
        if b.affinity not in holders:
            holders[b.affinity] = holder_of(b.affinity)
        holder = holders[b.affinity]
        if holder is None or borrows(node, holder, labels_of):
            borrowed[key] += 1
    return allocations, borrowed


def _coverage(families: dict, world: World, now: float) -> None:
    report = coverage(world.store, now, world=world)
    version_of = {p.name: p.version for p in world.pools}
    unused = Counter(version_of[name] for name in report.unused_pools)
    for version in report.families:
        uncovered = [n for n in report.uncovered if n.version == version]
        _put(families, "topoipam_uncovered_nodes", (version,), len(uncovered))
        _put(families, "topoipam_pools_selecting_no_node", (version,), unused[version])
        for n in uncovered:
            _put(families, "topoipam_node_uncovered", (n.node, version), 1)
