"""What the agent watches: pools, the IPAM config, reservations and its own Node.

``TopologyWatch(store, node)`` keeps no values. It calls its listeners when
one of those resources changes, so that the agent re-runs the tunnel-address
reconciliation and tells its ``IpamService`` to drop the topology it keeps
(``IpamService.forget_topology``). Neither is needed for an assignment to be
right: every commit the service plans from its kept topology carries the
topology fences (``ipam/topology.py``), so a change the watch has not
delivered yet costs one refused commit, never a decision on a stale pool list
or stale labels. The watch makes that refused commit rare, and lets the
tunnel addresses follow pools and labels without waiting for a request.

On a store that can watch (etcd) it follows ``store.watch`` of
``/topoipam/v3/`` (resources only; IPAM records live elsewhere) from the
revision it (re)started at. When the stream breaks (datastore unreachable,
history compacted) it retries with backoff; once it is back it notifies
(anything may have changed meanwhile) and watches from the new revision.
On a store without watch (SQLite, memory) a poller compares the revisions of
those records every ``poll_interval`` seconds.

Listeners are called from the watch/poll thread with no lock held.
"""

from __future__ import annotations

import logging
import threading
from typing import Callable

from topoipam.errors import ConflictError, TopoipamError
from topoipam.resources.keys import ROOT, resource_key, resource_prefix
from topoipam.store.base import Record, Store

log = logging.getLogger("topoipam.agent")

WATCHED_KINDS = ("IPPool", "IPAMConfiguration", "IPReservation")  # and the agent's own Node
MAX_BACKOFF = 2.0


class TopologyWatch:
    def __init__(self, store: Store, node_name: str, *, poll_interval: float = 1.0) -> None:
        self.store = store
        self.poll_interval = poll_interval
        self.can_watch = callable(getattr(store, "watch", None)) and callable(getattr(store, "revision", None))
        self._prefixes = tuple(resource_prefix(k) for k in WATCHED_KINDS)
        self._node_key = resource_key("Node", node_name)
        self._listeners: list[Callable[[], None]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.starts = 0  # how many times the watch (re)started: once per (re)connection
        self._seen: tuple | None = None  # the poller's last fingerprint
        self.connected = threading.Event()  # the datastore answered the last time we asked

    def add_listener(self, fn: Callable[[], None]) -> None:
        self._listeners.append(fn)

    def start(self) -> "TopologyWatch":
        if not self.can_watch:  # the poller's baseline, taken before the agent's first reads: a change
            # after it (the agent's own Node and tunnel writes included) is noticed at the next poll
            self._seen = self._poll_once(None, notify=False)
        target = self._watch_loop if self.can_watch else self._poll_loop
        self._thread = threading.Thread(target=target, name="topoipam-agent-watch", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop following changes. A blocked watch ends when the store is closed (the thread is a daemon)."""
        self._stop.set()

    def relevant(self, key: str) -> bool:
        return key == self._node_key or key.startswith(self._prefixes)

    def _notify(self) -> None:
        for fn in self._listeners:
            try:
                fn()
            except Exception:  # a listener's bug must not stop the watch
                log.exception("topology listener failed")

    def _lost(self, exc: TopoipamError) -> None:
        if self.connected.is_set():
            log.warning("datastore unreachable, topology watch suspended: %s", exc)
        self.connected.clear()

    # --- watch (etcd) -----------------------------------------------------------------
    def _watch_loop(self) -> None:
        backoff = 0.1
        while not self._stop.is_set():
            try:
                revision = self.store.revision()
                self._started(revision)
                backoff = 0.1
                for ev in self.store.watch(ROOT, start_revision=revision + 1):
                    if self._stop.is_set():
                        return
                    if self.relevant(ev.key):
                        self._notify()
            except ConflictError as exc:  # history compacted under the watch: start again from now
                log.info("restarting the topology watch: %s", exc)
            except TopoipamError as exc:
                if self._stop.is_set():
                    return
                self._lost(exc)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)

    def _started(self, revision: int) -> None:
        was_connected = self.connected.is_set()
        self.connected.set()
        self.starts += 1
        if not was_connected and self.starts > 1:
            log.warning("datastore reachable again at revision %d; topology reloaded on the next request, "
                        "tunnel addresses checked again", revision)
        self._notify()  # anything may have changed while we were not watching

    # --- poll (SQLite, memory) --------------------------------------------------------
    def _poll_loop(self) -> None:
        seen = self._seen
        while not self._stop.wait(self.poll_interval):
            seen = self._poll_once(seen)

    def _poll_once(self, seen: tuple | None, notify: bool = True) -> tuple | None:
        """Compare the watched records' revisions with ``seen`` (None: never read) and notify on a
        difference. Returns what to compare with next time: the last state read (kept through an
        outage, so that a change made meanwhile is noticed once the datastore answers again)."""
        try:
            state = self._fingerprint()
        except TopoipamError as exc:
            self._lost(exc)
            return seen
        self.connected.set()
        if notify and state != seen:
            self._notify()
        return state

    def _fingerprint(self) -> tuple:
        recs: list[Record] = []
        for prefix in self._prefixes:
            recs += self.store.list(prefix)
        node = self.store.get(self._node_key)
        if node is not None:
            recs.append(node)
        return tuple((r.key, r.revision) for r in recs)
