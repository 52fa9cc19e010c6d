"""calicoctl's resource commands: create, apply, replace, delete, get, patch, label.

Messages, tables and outcomes follow calicoctl (reference 7.1-7.3) with one
deliberate difference: a file of several documents is validated whole and
written in one transaction, so a failure writes nothing (calicoctl keeps the
first N) and the message names the failing document. ``--dry-run`` (on every
verb but get) runs the same call on a copy of the datastore and prints the
change and its impact instead (``cli.dryrun``). ``delete node`` prints what
the node's decommission releases (``ipam.decommission``).

Every function here turns arguments into one service call and its result
into text; errors are raised, and ``cli.main`` maps them to exit codes.
"""

from __future__ import annotations

import sys

from topoipam.cli import dryrun
from topoipam.errors import TopoipamError, ValidationError

_PAST = {"create": "created", "apply": "applied", "replace": "replaced", "delete": "deleted"}


def register(subparsers) -> None:
    for verb, text in (("create", "Create resources from a file or stdin."),
                       ("apply", "Create or update resources from a file or stdin."),
                       ("replace", "Update existing resources from a file or stdin.")):
        p = subparsers.add_parser(verb, help=text, description=text)
        p.add_argument("-f", "--filename", required=True, metavar="FILE",
                       help="YAML or JSON file with one or more resources; '-' reads stdin")
        if verb == "create":
            p.add_argument("--skip-exists", action="store_true",
                           help="treat a resource that exists already as created")
        dryrun.add_flags(p)
        p.set_defaults(run=run_write, verb=verb)

    p = subparsers.add_parser("delete", help="Delete resources by file or by kind and name.",
                              description="topoipam delete -f FILE | topoipam delete KIND NAME...")
    p.add_argument("-f", "--filename", metavar="FILE", help="resources to delete; '-' reads stdin")
    p.add_argument("kind", nargs="?", metavar="KIND")
    p.add_argument("names", nargs="*", metavar="NAME")
    dryrun.add_flags(p)
    p.set_defaults(run=run_delete)

    p = subparsers.add_parser("get", help="Show resources.", description="topoipam get KIND [NAME...] [-o FORMAT]")
    p.add_argument("kind", metavar="KIND", help="workloadendpoint (wep: IPAM's workload allocations), ippool, "
                                                "node, ipamconfig, ipreservation, profile (or an alias)")
    p.add_argument("names", nargs="*", metavar="NAME")
    p.add_argument("-o", "--output", default="ps", metavar="FORMAT", help="ps (default), wide, yaml or json")
    p.set_defaults(run=run_get)

    p = subparsers.add_parser("patch", help="Change fields of one resource with a JSON merge patch.",
                              description="topoipam patch KIND NAME -p JSON")
    p.add_argument("kind", metavar="KIND")
    p.add_argument("name", metavar="NAME")
    p.add_argument("-p", "--patch", required=True, metavar="JSON", help='e.g. \'{"spec":{"disabled":true}}\'')
    p.add_argument("-t", "--type", default="strategic", metavar="TYPE",
                   help="strategic (default) or merge: both a JSON merge patch (RFC 7386), which is what a "
                        "strategic merge patch amounts to for these resources; json (RFC 6902) is not implemented")
    dryrun.add_flags(p)
    p.set_defaults(run=run_patch)

    p = subparsers.add_parser("label", help="Set or remove a label of a resource.",
                              description="topoipam label KIND NAME key=value [--overwrite] | "
                                          "topoipam label KIND NAME key --remove")
    p.add_argument("kind", metavar="KIND")
    p.add_argument("name", metavar="NAME")
    p.add_argument("label", metavar="LABEL", help="key=value, or key with --remove")
    p.add_argument("--overwrite", action="store_true", help="replace an existing value")
    p.add_argument("--remove", action="store_true", help="remove the label")
    dryrun.add_flags(p)
    p.set_defaults(run=run_label)


# ---------------------------------------------------------------- helpers


def read_resources(filename: str) -> list:
    """Decode every resource in ``filename`` (``-``: stdin)."""
    from topoipam.model.codec import decode_documents

    if filename == "-":
        text, source = sys.stdin.read(), "stdin"
    else:
        try:
            with open(filename, encoding="utf-8") as fh:
                text = fh.read()
        except OSError as exc:
            raise ValidationError(f"cannot read {filename}: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise ValidationError(f"cannot read {filename}: not UTF-8 text") from None
        source = filename
    return decode_documents(text, source)


def _kind_word(resources) -> str:
    kinds = {r.kind for r in resources}
    return f"'{kinds.pop()}' " if len(kinds) == 1 else ""


def _batch_failure(verb: str, resources, err: TopoipamError) -> TopoipamError:
    """calicoctl's wording; for several documents also which one failed (nothing was written)."""
    kind = _kind_word(resources)
    if len(resources) == 1:
        detail = f"{err.message}" if verb == "replace" else f"[{err.message}]"
        err.message = f"failed to {verb} {kind}resource: {detail}"
        return err
    where = ""
    document = getattr(err, "document", None)
    if document:
        index, doc_kind, name = document
        where = f"document {index} of {len(resources)}, {doc_kind}({name}): "
    err.message = f"failed to {verb} any {kind}resources: [{where}{err.message}] (nothing was {_PAST[verb]})"
    return err


def _service(ctx):
    from topoipam.ipam.pool_blocks import PoolBlocks
    from topoipam.resources.service import ResourceService

    return ResourceService(ctx.store, PoolBlocks(ctx.store, lambda line: print(line, file=ctx.out)))


def _writer(args, ctx):
    """``(dry run or None, the service to write with)``: with --dry-run, one on a copy of the datastore."""
    dryrun.check_flags(args)
    if not args.dry_run:
        return None, _service(ctx)
    dry = dryrun.DryRun(ctx, args.output)
    return dry, dry.service()


def _kind(text: str) -> str:
    from topoipam.model.kinds import canonical_kind

    return canonical_kind(text)


# ---------------------------------------------------------------- commands


def run_write(args, ctx) -> int:
    resources = read_resources(args.filename)
    dry, service = _writer(args, ctx)
    try:
        if args.verb == "create":
            result = service.create(resources, skip_exists=args.skip_exists)
        else:
            result = getattr(service, args.verb)(resources)
    except TopoipamError as err:
        raise _batch_failure(args.verb, resources, err) from None
    if dry:
        return dry.finish()
    print(f"Successfully {_PAST[args.verb]} {result.handled} {_kind_word(resources)}resource(s)", file=ctx.out)
    return 0


def run_delete(args, ctx) -> int:
    if args.filename and args.kind:
        raise ValidationError("delete takes either -f FILE or KIND NAME..., not both")
    if args.filename:
        items = read_resources(args.filename)
        kinds = {r.kind for r in items}
    elif args.kind and args.names:
        kind = _kind(args.kind)
        items, kinds = [(kind, name) for name in args.names], {kind}
    else:
        raise ValidationError("delete needs -f FILE, or a KIND and at least one NAME "
                              "(e.g. 'topoipam delete ippool default-ipv4-ippool')")
    kind_word = f"'{next(iter(kinds))}' " if len(kinds) == 1 else ""
    dry, service = _writer(args, ctx)
    results = service.delete(items)
    deleted = sum(1 for _, _, err in results if err is None)
    code = dry.finish() if dry else 0
    if deleted and not dry:
        print(f"Successfully deleted {deleted} {kind_word}resource(s)", file=ctx.out)
    failures = [err for _, _, err in results if err is not None]
    if failures:
        first = failures[0]
        first.message = "\n".join(f"Failed to delete {kind_word}resource: {e.message}" for e in failures)
        raise first
    return code


def run_get(args, ctx) -> int:
    from topoipam.cli import workloads
    from topoipam.cli.printers import check_format, render

    if args.kind.strip().lower() in workloads.ALIASES:  # not a stored resource: IPAM's allocations
        return workloads.run_get_workloads(args, ctx)
    output = check_format(args.output)
    kind = _kind(args.kind)
    service = _service(ctx)
    if not args.names:
        ctx.out.write(render(kind, service.list(kind), output, listing=True))
        return 0
    found = service.get(kind, args.names)
    present = [r for r in found if r is not None]
    if present:
        ctx.out.write(render(kind, present, output, listing=False))
    missing = [name for name, r in zip(args.names, found) if r is None]
    if missing:
        from topoipam.resources.service import not_found

        errors = [not_found(kind, name) for name in missing]
        errors[0].message = "\n".join(e.message for e in errors)
        raise errors[0]
    return 0


def run_patch(args, ctx) -> int:
    kind = _kind(args.kind)
    if args.type not in ("strategic", "merge"):
        raise ValidationError(f"patch type '{args.type}' is not supported: use strategic or merge")
    dry, service = _writer(args, ctx)
    try:
        service.patch(kind, args.name, args.patch)
    except TopoipamError as err:
        err.message = f"failed to patch '{kind}' resource: {err.message}"
        raise
    if dry:
        return dry.finish()
    print(f"Successfully patched 1 '{kind}' resource", file=ctx.out)
    return 0


def run_label(args, ctx) -> int:
    kind = _kind(args.kind)
    what = f"{args.kind} {args.name}"
    if args.remove and args.overwrite:
        raise ValidationError("label: --overwrite and --remove cannot be used together")
    if not args.remove and len(args.label.split("=")) != 2:
        raise ValidationError(f"invalid label {args.label}")
    dry, service = _writer(args, ctx)
    if args.remove:
        service.unlabel(kind, args.name, args.label, typed_kind=args.kind)
        if dry:
            return dry.finish()
        print(f"Successfully removed label {args.label} from {what}", file=ctx.out)
        return 0
    key, value = args.label.split("=")
    outcome = service.label(kind, args.name, key, value, overwrite=args.overwrite, typed_kind=args.kind)
    if dry:
        return dry.finish()
    print(f"Successfully {outcome} label {key} on {what}", file=ctx.out)
    return 0
