"""Kernel routes for the node's affine blocks: ``topoipam agent --routes blackhole``.

For every block affine to the agent's node the agent keeps one route in the
node's main table, as Calico's felix does::

    blackhole 10.77.0.64/26 proto 199 metric 4096

Why a blackhole: the block is this node's, so traffic for one of its addresses
that no workload holds right now must stop here, not follow the default route
back out (a loop between nodes announcing each other's blocks). A routing
daemon announces exactly these routes to the fabric, one per block, instead of
one per workload (BIRD: ``protocol kernel { learn; ipv4 { import where krt_source
= 199; }; }``; FRR: ``redistribute kernel route-map TOPOIPAM`` matching ``protocol
199``; docs/routes.md gives the whole configuration).

The high metric keeps the blackhole behind any device route for the same
prefix: under bridge the bridge holds the block's gateway address, so the
kernel's connected /26 (metric 0) wins while the bridge exists, and the
blackhole only catches what no device answers for. Workload routes (/32 under
ptp) are more specific and always win.

The routes are reconciled against the datastore (one listing per family)
when asked (after an ADD, when the topology watch fires) at most once per
``min_interval``, and every ``period`` seconds in any case, so that a block
released elsewhere (pool deleted, ``ipam release``, gc) loses its route too.
Only routes with the agent's protocol number are ever touched. Needs
CAP_NET_ADMIN and ``ip`` (iproute2).
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import threading

from topoipam.errors import TopoipamError
from topoipam.ipam.blocks import list_affine_nets
from topoipam.store.base import Store

log = logging.getLogger("topoipam.agent")

PROTOCOL = 199  # the routes' "proto": how this agent recognises its own routes (and BIRD/FRR filter them)
METRIC = 4096  # behind device routes of the same prefix (IPv4 0, IPv6 256)
IP = shutil.which("ip") or "/usr/sbin/ip"


class RouteError(TopoipamError):
    """``ip`` refused a route change."""


class BlockRoutes:
    def __init__(self, store: Store, node: str, *, min_interval: float = 1.0, period: float = 30.0,
                 protocol: int = PROTOCOL, metric: int = METRIC) -> None:
        self.store, self.node = store, node
        self.min_interval, self.period = min_interval, period
        self.protocol, self.metric = protocol, metric
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.synced = threading.Event()  # set after each successful reconciliation (tests wait on it)

    # --- what should be there and what is -------------------------------------------------
    def wanted(self) -> set[str]:
        return {str(net) for version in (4, 6) for net in list_affine_nets(self.store, self.node, version)}

    def installed(self) -> set[str]:
        found: set[str] = set()
        for family in ("-4", "-6"):
            out = self._ip(family, "-j", "route", "show", "table", "main", "type", "blackhole",
                           "proto", str(self.protocol))
            found |= {r["dst"] for r in json.loads(out or "[]") if "/" in r.get("dst", "")}
        return found

    def sync(self) -> tuple[list[str], list[str]]:
        """Make the kernel's routes match the datastore's affinities; returns (added, removed)."""
        wanted, have = self.wanted(), self.installed()
        added, removed = sorted(wanted - have), sorted(have - wanted)
        for cidr in added:
            self._route("replace", cidr)
        for cidr in removed:
            self._route("del", cidr)
        return added, removed

    def _route(self, verb: str, cidr: str) -> None:
        family = "-6" if ":" in cidr else "-4"
        self._ip(family, "route", verb, "blackhole", cidr, "proto", str(self.protocol), "metric", str(self.metric))

    def _ip(self, *args: str) -> str:
        try:
            proc = subprocess.run([IP, *args], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise RouteError(f"ip {' '.join(args)}: {exc}") from None
        if proc.returncode != 0:
            raise RouteError(f"ip {' '.join(args)}: {proc.stderr.strip() or f'exit {proc.returncode}'}")
        return proc.stdout

    # --- the keeper thread ------------------------------------------------------------------
    def poke(self) -> None:
        """Something may have changed (a block claimed, the topology moved): reconcile soon."""
        self._wake.set()

    def start(self) -> "BlockRoutes":
        self._thread = threading.Thread(target=self._loop, name="topoipam-agent-routes", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=15)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            try:
                added, removed = self.sync()
                for cidr in added:
                    log.info("route: blackhole %s (block affine to %s)", cidr, self.node)
                for cidr in removed:
                    log.info("route: removed blackhole %s (no longer affine to %s)", cidr, self.node)
                self.synced.set()
            except TopoipamError as exc:
                log.warning("block routes not reconciled: %s", exc)
            self._stop.wait(self.min_interval)  # throttle: a burst of ADDs costs one reconciliation a second
            self._wake.wait(self.period)
