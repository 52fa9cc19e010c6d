"""``--dry-run`` of create, apply, replace, delete, patch and label: the change and its impact, nothing written.

The command runs as it would for real, through the same service, on a private in-memory copy of
the datastore (``MemoryStore.copy_of``): the same validation, the same errors and exit codes, the
same IPAM releases of a pool or node delete. Then the copy is compared with itself as it was:
per resource what was created, replaced or deleted (``resources.diff``), and the impact on IPAM
(``ipam.impact``: lost coverage, drift, lost affinities, pools selecting no node), which is what
``ipam coverage`` and ``ipam drift`` report once the change is made for real. Exit 0: no impact;
4: some impact (as coverage and drift do).
"""

from __future__ import annotations

import json
import time

from topoipam.errors import EXIT_CHECK_PROBLEMS

OUTPUTS = ("text", "json")


def add_flags(p) -> None:
    p.add_argument("--dry-run", action="store_true", help="show the change, per resource, and its impact on "
                   "IPAM (coverage, drift, affinities, pools selecting no node) without writing anything; "
                   "exit 4 if it has impact")
    p.add_argument("-o", "--output", choices=OUTPUTS, default=None,
                   help="with --dry-run: text (default) or json")


def check_flags(args) -> None:
    from topoipam.errors import ValidationError

    if args.output is not None and not args.dry_run:
        raise ValidationError(f"-o/--output {args.output} is only for --dry-run (the change itself prints one "
                              "line)")


class DryRun:
    """A copy of ``ctx.store`` to run one command on, and what it looked like before."""

    def __init__(self, ctx, output: str | None) -> None:
        from topoipam.ipam.impact import observe
        from topoipam.resources.diff import resource_state
        from topoipam.store.decoded import Decoded
        from topoipam.store.memory import MemoryStore

        self.out, self.output = ctx.out, output or "text"
        self.store = MemoryStore.copy_of(ctx.store, "/topoipam/")
        self.now = time.time()
        self.released: list[str] = []
        # Before and after share the decoded records: after the change only what it wrote is decoded
        # again (a new revision); the decoded objects are read, never changed, by both.
        self._decoded = Decoded()
        self._resources = resource_state(self.store, self._decoded)
        self._before = observe(self.store, self.now, self._decoded)

    def service(self):
        from topoipam.ipam.pool_blocks import PoolBlocks
        from topoipam.resources.service import ResourceService

        return ResourceService(self.store, PoolBlocks(self.store, self.released.append))

    def finish(self) -> int:
        """Print the change and its impact; the exit code."""
        from topoipam.ipam.impact import compare, observe
        from topoipam.resources.diff import changes, resource_state

        diff = changes(self._resources, resource_state(self.store, self._decoded))
        impact = compare(self._before, observe(self.store, self.now, self._decoded))
        if self.output == "json":
            _print_json(self.out, diff, self.released, impact)
        else:
            _print_text(self.out, diff, self.released, impact)
        return EXIT_CHECK_PROBLEMS if impact.found else 0


def _print_json(out, diff, released, impact) -> None:
    from topoipam.cli.insights import to_data

    after = impact.after
    data = {"dryRun": True, "changes": diff, "released": [line.replace("Released ", "", 1) for line in released],
            "impact": {"found": impact.found, "uncovered": impact.uncovered, "drift": impact.drift,
                       "affinities": impact.affinities, "unused_pools": impact.unused_pools},
            "after": {"uncovered": list(after.uncovered.values()), "drift": list(after.drift.values()),
                      "unused_pools": after.unused_pools}}
    out.write(json.dumps(to_data(data), indent=2) + "\n")


def _print_text(out, diff, released, impact) -> None:
    from topoipam.resources.diff import describe_value

    print("Dry run: nothing was written.", file=out)
    if not diff:
        print("No resource would change.", file=out)
    for c in diff:
        print(f"{c.kind}({c.name}) would be {c.action}", file=out)
        if c.action == "replaced":
            for f in c.fields:
                print(f"  {f.path}: {describe_value(f.old)} -> {describe_value(f.new)}", file=out)
    for line in released:
        print(f"Would release {line.removeprefix('Released ')}" if line.startswith("Released ") else line, file=out)
    if not impact.found:
        print("Impact: none (no node loses coverage, no workload drifts, no block loses its affinity, "
              "no pool is left selecting no node)", file=out)
        return
    print("Impact:", file=out)
    for u in impact.uncovered:
        print(f"  {u.node} loses IPv{u.version} coverage: {u.reason}", file=out)
    for d in impact.drift:
        print(f"  workload {d.namespace or '<none>'}/{d.workload} on {d.node}: {d.ip} would lie outside every "
              f"pool that selects its node (now in {d.pool or 'no pool'}; selecting: "
              f"{', '.join(d.now_pools) or 'none'})", file=out)
    for a in impact.affinities:
        when = "" if a.when == "now" else " once empty"
        print(f"  block {a.block} ({a.pool or 'no pool'}) loses its affinity to {a.node}{when}: {a.outcome}",
              file=out)
    for p in impact.unused_pools:
        print(f"  pool {p} would select no node", file=out)
