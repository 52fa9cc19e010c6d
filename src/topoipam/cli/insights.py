"""``topoipam ipam coverage|explain|headroom|drift``: what no peer answers before a pod is stuck.

    coverage [--family 4|6] [-o table|json]      every node has an enabled, Automatic pool with room?
    explain --node NODE | --labels k=v,...       which pools, in which order, why not the others,
            [--namespace NS --namespace-labels k=v,...] [--family 4|6] [-o text|json]
                                                 and which block the next address comes from
    headroom --by LABEL [-o table|json|prometheus]   free space per topology domain, forecast
    drift [-o table|json]                        workloads outside the pools that now select their node

The analyses live in ``ipam/insights.py``; this module prints them. ``coverage`` and
``drift`` exit 4 when they find something (as ``ipam check`` does with problems), so
that they can gate a CI pipeline or a rollout. ``register`` adds the sub-commands to
the ``ipam`` command of ``cli.ipam`` (registered before this module).
"""

from __future__ import annotations

import argparse
import json

from topoipam.errors import EXIT_CHECK_PROBLEMS, ValidationError


def register(subparsers) -> None:
    from topoipam.cli.ipam import ipam_subcommands

    sub = ipam_subcommands(subparsers, "topoipam.cli.insights")

    p = sub.add_parser("coverage", help="Whether every node has an enabled, Automatic pool with room, per "
                       "family; pools selecting no node; overlapping node selectors (exit 4: a node is not "
                       "covered).", description="topoipam ipam coverage [--family 4|6] [-o table|json]")
    _family(p)
    p.add_argument("-o", "--output", choices=("table", "json"), default="table")
    p.set_defaults(run=run_coverage)

    p = sub.add_parser("explain", help="Which pools an assignment on a node (or a hypothetical label set) "
                       "would try, in order, why the others are not used, and the block it would come from.",
                       description="topoipam ipam explain --node NODE | --labels k=v,... [--namespace NS "
                                   "--namespace-labels k=v,...] [--family 4|6] [-o text|json]. With both "
                                   "--node and --labels, the node is taken to carry those labels instead.")
    p.add_argument("--node", metavar="NODE", help="a registered node (or the name of one to be created)")
    p.add_argument("--labels", metavar="K=V,...", type=_labels, help="node labels to answer for (a node "
                   "not created yet, or a relabelling being planned)")
    p.add_argument("--namespace", metavar="NS", help="the workload's namespace")
    p.add_argument("--namespace-labels", metavar="K=V,...", type=_labels, default=None,
                   help="labels of the namespace, matched against pools' namespace selectors (default: "
                   "kubernetes.io/metadata.name=NS plus the labelsToApply of the Profile kns.NS, as the "
                   "CNI plugin resolves them)")
    _family(p)
    p.add_argument("-o", "--output", choices=("text", "json"), default="text")
    p.set_defaults(run=run_explain)

    p = sub.add_parser("headroom", help="Free addresses and blocks per value of a node label (e.g. rack), how "
                       "many more workloads fit, a forecast to exhaustion; Prometheus text with -o prometheus.",
                       description="topoipam ipam headroom --by LABEL [--family 4|6] [-o table|json|prometheus]")
    p.add_argument("--by", required=True, metavar="LABEL", help="the node label whose values are the domains")
    _family(p)
    p.add_argument("-o", "--output", choices=("table", "json", "prometheus"), default="table")
    p.set_defaults(run=run_headroom)

    p = sub.add_parser("drift", help="Workloads whose address lies outside every pool that now selects their "
                       "node (after relabelling or pool changes); exit 4 if any.",
                       description="topoipam ipam drift [-o table|json]")
    p.add_argument("-o", "--output", choices=("table", "json"), default="table")
    p.set_defaults(run=run_drift)


def _family(p) -> None:
    p.add_argument("--family", type=int, choices=(4, 6), help="only IPv4 or only IPv6 (default: every family "
                   "some pool has)")


def _labels(text: str) -> dict:
    out = {}
    for item in filter(None, (x.strip() for x in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise argparse.ArgumentTypeError(f"invalid label {item!r}: expected KEY=VALUE")
        out[key.strip()] = value.strip()
    return out


def to_data(value):
    """Report values as JSON-ready data (our dataclasses, lists, tuples, dicts)."""
    from topoipam.structs import fields

    if isinstance(value, (list, tuple)):
        return [to_data(v) for v in value]
    if isinstance(value, dict):
        return {k: to_data(v) for k, v in value.items()}
    if hasattr(type(value), "__dataclass_fields__") or hasattr(type(value), "__struct_fields__"):
        return {f.name: to_data(getattr(value, f.name)) for f in fields(value)}
    return value


def _dump(ctx, data) -> None:
    ctx.out.write(json.dumps(to_data(data), indent=2, sort_keys=False) + "\n")


def _staged(bar, label: str):
    """A ``progress(done, total)`` callback drawing on ``bar`` under ``label`` (the reading stage before it)."""
    def progress(done: int, total: int) -> None:
        bar.label = label
        bar.update(done, total)
    return progress


def _label_text(labels) -> str:
    return json.dumps(dict(sorted(labels.items())), separators=(", ", ": "))


# ---------------------------------------------------------------- coverage


def run_coverage(args, ctx) -> int:
    from topoipam.cli.tables import render
    from topoipam.ipam.insights import coverage

    import time

    from topoipam.cli.progress import progress_for

    with progress_for(ctx, "coverage: reading pools, nodes and blocks") as bar:
        report = coverage(ctx.store, time.time(), args.family, progress=_staged(bar, "coverage: nodes"))
    code = 0 if report.ok else EXIT_CHECK_PROBLEMS
    if args.output == "json":
        _dump(ctx, {"ok": report.ok, "families": report.families, "nodes": report.nodes,
                    "unused_pools": report.unused_pools, "overlaps": report.overlaps})
        return code
    out = ctx.out
    rows = [[n.node, f"IPv{n.version}", "yes" if n.covered else "NO", ", ".join(n.pools) or "-", str(n.free)]
            for n in report.nodes]
    out.write(render(["NODE", "FAMILY", "COVERED", "POOLS WITH ROOM", "IPS FREE"], rows))
    for n in report.uncovered:
        print(f"Not covered: {n.node} (IPv{n.version}): {n.reason}", file=out)
    for n in report.nodes:
        if n.namespace_only:
            print(f"Note: {', '.join(n.namespace_only)} select {n.node} for some namespaces only "
                  f"(namespace selector); not counted above", file=out)
    for name in report.unused_pools:
        print(f"Pool {name} selects no node", file=out)
    for o in report.overlaps:
        print(f"Pools {o.first} and {o.second} both select {', '.join(o.nodes)}: auto-assign tries them in name "
              f"order, so new blocks come from {o.first} until it is full", file=out)
    if not report.families:
        print("There is no pool: no node can get an address", file=out)
    elif report.ok:
        print(f"Every node is covered ({', '.join(f'IPv{v}' for v in report.families)})", file=out)
    else:
        print(f"{len(report.uncovered)} of {len(report.nodes)} node/family pairs are not covered: a pod "
              "scheduled there fails at CNI ADD and stays in ContainerCreating", file=out)
    return code


# ---------------------------------------------------------------- explain


def run_explain(args, ctx) -> int:
    from topoipam.ipam.insights import HYPOTHETICAL, explain

    if not args.node and args.labels is None:
        raise ValidationError("give --node NODE or --labels k=v,... (or both)")
    import time

    ns_labels = args.namespace_labels
    if args.namespace and ns_labels is None:  # as the plugin and the agent resolve them for a pod
        from topoipam.resources.repo import namespace_labels

        ns_labels = namespace_labels(ctx.store, args.namespace)
    answers = explain(ctx.store, time.time(), args.node, args.labels, args.namespace, ns_labels, args.family)
    if args.output == "json":
        _dump(ctx, answers)
        return 0
    out = ctx.out
    if not answers:
        print("There is no pool: no assignment can succeed", file=out)
    for e in answers:
        who = f"Node {e.node}" if e.registered else (
            f"Node {e.node} (not registered)" if e.node != HYPOTHETICAL else "A new node")
        ns = f", namespace {e.namespace}" if e.namespace else ""
        print(f"{who} with labels {_label_text(e.labels)}{ns}, IPv{e.version}:", file=out)
        if e.tried:
            print("  Pools auto-assign tries, in order:", file=out)
            for i, r in enumerate(e.tried, 1):
                print(f"    {i}. {r.pool}: {r.describe()}" + ("" if r.total else " (full)"), file=out)
        else:
            print("  No pool selects it: an assignment here fails", file=out)
        if e.rejected:
            print("  Not used:", file=out)
            for pool, cidr, reason in e.rejected:
                print(f"    {pool} ({cidr}): {reason}", file=out)
        print(f"  Next assignment: {e.next_block.detail}", file=out)
        if not e.registered and e.next_block.kind == "claim" and e.node == HYPOTHETICAL:
            print(f"  (a node's first unclaimed block depends on its name; shown for '{HYPOTHETICAL}': "
                  "add --node NAME for the real one)", file=out)
    return 0


# ---------------------------------------------------------------- headroom


def _days(d) -> str:
    if d.rate_per_day is None:
        return "no history"
    if d.days_left is None:
        return "no growth"
    return f"{d.days_left:.0f} days ({d.rate_per_day:.2f}/day)"


def run_headroom(args, ctx) -> int:
    import time

    from topoipam.ipam.insights import headroom

    from topoipam.cli.progress import progress_for

    with progress_for(ctx, "headroom: reading pools, nodes and blocks") as bar:
        report = headroom(ctx.store, args.by, time.time(), args.family, progress=_staged(bar, "headroom: domains"))
    if args.output == "json":
        _dump(ctx, report)
        return 0
    if args.output == "prometheus":
        ctx.out.write(prometheus_text(report))
        return 0
    from topoipam.cli.tables import render

    rows = [[d.domain, f"IPv{d.version}", _domain_nodes(args.by, d), ", ".join(d.pools) or "-", str(d.total), str(d.in_use),
             str(d.free), str(d.blocks_claimed), str(d.blocks_unclaimed), str(d.fit), _days(d)]
            for d in report.domains]
    ctx.out.write(render([args.by.upper(), "FAMILY", "NODES", "POOLS", "IPS TOTAL", "IPS IN USE", "IPS FREE",
                          "BLOCKS CLAIMED", "BLOCKS UNCLAIMED", "WORKLOADS FIT", "EXHAUSTED IN"], rows))
    return 0


def _domain_nodes(label: str, d) -> str:
    if d.shared_by:  # a shared pool's unheld part: any node of these domains may take it
        return "any node with " + " or ".join(f"{label}={v}" for v in d.shared_by)
    return ", ".join(d.nodes)


def prometheus_text(report) -> str:
    """The report in Prometheus' text format: the families and names a /metrics scrape serves
    (``topoipam.metrics``; docs/metrics.md). Needs the 'metrics' extra (prometheus_client)."""
    from topoipam.extras import require

    require("prometheus_client", "metrics", "Prometheus output")
    from topoipam.metrics.families import headroom_text

    return headroom_text(report)


# ---------------------------------------------------------------- drift


def run_drift(args, ctx) -> int:
    from topoipam.ipam.insights import drift

    from topoipam.cli.progress import progress_for

    with progress_for(ctx, "drift: reading pools, nodes and blocks") as bar:
        found = drift(ctx.store, progress=_staged(bar, "drift: addresses"))
    code = EXIT_CHECK_PROBLEMS if found else 0
    if args.output == "json":
        _dump(ctx, found)
        return code
    if not found:
        print("No drift: every workload address lies in a pool that selects its node", file=ctx.out)
        return 0
    from topoipam.cli.tables import render

    rows = [[d.namespace or "<none>", d.workload, d.node, d.ip, d.pool or "<no pool>", ", ".join(d.now_pools) or "-"]
            for d in found]
    ctx.out.write(render(["NAMESPACE", "WORKLOAD", "NODE", "IP", "POOL", "POOLS NOW"], rows))
    print(f"{len(found)} workload address(es) lie outside every pool that now selects their node: recreate "
          "those workloads (CNI DEL + ADD) in a maintenance window to move them", file=ctx.out)
    return code
