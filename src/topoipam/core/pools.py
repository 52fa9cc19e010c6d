"""Which pools an assignment may use, with a reason for every pool not chosen.

Calico's ``determinePools`` plus its use filter (reference section 4 steps 2-3):
enabled pools of the family in name order, filtered by assignment mode, node
selector and namespace selector; requested pools (names or CIDRs, request
order) bypass those three filters; then the allowed-use filter. Every pool
left out gets a reason so that the error can say which pools were tried and
why each was not used (what Calico's ``no configured Calico pools`` lacks).
"""

from __future__ import annotations

import ipaddress
from topoipam import leanjson
from topoipam.structs import dataclass, field
from collections.abc import Mapping, Sequence

from topoipam.core.affinity import affinity_label
from topoipam.errors import NoQualifiedPoolError, ValidationError
from topoipam.model.types import ASSIGN_AUTOMATIC, IPPool
from topoipam.selector import parse


@dataclass(frozen=True)
class Rejection:
    pool: IPPool
    reason: str

    def __str__(self) -> str:
        return f"{self.pool.name} ({self.pool.spec.cidr}): {self.reason}"


@dataclass
class PoolChoice:
    chosen: list[IPPool] = field(default_factory=list)  # usable, in the order auto-assign tries them
    rejected: list[Rejection] = field(default_factory=list)
    matched: list[IPPool] = field(default_factory=list)  # passed the selectors (or were requested), before the use filter

    def reasons(self) -> str:
        return "; ".join(str(r) for r in self.rejected)


def _labels(labels: Mapping[str, str] | None) -> str:
    return leanjson.dumps(dict(sorted((labels or {}).items())), separators=(", ", ": "))


def selects_node(pool: IPPool, labels: Mapping[str, str]) -> bool:
    """The pool's node selector matches (empty selector: all nodes)."""
    text = pool.spec.node_selector or "all()"
    return parse(text).evaluate(labels)


def _selector_reason(pool: IPPool, node: str, node_labels, namespace_labels) -> str | None:
    if pool.spec.assignment_mode != ASSIGN_AUTOMATIC:
        return f"assignment mode is {pool.spec.assignment_mode}; request the pool by name to use it"
    if not selects_node(pool, node_labels):
        return f"node selector {pool.spec.node_selector} does not match node {node} labels {_labels(node_labels)}"
    ns_text = pool.spec.namespace_selector
    if ns_text and not parse(ns_text).evaluate(namespace_labels or {}):
        return f"namespace selector {ns_text} does not match namespace labels {_labels(namespace_labels)}"
    return _domain_reason(pool, node, node_labels)


def _domain_reason(pool: IPPool, node: str, node_labels) -> str | None:
    """Why a pool with an affinity label cannot serve a node that does not carry it (its blocks are
    affine to a value of that label: a node without one has no blocks to use; see core.affinity)."""
    label = affinity_label(pool)
    if label is not None and label not in (node_labels or {}):
        return f"blocks are affine to a {label} domain and node {node} has no label {label}"
    return None


def _match_requested(text: str, enabled: Sequence[IPPool], all_pools: Sequence[IPPool], version: int) -> IPPool:
    by_name = {p.name: p for p in enabled}
    if text in by_name:
        return by_name[text]
    try:
        net = ipaddress.ip_network(text, strict=False)
    except ValueError:
        net = None
    if net is not None:
        if net.version != version:
            other = "IPv6" if version == 4 else "IPv4"
            raise ValidationError(f"provided IPv{version} IPPools list contains one or more {other} IPPools")
        for p in enabled:
            if p.network == net:
                return p
    elif any(p.name == text and p.version != version for p in all_pools):
        other = "IPv6" if version == 4 else "IPv4"
        raise ValidationError(f"provided IPv{version} IPPools list contains one or more {other} IPPools")
    raise NoQualifiedPoolError(f"the given pool ({text}) does not exist, or is not enabled")


def rank_pools(pools: Sequence[IPPool], version: int, node: str, node_labels: Mapping[str, str],
               *, requested: Sequence[str] = (), namespace_labels: Mapping[str, str] | None = None,
               use: str = "Workload") -> PoolChoice:
    """Every pool of the family, chosen (in order) or rejected with its reason; ``chosen`` may be empty.

    Raises only for a malformed request (no use, a requested pool that does not exist or is of the
    other family). ``choose_pools`` is this plus the errors for an empty answer; ``explain`` shows it.
    """
    if not use:
        raise ValidationError("must specify the intended use when assigning an IP")
    family = sorted((p for p in pools if p.version == version), key=lambda p: p.name)
    choice = PoolChoice()
    enabled = []
    for p in family:
        if p.spec.disabled:
            choice.rejected.append(Rejection(p, "disabled"))
        else:
            enabled.append(p)
    if requested:
        picked = [_match_requested(t, enabled, pools, version) for t in requested]
        names = list(dict.fromkeys(p.name for p in picked))  # request order, duplicates once
        for p in (next(p for p in picked if p.name == n) for n in names):
            reason = _domain_reason(p, node, node_labels)
            if reason is None:
                choice.matched.append(p)
            else:
                choice.rejected.append(Rejection(p, reason))
        choice.rejected += [Rejection(p, "not requested") for p in enabled if p.name not in names]
    else:
        for p in enabled:
            reason = _selector_reason(p, node, node_labels, namespace_labels)
            if reason is None:
                choice.matched.append(p)
            else:
                choice.rejected.append(Rejection(p, reason))
    for p in choice.matched:
        if use in p.spec.allowed_uses:
            choice.chosen.append(p)
        else:
            choice.rejected.append(Rejection(p, f"allowed uses {p.spec.allowed_uses} do not include {use}"))
    return choice


def choose_pools(pools: Sequence[IPPool], version: int, node: str, node_labels: Mapping[str, str],
                 *, requested: Sequence[str] = (), namespace_labels: Mapping[str, str] | None = None,
                 use: str = "Workload") -> PoolChoice:
    """The pools to allocate from, in order; raises NoQualifiedPoolError naming every pool and its reason."""
    choice = rank_pools(pools, version, node, node_labels, requested=requested,
                        namespace_labels=namespace_labels, use=use)
    if not choice.matched:
        raise NoQualifiedPoolError(_no_pools(node, version, choice))
    if not choice.chosen:
        raise NoQualifiedPoolError(
            f"cannot find a qualified ippool, no pools match the required use ({use}); {choice.reasons()}")
    return choice


def _no_pools(node: str, version: int, choice: PoolChoice) -> str:
    if not choice.rejected:
        return f"no configured Calico pools for node {node}: there is no IPv{version} pool"
    return f"no configured Calico pools for node {node}: IPv{version} pools tried: {choice.reasons()}"


def pool_containing(pools: Sequence[IPPool], net) -> IPPool | None:
    """The first pool of ``pools`` (callers pass them in name order) whose CIDR contains the network
    or address ``net``."""
    if hasattr(net, "network_address"):
        lo, hi = int(net.network_address), int(net.broadcast_address)
    else:
        lo = hi = int(net)
    for p in pools:
        pn = p.network
        if pn.version == net.version and int(pn.network_address) <= lo and hi <= int(pn.broadcast_address):
            return p
    return None
