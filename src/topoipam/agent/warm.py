"""What the agent keeps warm: pools, its own Node, the IPAM config and the reservations.

``WarmTopology`` is an ``ipam.topology.Topology``. On a store that can watch
(etcd) it reads those resources once, then follows the store's watch of
``/topoipam/v3/`` from the revision it read at, applying every change. Blocks,
affinities and handles are never cached: the IPAM service always reads them
and writes them by compare-and-swap, so a topology that lags by one watch
event can only lead to a decision that was valid a moment earlier.

While the watch is down (the datastore unreachable, the stream broken, the
member without a leader) the cache is *not* used: every read goes to the store,
which answers fresh or fails fast with ``DatastoreUnavailableError`` (CNI code
11). When the watch comes back the resources are read again in full, so no
change made meanwhile is missed (and etcd compaction cannot bite).

On a store without watch (SQLite, memory) reads always go to the store (they
are local and cheap) and a poller compares revisions every ``poll_interval``
seconds, so that listeners (the tunnel addresses) still hear of changes.

Listeners are called from the watch/poll thread with no lock held, after a
change to a pool, the config, a reservation or this agent's Node.
"""

from __future__ import annotations

import logging
import threading
from typing import Callable

from topoipam.errors import ConflictError, TopoipamError
from topoipam.ipam.topology import StoreTopology
from topoipam.model.storage import from_storage
from topoipam.model.types import IPAMConfig, IPPool, IPReservation, Metadata, Node
from topoipam.resources.keys import ROOT, resource_key, resource_prefix
from topoipam.store.base import Record, Store

log = logging.getLogger("topoipam.agent")

WARM_KINDS = ("IPPool", "IPAMConfiguration", "IPReservation")
MAX_BACKOFF = 2.0


class WarmTopology:
    def __init__(self, store: Store, node_name: str, *, poll_interval: float = 1.0,
                 watch_store: Store | None = None) -> None:
        """``watch_store``: where the cache is loaded and watched from (default ``store``), so that a
        wrapper that cannot watch (``CountingStore``) can serve the cache misses."""
        self.store = watch_store or store
        self.node_name = node_name
        self.poll_interval = poll_interval
        self.can_watch = callable(getattr(self.store, "watch", None)) and callable(getattr(self.store, "revision", None))
        self._direct = StoreTopology(store)
        self._prefix_kind = {resource_prefix(k): k for k in WARM_KINDS}
        self._node_key = resource_key("Node", node_name)
        self._lock = threading.Lock()
        self._values: dict[str, tuple[int, object]] = {}  # key -> (revision, parsed resource)
        self._warm = False
        self._listeners: list[Callable[[], None]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.reloads = 0  # how many times the cache was (re)built: once per (re)connection
        self.connected = threading.Event()  # the datastore answered the last time we asked

    # --- the Topology protocol ------------------------------------------------------
    def pools(self) -> list[IPPool]:
        cached = self._cached("IPPool")
        return cached if cached is not None else self._direct.pools()

    def node(self, name: str) -> Node | None:
        if name == self.node_name:
            with self._lock:
                entry = self._values.get(self._node_key) if self._warm else None
            if entry is not None:
                return entry[1]
        return self._direct.node(name)  # other nodes, and ours until its registration is seen

    def ipam_config(self) -> IPAMConfig:
        cached = self._cached("IPAMConfiguration")
        if cached is None:
            return self._direct.ipam_config()
        default = [c for c in cached if c.name == "default"]
        return default[0] if default else IPAMConfig(Metadata(name="default"))

    def reservations(self) -> list[IPReservation]:
        cached = self._cached("IPReservation")
        return cached if cached is not None else self._direct.reservations()

    def _cached(self, kind: str) -> list | None:
        prefix = resource_prefix(kind)
        with self._lock:
            if not self._warm:
                return None
            return [v for k, (_, v) in sorted(self._values.items()) if k.startswith(prefix)]

    @property
    def warm(self) -> bool:
        with self._lock:
            return self._warm

    # --- life cycle -------------------------------------------------------------------
    def add_listener(self, fn: Callable[[], None]) -> None:
        self._listeners.append(fn)

    def start(self) -> "WarmTopology":
        target = self._watch_loop if self.can_watch else self._poll_loop
        self._thread = threading.Thread(target=target, name="topoipam-agent-watch", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop following changes. A blocked watch ends when the store is closed (the thread is a daemon)."""
        self._stop.set()
        self._set_warm(False)

    def _set_warm(self, warm: bool) -> None:
        with self._lock:
            self._warm = warm

    def _notify(self) -> None:
        for fn in self._listeners:
            try:
                fn()
            except Exception:  # a listener's bug must not stop the watch
                log.exception("topology listener failed")

    # --- watch (etcd) -----------------------------------------------------------------
    def _watch_loop(self) -> None:
        backoff = 0.1
        while not self._stop.is_set():
            try:
                revision = self._load()
                backoff = 0.1
                self._follow(revision)
            except ConflictError as exc:  # history compacted under the watch: read everything again
                log.info("reloading the topology: %s", exc)
                self._set_warm(False)
            except TopoipamError as exc:
                if self._stop.is_set():
                    return
                if self.connected.is_set() or self.warm:
                    log.warning("datastore unreachable, topology cache suspended: %s", exc)
                self._set_warm(False)
                self.connected.clear()
                self._stop.wait(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)

    def _load(self) -> int:
        """Read every warm resource at one revision; watching from revision + 1 then misses nothing."""
        revision = self.store.revision()
        values: dict[str, tuple[int, object]] = {}
        for prefix, kind in self._prefix_kind.items():
            for rec in self.store.list(prefix):
                values[rec.key] = (rec.revision, from_storage(kind, rec.value, rec.revision))
        node = self.store.get(self._node_key)
        if node is not None:
            values[node.key] = (node.revision, from_storage("Node", node.value, node.revision))
        was_connected = self.connected.is_set()
        with self._lock:
            self._values, self._warm = values, True
        self.connected.set()
        self.reloads += 1
        if not was_connected and self.reloads > 1:
            log.warning("datastore reachable again; topology reloaded at revision %d", revision)
        self._notify()  # anything may have changed while we were not watching
        return revision

    def _follow(self, revision: int) -> None:
        for ev in self.store.watch(ROOT, start_revision=revision + 1):
            if self._stop.is_set():
                return
            if self._apply(ev.key, ev.type, ev.value, ev.revision):
                self._notify()

    def _kind_of(self, key: str) -> str | None:
        if key == self._node_key:
            return "Node"
        for prefix, kind in self._prefix_kind.items():
            if key.startswith(prefix):
                return kind
        return None  # another node, or not a resource the agent keeps

    def _apply(self, key: str, kind_of_change: str, value: bytes, revision: int) -> bool:
        kind = self._kind_of(key)
        if kind is None:
            return False
        parsed = from_storage(kind, value, revision) if kind_of_change == "put" else None
        with self._lock:
            have = self._values.get(key)
            if have is not None and have[0] >= revision:
                return False  # already read at this revision or later (the initial list raced the watch)
            if parsed is None:
                self._values.pop(key, None)
            else:
                self._values[key] = (revision, parsed)
        return True

    # --- poll (SQLite, memory) --------------------------------------------------------
    def _poll_loop(self) -> None:
        seen = None
        while not self._stop.is_set():
            try:
                state = self._fingerprint()
                self.connected.set()
                if state != seen:
                    seen = state
                    self._notify()
            except TopoipamError as exc:
                if self.connected.is_set():
                    log.warning("datastore unreachable: %s", exc)
                self.connected.clear()
            self._stop.wait(self.poll_interval)

    def _fingerprint(self) -> tuple:
        recs: list[Record] = []
        for prefix in self._prefix_kind:
            recs += self.store.list(prefix)
        node = self.store.get(self._node_key)
        if node is not None:
            recs.append(node)
        return tuple((r.key, r.revision) for r in recs)
