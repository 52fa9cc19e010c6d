"""``topoipam ipam check [-o REPORT] [--show-problem-ips]`` and ``ipam release --from-report``.

calicoctl's check compares IPAM with the live pods of Kubernetes; topoipam
sees no live workloads, so it checks what the datastore itself can tell
(progress lines and counts in calicoctl's words where the check is the same):

* addresses allocated to nodes that no longer exist (the leak calicoctl calls
  "allocated but not in use": a deleted node runs no workload) -- these are
  the only addresses a report marks ``"inUse": false``, so the only ones
  ``release --from-report`` frees;
* addresses in blocks outside every IP pool;
* borrowed addresses (allocated to a node from a block affine to another node,
  to a domain the node is not in, or to none): legal in Calico with strict affinity off, but such an address
  lies outside the routes its node's rack announces, so topoipam counts it;
* handles with no address (leaked; the report lists them with their revision);
* handles named by blocks with no handle record (calicoctl prints this count but
  does not add it to the problems; topoipam does);
* handle counts, affinity records and claimed-block summaries that disagree
  with the blocks, and blocks affine to a domain no node carries (``IpamService.check``).

Exit 0 when clean, 4 when problems were found. The report is calicoctl's JSON
(2-space indent, keys of ``allocations`` sorted).
"""

from __future__ import annotations

import json
from collections import Counter

from topoipam.errors import EXIT_CHECK_PROBLEMS, TopoipamError, ValidationError

TOP_NODES = 20
_SERVICE_KINDS = ("affinity-without-block", "block-without-affinity-record", "summary-mismatch",
                  "block-inconsistent", "domain-without-node", "record-undecodable")


def register(sub) -> None:
    p = sub.add_parser("check", help="Check IPAM data for leaks and inconsistencies (exit 4 if any).",
                       description="Check IPAM for addresses of nodes that no longer exist, addresses outside every "
                                   "pool, borrowed addresses, handles without addresses, addresses without handles "
                                   "and inconsistent records. Exit 0 if clean, 4 if problems were found.")
    p.add_argument("-o", "--output", metavar="REPORT", help="write calicoctl's JSON report to this file")
    p.add_argument("--show-problem-ips", action="store_true", help="print every problem address and handle")
    p.set_defaults(run=run_check)


def _attr_string(a) -> str:
    extra = ",".join(f"{k}={a.attrs[k]}" for k in sorted(a.attrs))
    return f"Main:{a.handle if a.handle is not None else '<none>'} Extra:{extra}"


class _Checker:
    def __init__(self, ctx, show: bool) -> None:
        from topoipam.ipam import IpamService, check
        from topoipam.ipam.leaks import handle_records
        from topoipam.resources import repo

        from topoipam.cli.progress import progress_for

        store = ctx.store
        self.out, self.show = ctx.out, show
        damaged: list = []  # records that do not decode: left out of the listings, named by the check
        with progress_for(ctx, "check: reading handles") as bar:  # erased before the first line is printed
            # Handles BEFORE blocks: one commit writes an assignment's handle and block together, so an
            # assignment landing between the two reads shows as an address whose handle is missing (a
            # problem release --from-report does not act on), never as a leaked handle it would delete.
            self.handles = handle_records(store, damaged=damaged)
            bar.stage(f"check: {len(self.handles):,} handles read; reading blocks")
            listing = list(check.iter_blocks(store, damaged))  # the one listing of every block, for all three views
            bar.stage(f"check: {len(listing):,} blocks read; usage and allocations")
            snap = IpamService(store).snapshot()
            self.blocks = check.block_usage(store, snap, listing)
            self.allocations = check.allocations(store, blocks=listing, handles=self.handles)
            bar.stage(f"check: {len(self.allocations):,} allocations; looking for inconsistencies")
            self.findings = check.check(store, snap, listing, self.handles, damaged).findings
            self.pools = repo.list_pools(store)
            self.node_labels = {n.name: n.labels for n in repo.list_nodes(store)}
            self.nodes = set(self.node_labels)
        self.problems = 0
        self.not_in_use: set = set()
        self.leaked_handles: list = []

    def say(self, text: str = "") -> None:
        print(text, file=self.out)

    def owner(self, a) -> str:
        return a.attrs.get("node") or a.node or ""

    def borrowed(self, a) -> bool:
        from topoipam.ipam.check import is_borrowed

        return is_borrowed(a, self.node_labels.get)

    def run(self) -> int:
        self.say("Checking IPAM for inconsistencies...")
        self.say()
        self.load()
        self.scan_addresses()
        self.scan_handles()
        self.repairs()
        self.say(f"Check complete; found {self.problems} problems.")
        return self.problems

    def load(self) -> None:
        self.say("Loading all IPAM blocks...")
        self.say(f"Found {len(self.blocks)} IPAM blocks.")
        for b in self.blocks:
            self.say(f" IPAM block {b.cidr} affinity={b.affinity or '<none>'}:")
        self.say(f"IPAM blocks record {len(self.allocations)} allocations.")
        self.say()
        self.say("Loading all IPAM pools...")
        active = [p for p in self.pools if not p.spec.disabled]
        for p in active:
            self.say(f"  {p.spec.cidr}")
        self.say(f"Found {len(active)} active IP pools.")
        self.say()
        self.say("Loading all nodes.")
        self.say(f"Found {len(self.nodes)} nodes.")
        self.say()
        self.say("Loading all handles")
        self.say(f"Found {len(self.handles)} handles.")
        self.say(f"Looking for top (up to {TOP_NODES}) nodes by allocations...")
        by_node = Counter(self.owner(a) for a in self.allocations)
        ranked = sorted(by_node.items(), key=lambda kv: (-kv[1], kv[0]))
        for node, count in ranked[:TOP_NODES]:
            self.say(f"  {node} has {count} allocations")
        if ranked:
            self.say(f"Node with most allocations has {ranked[0][1]}; median is {ranked[len(ranked) // 2][1]}")
        self.say()

    def _scan(self, title: str, found: list, summary: str, line) -> None:
        self.say(title)
        if self.show:
            for a in found:
                self.say(line(a))
        self.problems += len(found)
        self.say(summary.format(n=len(found)))

    def scan_addresses(self) -> None:
        from topoipam.core.pools import pool_containing

        gone = [a for a in self.allocations if self.owner(a) and self.owner(a) not in self.nodes]
        self.not_in_use = {str(a.ip.ip) for a in gone}
        self._scan("Scanning for IPs allocated to nodes that no longer exist...", gone,
                   "Found {n} IPs that are allocated in IPAM to nodes that no longer exist.",
                   lambda a: f"  {a.ip.ip} leaked (node {self.owner(a)} no longer exists); attrs {_attr_string(a)}")
        outside = [a for a in self.allocations if pool_containing(self.pools, a.block) is None]
        self._scan("Scanning for IPs in blocks outside every IP pool...", outside,
                   "Found {n} IPs that are allocated in blocks outside every IP pool.",
                   lambda a: f"  {a.ip.ip} in block {a.block} is not in any IP pool; attrs {_attr_string(a)}")
        lent = [a for a in self.allocations if self.borrowed(a)]
        self._scan("Scanning for borrowed IPs...", lent,
                   "Found {n} IPs borrowed from blocks affine to another node (or to none).",
                   lambda a: f"  {a.ip.ip} of node {a.attrs['node']} is borrowed from block {a.block} "
                             f"(affinity {a.holder.affinity if a.holder else '<none>'}); attrs {_attr_string(a)}")
        self.say()

    def scan_handles(self) -> None:
        used = {a.handle for a in self.allocations if a.handle is not None}
        known = {h.handle for h in self.handles}
        self.say("Scanning for IPAM handles with no matching IPs...")
        self.leaked_handles = [h for h in self.handles if h.handle not in used]
        if self.show:
            for h in self.leaked_handles:
                self.say(f"  {h.handle} doesn't have any active IPs.")
        self.problems += len(self.leaked_handles)
        self.say(f"Found {len(self.leaked_handles)} handles with no matching IPs "
                 f"(and {len(self.handles) - len(self.leaked_handles)} handles with matches).")
        missing = sorted(used - known)
        self._scan("Scanning for IPs with missing handle...", missing,
                   "Found {n} handles mentioned in blocks with no matching handle resource.",
                   lambda h: f"  {h} is in use in a block but doesn't exist.")
        other = [f for f in self.findings
                 if f.kind in _SERVICE_KINDS or (f.kind == "handle-without-address" and f.handle in used)]
        self._scan("Scanning handle counts, block affinities and claimed-block summaries...", other,
                   "Found {n} records that disagree with the blocks.", lambda f: f"  {f.detail}")

    def repairs(self) -> None:
        """Every damaged record with the exact command that repairs it (always printed: assignment
        passes over these records until they are repaired)."""
        fixable = [f for f in self.findings if f.repair]
        if fixable:
            self.say("Damaged records and how to repair them:")
            for f in fixable:
                self.say(f"  {f.detail}")
                self.say(f"    repair: {f.repair}")
            self.say()

    def report(self) -> dict:
        from topoipam import __version__

        allocations = {}
        for a in sorted(self.allocations, key=lambda a: (a.ip.version, a.ip.ip)):
            ip = str(a.ip.ip)
            entry = {"ip": ip}
            if a.handle is not None:
                entry["handle"] = a.handle
            if a.sequence_number is not None:
                entry["sequenceNumber"] = a.sequence_number
            for key, attr in (("pod", "pod"), ("namespace", "namespace")):
                if a.attrs.get(attr):
                    entry[key] = a.attrs[attr]
            if self.owner(a):
                entry["node"] = self.owner(a)
            for key, attr in (("type", "type"), ("creationTimestamp", "timestamp")):
                if a.attrs.get(attr):
                    entry[key] = a.attrs[attr]
            entry["inUse"] = ip not in self.not_in_use
            if self.borrowed(a):
                entry["borrowed"] = True
            entry["owners"] = None  # topoipam sees no live workloads
            allocations.setdefault(ip, []).append(entry)
        out = {"version": __version__, "clusterGUID": "", "datastoreLocked": False,
               "clusterInformationRevision": "", "clusterType": "topoipam",
               "allocations": dict(sorted(allocations.items()))}
        if self.leaked_handles:
            out["leakedHandles"] = [{"ID": h.handle, "UID": None, "Revision": str(h.revision)}
                                    for h in self.leaked_handles]
        return out


def run_check(args, ctx) -> int:
    checker = _Checker(ctx, args.show_problem_ips)
    problems = checker.run()
    if args.output:
        try:
            with open(args.output, "w", encoding="utf-8") as fh:
                fh.write(json.dumps(checker.report(), indent=2))
        except OSError as exc:
            raise TopoipamError(f"cannot write report {args.output}: {exc.strerror}") from None
    return EXIT_CHECK_PROBLEMS if problems else 0


# ---------------------------------------------------------------- release --from-report


def _load_report(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as fh:
            report = json.load(fh)
    except OSError as exc:
        raise ValidationError(f"cannot read report {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise ValidationError(f"report {path} is not valid JSON: {exc}") from None
    if not isinstance(report, dict) or not isinstance(report.get("allocations"), dict) \
            or not isinstance(report.get("leakedHandles") or [], list):
        raise ValidationError(f"report {path} is not an 'ipam check -o' report (no \"allocations\" object)")
    return report


def _leaks(report: dict, path: str) -> tuple[dict, dict]:
    ips, handles = {}, {}
    try:
        for entries in report["allocations"].values():
            for e in entries:
                if not e.get("inUse", True):
                    ips[e["ip"]] = (e.get("handle"), e.get("sequenceNumber"))
        for h in report.get("leakedHandles") or []:
            handles[h["ID"]] = int(h["Revision"])
    except (TypeError, KeyError, ValueError, AttributeError):
        raise ValidationError(f"report {path} has a malformed allocation or handle entry") from None
    return ips, handles


def merge_reports(paths: list[str]) -> tuple[dict, dict]:
    """calicoctl's mergeReports: only leaks present (and unchanged) in every report."""
    ips = handles = None
    for path in paths:
        r_ips, r_handles = _leaks(_load_report(path), path)
        ips = r_ips if ips is None else {ip: v for ip, v in r_ips.items() if ip in ips}
        handles = r_handles if handles is None else {h: rev for h, rev in r_handles.items()
                                                     if handles.get(h) == rev}
    return ips or {}, handles or {}


def release_from_reports(paths: list[str], ctx) -> int:
    from topoipam.cli.progress import progress_for
    from topoipam.ipam import IpamService
    from topoipam.ipam.leaks import delete_handle_if_unchanged

    ips, handles = merge_reports(paths)
    out = ctx.out
    svc = IpamService(ctx.store)
    if ips:
        print(f"Releasing {len(ips)} old IPs...", file=out)
        skipped = 0
        with progress_for(ctx, "release: addresses") as bar:
            for done, (ip, (handle, seq)) in enumerate(sorted(ips.items()), 1):
                # Fenced: only if the address is still held under the same handle and sequence number.
                skipped += len(svc.release_ips([ip], handle=handle, seq=seq))
                bar.update(done, len(ips))
        print(f"Released {len(ips) - skipped} IPs successfully", file=out)
        if skipped:
            print(f"{skipped} addresses marked as leaked in the report had already been cleaned up.", file=out)
    else:
        print("Report didn't contain any leaked IPs to clean up.", file=out)
    if handles:
        print(f"Deleting {len(handles)} handles...", file=out)
        print("Key: '.' = Deleted OK; 'x' = skip, handle missing/changed.", file=out)
        done = 0
        for handle, revision in sorted(handles.items()):
            ok = delete_handle_if_unchanged(ctx.store, handle, revision)
            done += ok
            out.write("." if ok else "x")
        print(file=out)
        print(f"Released {done} handles; {len(handles) - done} skipped; 0 errors.", file=out)
    else:
        print("Report didn't contain any handles to clean up.", file=out)
    return 0
