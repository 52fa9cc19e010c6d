"""``topoipam get workloadendpoints [-o wide]`` (aliases wep, weps, workloadendpoint): workload allocations.

topoipam has no view of live pods: this lists what IPAM holds for workloads,
one row per handle (a pod's or an ``ipam assign`` workload's addresses), the
way ``kubectl get pods -o wide`` lists pods, in calicoctl's ``get`` table
format (``cli.printers.tabwrite``: columns padded by 3, a blank line after):

    NAME                   NAMESPACE   IP             NODE
    nginx-5c7588df-prx4z   default     192.168.0.64   kube-node-0

``-o wide`` adds the pool and block each address lies in. Addresses recorded
with a ``type`` attribute (tunnel and load-balancer addresses) are not
workloads and are left out; an address without a handle is its own row.

The ``get`` command belongs to ``cli.resources``: its ``run_get`` sends
these kinds (``ALIASES``) here.
"""

from __future__ import annotations

ALIASES = frozenset({"workloadendpoint", "workloadendpoints", "wep", "weps"})
HEADINGS = ("NAME", "NAMESPACE", "IP", "NODE")
WIDE_HEADINGS = HEADINGS + ("POOL", "BLOCK")


def workload_rows(allocations, pools, wide: bool) -> list[list[str]]:
    """One row per workload (handle), sorted by namespace and name."""
    from topoipam.core.pools import pool_containing

    groups: dict[object, list] = {}
    for a in allocations:
        if a.attrs.get("type"):
            continue
        groups.setdefault(a.handle if a.handle is not None else ("", str(a.ip.ip)), []).append(a)
    rows = []
    for key, allocs in groups.items():
        allocs.sort(key=lambda a: (a.ip.version, a.ip.ip))
        first = allocs[0]
        name = first.attrs.get("pod") or (key if isinstance(key, str) else "<none>")
        row = [name, first.attrs.get("namespace") or "<none>", ",".join(str(a.ip.ip) for a in allocs),
               first.attrs.get("node") or first.node or "<none>"]
        if wide:
            found = [pool_containing(pools, a.block) for a in allocs]
            pools_text = dict.fromkeys(p.name if p else "<none>" for p in found)
            row += [",".join(pools_text), ",".join(dict.fromkeys(str(a.block) for a in allocs))]
        rows.append(row)
    rows.sort(key=lambda r: (r[1], r[0], r[2]))
    return rows


def run_get_workloads(args, ctx) -> int:
    from topoipam.cli.printers import tabwrite
    from topoipam.errors import ValidationError
    from topoipam.ipam import IpamService
    from topoipam.resources import repo

    if args.output not in ("ps", "wide"):
        raise ValidationError(f"unrecognized output format '{args.output}' (workloadendpoints: ps or wide)")
    wide = args.output == "wide"
    rows = workload_rows(IpamService(ctx.store).allocations(), repo.list_pools(ctx.store), wide)
    if args.names:
        wanted = set(args.names)
        rows = [r for r in rows if r[0] in wanted]
        missing = sorted(wanted - {r[0] for r in rows})
        if missing:
            from topoipam.errors import NotFoundError

            if rows:
                ctx.out.write(tabwrite([list(WIDE_HEADINGS if wide else HEADINGS)] + rows) + "\n")
            raise NotFoundError("\n".join(f"resource does not exist: WorkloadEndpoint({m}) with error: <nil>"
                                          for m in missing))
    ctx.out.write(tabwrite([list(WIDE_HEADINGS if wide else HEADINGS)] + rows) + "\n")
    return 0
