"""``topoipam ipam repair --delete-record KEY --revision N | --block CIDR``: the repairs ``ipam check`` prints.

Exit 0 repaired (or nothing to do), 1 when the record changed since the check read it (nothing
written: run the check again), 2 bad arguments. See ``ipam/repair.py``.
"""

from __future__ import annotations

from topoipam.errors import TopoipamError


def register(sub) -> None:
    p = sub.add_parser("repair", help="Repair a damaged record that 'ipam check' named (its exact command).",
                       description="Delete a record that does not decode (or an affinity without a block) if it is "
                                   "still at the revision the check saw, or rebuild a block's free list so that "
                                   "each ordinal is accounted for exactly once.")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--delete-record", metavar="KEY", help="the record's datastore key")
    what.add_argument("--block", metavar="CIDR", help="the block to rebuild")
    p.add_argument("--revision", type=int, metavar="N", help="with --delete-record: the revision the check saw")
    p.set_defaults(run=run_repair)


def run_repair(args, ctx) -> int:
    from topoipam.cli.main import UsageError
    from topoipam.ipam import repair

    if args.delete_record is not None:
        if args.revision is None:
            raise UsageError("topoipam ipam repair: --delete-record needs --revision (as 'ipam check' prints it)")
        if not repair.delete_record(ctx.store, args.delete_record, args.revision):
            raise TopoipamError(f"record {args.delete_record} is gone or changed since revision {args.revision}: "
                                "nothing deleted; run 'topoipam ipam check' again")
        print(f"deleted {args.delete_record}", file=ctx.out)
        return 0
    done = repair.rebuild_block(ctx.store, args.block)
    if not done:
        raise TopoipamError(f"block {args.block} changed while it was rebuilt: nothing written; run it again")
    print(done, file=ctx.out)
    return 0
