"""``topoipam ipam gc [--dry-run] [--grace DURATION] [-o text|json]``: online garbage collection.

Releases allocations whose holder is gone (nodes that no longer exist, handles without addresses,
addresses without handles), each only after the grace period and each fenced by its block's
sequence number or its handle's revision, with no datastore lock (``ipam/gc.py`` says what is judged
gone and why that is safe). Every release is printed with who held it, since when and why.

Exit codes: 0 the pass completed (whatever it released, including nothing; with ``--dry-run``:
nothing would be released), 4 with ``--dry-run`` when something would be released (as ``ipam check``
finding problems), 1 when a release failed (the others were still attempted), 2 bad arguments,
3 datastore unavailable.
"""

from __future__ import annotations

import json

from topoipam.errors import EXIT_CHECK_PROBLEMS, EXIT_FAILED


def register(sub) -> None:
    p = sub.add_parser("gc", help="Release allocations whose holder is gone (online, fenced, after a grace period).",
                       description="Release addresses of nodes that no longer exist, handles without addresses and "
                                   "addresses without handles, once gone for longer than --grace; no datastore lock: "
                                   "each release lands only if the address or handle is unchanged since it was read. "
                                   "Exit 0 done (with --dry-run: nothing to release), 4 with --dry-run when something "
                                   "would be released, 1 if a release failed.")
    p.add_argument("--dry-run", action="store_true", help="print what would be released; write nothing")
    p.add_argument("--grace", default="15m", metavar="DURATION",
                   help="release only what has been gone this long (default 15m; e.g. 0s, 90s, 1h30m); age is "
                        "counted from the allocation's timestamp attribute, else from now")
    p.add_argument("-o", "--output", choices=("text", "json"), default="text", help="output format (default text)")
    p.set_defaults(run=run_gc)


def run_gc(args, ctx) -> int:
    import time

    from topoipam.core.duration import parse_duration
    from topoipam.ipam import IpamService, gc

    grace = parse_duration(args.grace)
    now = time.time()
    verdict, done = gc.collect(IpamService(ctx.store), now, grace, dry_run=args.dry_run)
    if args.output == "json":
        doc = {"dryRun": args.dry_run, "graceSeconds": grace,
               "items": [gc.to_dict(g, now, outcome) for g, outcome in done],
               "withinGrace": [gc.to_dict(g, now) for g in verdict.young]}
        print(json.dumps(doc, indent=2), file=ctx.out)
    else:
        _print_text(ctx.out, done, verdict.young, now, args.grace, args.dry_run)
    if any(outcome.startswith("failed") for _, outcome in done):
        return EXIT_FAILED
    return EXIT_CHECK_PROBLEMS if args.dry_run and done else 0


def _print_text(out, done, young, now: float, grace_text: str, dry_run: bool) -> None:
    from topoipam.ipam import gc

    for g, outcome in done:
        print(f"{outcome}: {gc.describe(g, now)}", file=out)
    for g in young:
        print(f"kept (gone for less than {grace_text}): {gc.describe(g, now)}", file=out)
    released = sum(1 for _, o in done if o in ("released", "would release"))
    skipped = sum(1 for _, o in done if o.startswith("skipped"))
    failed = sum(1 for _, o in done if o.startswith("failed"))
    head = f"Would release {released}" if dry_run else f"Released {released}"
    print(f"{head}; {skipped} skipped (changed since read); {failed} failed; {len(young)} kept within the grace "
          f"period.", file=out)
