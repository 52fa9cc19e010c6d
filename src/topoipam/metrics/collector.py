"""The scrape-time collector: one consistent read of the datastore, computed families kept ``max_age`` s.

A scrape that finds families younger than ``max_age`` seconds gets them as they are (the
cost of a cached scrape is rendering the text); an older cache is recomputed from a new
snapshot (``store.snapshot.read_snapshot``: one listing, so every family describes one
moment). Concurrent scrapes of a stale cache wait for one recomputation instead of each
reading the datastore. How fresh the answer is travels with it:
``topoipam_metrics_snapshot_age_seconds`` (seconds since the snapshot was read),
``..._revision`` (the highest record revision it holds) and ``..._duration_seconds``
(what reading and computing it took). When the datastore cannot be read, the last families
are served with ``topoipam_metrics_datastore_up`` 0 (and the age keeps growing), so a
dashboard shows both the outage and the last known state.
"""

from __future__ import annotations

import logging
import threading
import time

from prometheus_client.core import GaugeMetricFamily

from topoipam.errors import DatastoreUnavailableError
from topoipam.ipam.insights import World
from topoipam.metrics.families import compute
from topoipam.store.snapshot import read_snapshot

log = logging.getLogger("topoipam.metrics")

DEFAULT_MAX_AGE = 30.0  # seconds: with Prometheus' usual 15 s interval, one read of a large store serves two scrapes

SNAPSHOT_HELP = {
    "topoipam_metrics_snapshot_age_seconds": "Seconds since the datastore snapshot the other topoipam_ families "
                                             "come from was read (cached up to --max-age)",
    "topoipam_metrics_snapshot_revision": "Highest record revision in that snapshot",
    "topoipam_metrics_snapshot_records": "Records in that snapshot",
    "topoipam_metrics_snapshot_duration_seconds": "Seconds it took to read that snapshot and compute the families",
    "topoipam_metrics_datastore_up": "1 if the last attempt to read the datastore succeeded, else 0",
}


class StoreCollector:
    """A prometheus_client custom collector of the datastore families (see the module docstring)."""

    def __init__(self, store, labels: list[str], max_age: float = DEFAULT_MAX_AGE, clock=time.time) -> None:
        self.store, self.labels, self.max_age, self.clock = store, list(labels), max_age, clock
        self._lock = threading.Lock()
        self._families: list = []
        self._read_at: float | None = None  # monotonic time of the snapshot
        self._revision = self._records = 0
        self._duration = 0.0
        self._up = True
        self.computed = 0  # snapshots computed so far (the tests and the benchmark read it)

    def describe(self):
        return []  # names are not known before the first scrape; registering must not read the datastore

    def collect(self):
        with self._lock:
            if self._read_at is None or time.monotonic() - self._read_at >= self.max_age:
                self._refresh()
            families = list(self._families)
            age = time.monotonic() - self._read_at if self._read_at is not None else None
            stats = (age, self._revision, self._records, self._duration, 1 if self._up else 0)
        families += [GaugeMetricFamily(name, text, value=value)
                     for (name, text), value in zip(SNAPSHOT_HELP.items(), stats) if value is not None]
        return families

    def _refresh(self) -> None:
        started = time.monotonic()
        try:
            snap = read_snapshot(self.store)
        except DatastoreUnavailableError as exc:
            log.warning("metrics: cannot read the datastore: %s", exc.message)
            self._up = False
            return
        read_at = time.monotonic()
        now = self.clock()
        self._families = compute(World(snap, now), self.labels, now)
        self._read_at, self._revision, self._records = read_at, snap.revision, len(snap)
        self._duration = time.monotonic() - started
        self._up = True
        self.computed += 1
