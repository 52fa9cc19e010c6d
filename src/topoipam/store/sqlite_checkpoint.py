"""The SQLite store's background checkpointer: WAL checkpoints off the committing thread.

Why: in WAL mode SQLite checkpoints inline, in the thread whose commit takes
the WAL past ``wal_autocheckpoint`` frames (1000): it fsyncs the WAL, copies
the pages into the database file and fsyncs that (with synchronous=NORMAL the
only fsyncs there are). An assignment commit writes ~4.6 frames, so every ~200
commits one of them took a few milliseconds; ~10 us per commit on average.

How: a store that keeps committing (``SqliteStore._tick``) starts one daemon
thread with its own connection, wakes it every 256 revisions it commits, and
raises its own connection's ``wal_autocheckpoint`` to
``WRITER_FRAMES``. The thread runs ``PRAGMA wal_checkpoint(PASSIVE)``, which
never waits for the writer nor blocks it (sqlite3 releases the GIL meanwhile).

Cadence, measured (``bench/store_bench.py --checkpoint``; tuning runs of raw
sqlite3 with a thread, 2-core VM on ext4):
- A WAL restarts (the next commit writes from its start, fsyncing the header:
  one small fsync on the writer's path) only once *every* frame is copied. A
  busy writer appends frames during each background checkpoint's fsyncs, so the
  background alone never gets there. The writer's own inline checkpoint at
  ``WRITER_FRAMES`` does: it finds all but the frames since the last
  background run copied already (a small fsync each for WAL and database), and
  the WAL restarts. So the WAL stays under ``WRITER_FRAMES`` frames plus one
  commit, ~16.5 MB at 4 KiB pages. When the writer pauses, the idle catch-up
  run (``IDLE_CATCH_UP`` seconds after the last wake) completes and the WAL
  restarts early. A reader holding an old snapshot can make it grow past that;
  ``journal_size_limit`` (twice the bound) trims the file at the next restart.
- Background runs every 64 revisions cost the writer more than every 256: each
  run is two fsyncs, whose journal commits the writer's appends then wait on.
- RESTART/TRUNCATE/FULL modes take the write lock (the writer would sleep in
  SQLite's busy handler, 1 ms steps), and a truncated WAL must be re-extended
  (a WAL growing on every commit costs ~5 us per commit): not used.

Durability is unchanged: the writer connection's ``synchronous`` is as before,
and the checkpointer's connection has the same, so its checkpoints fsync the WAL
before copying and the database before marking frames copied, exactly as the
inline ones do. A crash mid-checkpoint is SQLite's ordinary recovery (the WAL
still holds every frame not marked copied).

Never raises: a busy or locked checkpoint is retried at the next wake; any
other error ends the thread quietly (no output: CLI output is byte-compared),
and the writer's inline checkpoint at ``WRITER_FRAMES`` stays in charge.
"""

from __future__ import annotations

import sqlite3
import threading
from urllib.parse import quote

from topoipam.store.sqlite import _is_busy  # loaded: only SqliteStore imports this module, when it needs it

WRITER_FRAMES = 4000  # the writer's own (inline) wal_autocheckpoint while the thread runs
IDLE_CATCH_UP = 1.0  # seconds without a wake after which the thread checkpoints what came since
STOP_WAIT = 5.0  # how long close() waits for a checkpoint under way


def start(cursor: sqlite3.Cursor, synchronous: str) -> Checkpointer:
    """A new checkpointer for the writer connection of ``cursor``, whose inline checkpoint becomes the backstop."""
    path = next(row[2] for row in cursor.execute("PRAGMA database_list") if row[1] == "main")
    limit = 2 * WRITER_FRAMES * (cursor.execute("PRAGMA page_size").fetchone()[0] + 24)  # 24: a frame's header
    cursor.execute(f"PRAGMA wal_autocheckpoint = {WRITER_FRAMES}")
    cursor.execute(f"PRAGMA journal_size_limit = {limit}")
    return Checkpointer(path, synchronous)


class Checkpointer:
    """One daemon thread checkpointing the WAL of the database file ``path`` with its own connection."""

    def __init__(self, path: str, synchronous: str) -> None:
        self.path, self.synchronous = path, synchronous
        self.checkpoints = 0  # runs that completed on a non-empty WAL (for tests and benchmarks)
        self.conn: sqlite3.Connection | None = None  # kept referenced: never closed in a forked child
        self._wake = threading.Event()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="topoipam-sqlite-checkpoint", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def stop(self, timeout: float = STOP_WAIT) -> None:
        """Stop the thread (it closes its connection); waits up to ``timeout`` for a checkpoint under way."""
        self._stopping = True
        self._wake.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def _run(self) -> None:
        try:
            # mode=rw: never create a file (the store made it; if it is gone, there is nothing to checkpoint)
            self.conn = sqlite3.connect(f"file:{quote(self.path)}?mode=rw", uri=True, timeout=1.0,
                                        isolation_level=None, check_same_thread=False)
            self.conn.execute(f"PRAGMA synchronous = {self.synchronous}")
            self._loop(self.conn)
        except Exception:  # noqa: BLE001 - quietly: the writer's inline checkpoint is in charge
            pass
        finally:
            if self.conn is not None:
                try:
                    self.conn.close()
                except sqlite3.Error:
                    pass

    def _loop(self, conn: sqlite3.Connection) -> None:
        pending = False  # woken since the last idle catch-up: commits may follow the last checkpoint
        while True:
            woken = self._wake.wait(IDLE_CATCH_UP if pending else None)
            self._wake.clear()  # before the checkpoint: a wake during it asks for another
            if self._stopping:
                return
            pending = woken
            try:
                busy, log, _ = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            except sqlite3.OperationalError as exc:
                if _is_busy(exc):
                    continue  # e.g. another connection is recovering the WAL: next time
                raise
            if not busy and log > 0:
                self.checkpoints += 1
