"""``topoipam ipam show|check|release|configure|split|assign``: calicoctl's ipam commands, and ``assign``.

Texts and tables follow calicoctl (reference 7.4-7.8). Differences, on purpose:
errors go to stderr with topoipam's exit codes (2 for bad input, 1 for a
failed operation, 3 when the datastore does not answer, 4 when ``ipam check``
finds problems); ``release --from-report`` and ``split`` need no datastore
lock (they are fenced / one transaction instead); ``release --handle`` and
``assign`` exist for users without an orchestrator.

``check`` and ``release --from-report`` live in ``cli/ipam_check.py``.
"""

from __future__ import annotations

import argparse

from topoipam.errors import NotFoundError, TopoipamError, ValidationError

INT32_MAX = 2**31 - 1
# calicoctl's columns less its IPS COOLING (Calico's reuse delay for released addresses; topoipam has none)
SHOW_HEADERS = ["GROUPING", "CIDR", "IPS TOTAL", "IPS IN USE", "IPS RESERVED", "IPS FREE"]


def register(subparsers) -> None:
    text = "IP address management: usage, consistency, release, configuration, pool split, assignment."
    ipam = subparsers.add_parser("ipam", help=text, description=text)
    sub = ipam.add_subparsers(dest="ipam_command", metavar="SUBCOMMAND", parser_class=type(ipam))
    sub.required = True
    _register_show(sub)
    from topoipam.cli import ipam_check

    ipam_check.register(sub)
    from topoipam.cli import ipam_gc

    ipam_gc.register(sub)
    from topoipam.cli import ipam_repair

    ipam_repair.register(sub)
    _register_release(sub)
    _register_configure(sub)
    _register_split(sub)
    _register_assign(sub)


def ipam_subcommands(subparsers, module: str):
    """The ``ipam`` command's sub-command parsers, for a module adding more (``cli.ipam`` registered first)."""
    ipam = subparsers.choices.get("ipam")
    if ipam is None:  # COMMAND_MODULES order
        raise RuntimeError(f"{module} needs the 'ipam' command of topoipam.cli.ipam")
    return next(a for a in ipam._actions if isinstance(a, argparse._SubParsersAction))  # noqa: SLF001


def _register_show(sub) -> None:
    p = sub.add_parser("show", help="Show IP pool and block usage, one address, borrowed addresses or the "
                       "IPAM configuration.", description="topoipam ipam show [--show-blocks | --ip IP | "
                       "--show-borrowed | --show-configuration]")
    what = p.add_mutually_exclusive_group()
    what.add_argument("--show-blocks", action="store_true", help="also one row per block under its pool")
    what.add_argument("--ip", metavar="IP", help="whether IP is assigned, its handle and attributes")
    what.add_argument("--show-borrowed", action="store_true",
                      help="addresses allocated to a node from a block affine to another node (or to none)")
    what.add_argument("--show-configuration", action="store_true", help="the IPAM configuration")
    p.set_defaults(run=run_show)


def _register_release(sub) -> None:
    p = sub.add_parser("release", help="Release an address, a handle's addresses, or what a check report "
                       "found leaked.", description="topoipam ipam release --ip IP | --handle HANDLE | "
                       "--from-report REPORT")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--ip", metavar="IP", help="release this address")
    which.add_argument("--handle", metavar="HANDLE", help="release every address held under HANDLE")
    which.add_argument("--from-report", metavar="REPORT", action="append",
                       help="release what an 'ipam check -o REPORT' run found leaked, only where it is still "
                            "as the report saw it (fenced by handle, sequence number and handle revision)")
    p.set_defaults(run=run_release)


def _register_configure(sub) -> None:
    p = sub.add_parser("configure", help="Set StrictAffinity and MaxBlocksPerHost.",
                       description="topoipam ipam configure [--strictaffinity=true|false] "
                                   "[--max-blocks-per-host=N]")
    p.add_argument("--strictaffinity", metavar="true|false",
                   help="when true, no address is borrowed from a block affine to another node")
    p.add_argument("--max-blocks-per-host", metavar="N", help="maximum number of blocks affine to one node "
                   "(0: no limit from the configuration; needs strict affinity)")
    p.set_defaults(run=run_configure)


def _register_split(sub) -> None:
    p = sub.add_parser("split", help="Split an IP pool into N (a power of 2) equal pools.",
                       description="Replace one IP pool by N equal pools named split-<name>-<i> with the same "
                                   "spec. Unlike calicoctl no datastore lock is needed: the old pool's delete and "
                                   "the new pools' creates are one transaction, so no allocator ever sees both or "
                                   "neither. Blocks and affinities are kept (each lies in one new pool).")
    p.add_argument("number", metavar="N", help="number of pools: 2, 4, 8, ...")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--cidr", metavar="CIDR", help="the pool whose CIDR this is")
    where.add_argument("--name", metavar="POOL", help="the pool of this name")
    p.set_defaults(run=run_split)


def _register_assign(sub) -> None:
    p = sub.add_parser("assign", help="Assign addresses to a workload on a node (without an orchestrator).",
                       description="Assign addresses as the CNI plugin does for a pod and print one per line. "
                                   "Without --handle a handle is generated and printed on stderr "
                                   "('Handle ID: <handle>'): release with 'topoipam ipam release --handle'.")
    p.add_argument("--node", required=True, metavar="NODE", help="the node the workload runs on")
    p.add_argument("--handle", metavar="HANDLE", help="handle to hold the addresses (default: generated)")
    p.add_argument("--ipv4", type=_count, metavar="N", help="IPv4 addresses (default 1, or 0 with --ipv6)")
    p.add_argument("--ipv6", type=_count, default=0, metavar="N", help="IPv6 addresses (default 0)")
    p.add_argument("--pool", action="append", default=[], metavar="NAME_OR_CIDR",
                   help="use these pools (in order) instead of the node-selected ones; repeatable")
    p.add_argument("--ip", metavar="IP", help="assign exactly this address (not with --ipv4/--ipv6/--pool)")
    p.add_argument("--namespace", metavar="NS", help="namespace of the workload (recorded, and matched "
                   "against pools' namespace selectors as a namespace without labels)")
    p.add_argument("--attr", action="append", default=[], metavar="KEY=VALUE",
                   help="attribute recorded with the addresses (e.g. pod=web-1); repeatable")
    p.add_argument("--allow-partial", action="store_true",
                   help="when fewer addresses are free than asked for, keep and print those assigned (the "
                        "shortfall goes to stderr, exit 0); without it such a request keeps nothing (exit 1)")
    p.set_defaults(run=run_assign)


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number of addresses {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"the number of addresses must not be negative: {text}")
    return value


def _service(ctx):
    from topoipam.ipam import IpamService

    return IpamService(ctx.store)


def parse_ip(text: str):
    from topoipam.ipam.release import parse_ip as parse  # the one parser (lazily: every command loads this module)

    return parse(text)


# ---------------------------------------------------------------- show


def pct_cell(n: int, capacity: int) -> str:
    """calicoctl's ``%.5g (%.f%%)``."""
    return f"{float(n):.5g} ({100 * n / capacity:.0f}%)"


def usage_row(kind: str, cidr, usage) -> list[str]:
    """One row of ``ipam show``: Calico's IPS RESERVED between IN USE and FREE. An address allocated before
    it was reserved counts in both IN USE and RESERVED (as in Calico), so the percentages may pass 100."""
    size = usage.size
    return [kind, str(cidr), f"{float(size):.5g}", pct_cell(usage.in_use, size), pct_cell(usage.reserved, size),
            pct_cell(usage.free, size)]


def run_show(args, ctx) -> int:
    if args.ip is not None:
        return _show_ip(ctx, parse_ip(args.ip))
    if args.show_borrowed:
        return _show_borrowed(ctx)
    if args.show_configuration:
        return _show_configuration(ctx)
    from topoipam.cli.tables import render

    svc = _service(ctx)
    blocks = svc.block_usage()
    # calicoctl's table, plus an AFFINITY column (node, or domain such as rack=0) once a block is
    # affine to a domain: without domain pools the output stays calicoctl's.
    domains = args.show_blocks and any(b.holder is not None and b.holder.is_domain for b in blocks)
    rows = []
    for pool in svc.pool_usage(blocks):  # the same read: pool rows add up their block rows
        rows.append(usage_row("IP Pool", pool.cidr, pool) + ([""] if domains else []))
        if args.show_blocks:
            rows += [_block_row(b, domains) for b in blocks if b.pool == pool.name]
    if args.show_blocks:  # calicoctl's hidden "orphaned allocation blocks" pool: block rows only
        rows += [_block_row(b, domains) for b in blocks if b.pool is None]
    ctx.out.write(render(SHOW_HEADERS + (["AFFINITY"] if domains else []), rows))
    return 0


def _block_row(b, domains: bool) -> list[str]:
    row = usage_row("Block", b.cidr, b)
    return row + [b.holder.display if b.holder else ""] if domains else row


def _show_ip(ctx, ip) -> int:
    found = _service(ctx).allocation_of(ip)
    out = ctx.out
    if found is None:
        print(f"{ip} is not assigned", file=out)
        return 0
    print(f"IP {ip} is in use", file=out)
    print(f"Handle ID: {found.handle if found.handle is not None else '<none>'}", file=out)
    if found.attrs:
        print("Active Owner Attributes:", file=out)
        for key in sorted(found.attrs):
            print(f"  {key}: {found.attrs[key]}", file=out)
    else:
        print("No Active Owner attributes defined", file=out)
    return 0


def borrowed(allocations, node_labels=None) -> tuple[list[list[str]], int]:
    """calicoctl's borrowed rows (node attribute not of the block's holder: another host, or a node
    outside the block's domain; ``node_labels``: name -> labels of the registered nodes) and the
    unclassified count."""
    from topoipam.ipam.check import is_borrowed

    rows, unclassified = [], 0
    for a in allocations:
        node = a.attrs.get("node")
        if not node:
            unclassified += 1
            continue
        if not is_borrowed(a, (node_labels or {}).get):
            continue
        owner = a.holder.display if a.holder else ""
        ns = a.attrs.get("namespace", "")
        if "pod" in a.attrs:
            kind, to = "pod", f"{ns}/{a.attrs['pod']}"
        else:
            kind, to = a.attrs.get("type", ""), ""
        rows.append([str(a.ip.ip), node, str(a.block), owner, kind, to])
    return rows, unclassified


def _show_borrowed(ctx) -> int:
    from topoipam.cli.tables import render

    from topoipam.resources import repo

    labels = {n.name: n.labels for n in repo.list_nodes(ctx.store)}
    rows, unclassified = borrowed(_service(ctx).allocations(), labels)
    ctx.out.write(render(["IP", "BORROWING-NODE", "BLOCK", "BLOCK OWNER", "TYPE", "ALLOCATED-TO"], rows))
    if unclassified:
        print(f"\nNote: found {unclassified} IP allocations without an explicit node association. "
              "Unable to determine if they are borrowed.", file=ctx.out)
    return 0


def _show_configuration(ctx) -> int:
    from topoipam.cli.tables import render
    from topoipam.resources import repo

    spec = repo.get_ipam_config(ctx.store).spec
    rows = [["StrictAffinity", _go_bool(spec.strict_affinity)],
            ["AutoAllocateBlocks", _go_bool(spec.auto_allocate_blocks)],
            ["MaxBlocksPerHost", str(spec.max_blocks_per_host)]]
    ctx.out.write(render(["PROPERTY", "VALUE"], rows))
    return 0


def _go_bool(value: bool) -> str:
    return "true" if value else "false"


# ---------------------------------------------------------------- release


def run_release(args, ctx) -> int:
    if args.from_report:
        from topoipam.cli.ipam_check import release_from_reports

        return release_from_reports(args.from_report, ctx)
    svc = _service(ctx)
    if args.handle is not None:
        try:
            released = svc.release_by_handle(args.handle)
        except NotFoundError:
            raise NotFoundError(f"handle {args.handle} does not exist (no address is held under it)") from None
        for ip in released:
            print(f"Successfully released IP address {ip}", file=ctx.out)
        if not released:
            print(f"Successfully released handle {args.handle} (it held no address)", file=ctx.out)
        return 0
    ip = parse_ip(args.ip)
    if svc.release_ips([ip]):
        raise NotFoundError(f"IP address {ip} is not assigned")
    print(f"Successfully released IP address {ip}", file=ctx.out)
    return 0


# ---------------------------------------------------------------- configure


def _parse_go_bool(text: str) -> bool:
    """Go's strconv.ParseBool."""
    if text in ("1", "t", "T", "TRUE", "true", "True"):
        return True
    if text in ("0", "f", "F", "FALSE", "false", "False"):
        return False
    raise ValidationError("invalid value. Use true or false to set strictaffinity")


def _parse_int32(text: str) -> int:
    try:
        value = int(text, 10)
    except ValueError:
        value = None
    if value is None or not -INT32_MAX - 1 <= value <= INT32_MAX or text.strip() != text:
        raise ValidationError("invalid value for maxblockhost. Use a valid number")
    return value


def run_configure(args, ctx) -> int:
    strict = _parse_go_bool(args.strictaffinity) if args.strictaffinity else None
    max_blocks = _parse_int32(args.max_blocks_per_host) if args.max_blocks_per_host else None
    if strict is None and max_blocks is None:
        raise ValidationError("at least one configuration option must be specified")
    spec = {}
    if strict is not None:
        spec["strictAffinity"] = strict
    if max_blocks is not None:
        spec["maxBlocksPerHost"] = max_blocks
    try:
        from topoipam.resources.service import ResourceService

        ResourceService(ctx.store).merge_ipam_config(spec)
    except TopoipamError as err:
        err.message = f"error: {err.message}"
        raise
    if strict is not None:
        print(f"Successfully set StrictAffinity to: {_go_bool(strict)}", file=ctx.out)
    if max_blocks is not None:
        print(f"Successfully set MaxBlocksPerHost to: {max_blocks}", file=ctx.out)
    return 0


# ---------------------------------------------------------------- split


def run_split(args, ctx) -> int:
    from topoipam.resources.split import check_parts, split_pool

    try:
        parts = int(args.number)
    except ValueError:
        raise ValidationError(f"error reading number to split IP pools into. {args.number} is not a valid "
                              "number") from None
    check_parts(parts)  # before anything is read
    from topoipam.cli.progress import progress_for

    with progress_for(ctx, f"split: replacing pool {args.name or args.cidr} by {parts} pools (one transaction)"):
        parent, children = split_pool(ctx.store, parts, name=args.name, cidr=args.cidr)
    # calicoctl omits the newlines after the first and last lines; topoipam prints whole lines.
    print(f"IP Pool {parent} was successfully split into {parts} smaller pools.", file=ctx.out)
    for child in children:
        print(f"Created {child.name} with CIDR {child.spec.cidr}.", file=ctx.out)
    # calicoctl's sentence, and where that documentation is.
    print("Please refer to the documentation for final steps: docs/operations.md, \"After ipam split\".",
          file=ctx.out)
    return 0


# ---------------------------------------------------------------- assign


def _attrs(args) -> dict:
    attrs = {}
    for item in args.attr:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValidationError(f"invalid attribute {item!r}: expected KEY=VALUE")
        attrs[key] = value
    if args.namespace:
        attrs["namespace"] = args.namespace
    attrs["node"] = args.node  # what borrowed-address reports and the node-gone check read
    return attrs


def _pools_by_family(store, requested: list[str], num4: int) -> tuple[list[str], list[str]]:
    """Split --pool values into IPv4 and IPv6 ones (a CIDR by its family, a name by its pool's)."""
    import ipaddress

    from topoipam.resources import repo

    pools4, pools6, names = [], [], None
    for text in requested:
        try:
            version = ipaddress.ip_network(text, strict=False).version
        except ValueError:
            names = names if names is not None else {p.name: p.version for p in repo.list_pools(store)}
            # an unknown name goes where it will be reported: the service says it does not exist
            version = names.get(text, 4 if num4 else 6)
        (pools4 if version == 4 else pools6).append(text)
    return pools4, pools6


def run_assign(args, ctx) -> int:
    import secrets

    from topoipam.ipam import AssignRequest

    attrs = _attrs(args)
    handle, generated = args.handle, args.handle is None
    if generated:
        handle = f"topoipam-assign.{secrets.token_hex(8)}"
    svc = _service(ctx)
    if args.ip is not None:
        if args.ipv4 is not None or args.ipv6 or args.pool:
            raise ValidationError("--ip assigns exactly one address: it cannot be combined with --ipv4, --ipv6 "
                                  "or --pool")
        addresses, notes = [svc.assign_ip(parse_ip(args.ip), handle, attrs, args.node)], []
    else:
        num4 = args.ipv4 if args.ipv4 is not None else (0 if args.ipv6 else 1)
        if num4 == 0 and args.ipv6 == 0:
            raise ValidationError("nothing to assign: --ipv4 and --ipv6 are both 0")
        pools4, pools6 = _pools_by_family(ctx.store, args.pool, num4)
        if pools4 and not num4 or pools6 and not args.ipv6:
            family = 4 if pools4 and not num4 else 6
            raise ValidationError(f"--pool names IPv{family} pools but no IPv{family} address is asked for")
        req = AssignRequest(node=args.node, handle=handle, num4=num4, num6=args.ipv6, pools4=tuple(pools4),
                            pools6=tuple(pools6), namespace=args.namespace, attrs=attrs,
                            allow_partial=args.allow_partial)
        res = _auto_assign(svc, req)
        addresses, notes = list(res.ipv4) + list(res.ipv6), res.messages
    for a in addresses:
        print(a.ip if hasattr(a, "ip") else a, file=ctx.out)
    for note in notes:
        print(note, file=ctx.err)  # --allow-partial's shortfall: Calico's "Assigned <n> out of <m> ..." text
    if generated and addresses:
        print(f"Handle ID: {handle}", file=ctx.err)
    return 0


def _auto_assign(svc, req):
    """``svc.auto_assign``; a shortfall without --allow-partial says that nothing was kept. The library's
    text is Calico's PartialFulfillmentError ("Assigned 256 out of 257 ..."), which counts what was
    assigned before the request was undone: true, but read alone it suggests 256 addresses are held."""
    from topoipam.errors import BlockLimitError, ExhaustedError

    try:
        return svc.auto_assign(req)
    except (BlockLimitError, ExhaustedError) as err:  # the shortfall errors (raised only without allow_partial)
        wanted = " and ".join(f"{n} IPv{v}" for v, n in ((4, req.num4), (6, req.num6)) if n)
        err.message = (f"could not assign {wanted} address(es), so none was kept (every address this "
                       f"request had taken was released; --allow-partial keeps them): {err.message}")
        raise
