"""The SQLite datastore: one file on one machine, shared by threads and processes.

URL: ``sqlite:///abs/path.db``, ``sqlite://relative/path.db`` or a plain path,
with options ``?synchronous=NORMAL|FULL|EXTRA`` (default NORMAL) and
``?timeout=SECONDS`` (default 10: how long a write waits for the file lock).

Layout: ``kv(key, value, revision)`` with ``key`` its primary key (a B-tree,
so prefix listing is an index range scan) and ``meta`` holding the one
store-wide revision counter. ``kv`` is an ordinary rowid table: a value of up
to about 4 KB (a block record, rewritten on every assignment) stays on its
table leaf page, where a WITHOUT ROWID table (an index B-tree, ~1 KB kept in
the leaf at 4 KiB pages) would move it to overflow pages that SQLite frees and
allocates again on every update (measured: 7.3 WAL frames per assignment
commit against 6.2, +20% on the datastore share of an assignment; a prefix
listing costs a table lookup per row instead, about 3x as long). Files
created before keep their WITHOUT ROWID table: the statements are the same. Every commit runs in one ``BEGIN IMMEDIATE`` transaction:
the write lock is taken first, then all conditions are read and checked, then
the counter is bumped once and the writes land. Taking the lock before reading
is what makes the compare-and-swap safe across processes; it also avoids
SQLite's deferred read-to-write upgrade, which fails with SQLITE_BUSY without
waiting. While a store is the file's only writer, reading the conditions and
bumping the counter is one statement (``_apply``: the counter is guessed, and
the guess checked under the lock).

Durability: WAL with synchronous=NORMAL survives a crash of any process but a
power cut may lose the last commits; ``synchronous=FULL`` fsyncs every commit.

This module is on the CNI plugin's hot path: standard library only, and an
open of an existing file costs a connect and one PRAGMA read.

Every sqlite3 and OS exception is turned into an ``errors`` class in one
place, ``_translate``; ``_guarded`` is the one loop that retries a busy file
(``commit`` tries once inline first, and goes there when that finds it busy).
A forked child opens its own connection (``_after_fork_in_child``). Fork only while no thread of the
parent is inside a transaction on the file: the child inherits SQLite's in-process lock table, and a
write lock held at the fork stays held for every connection of the child.
"""

from __future__ import annotations

import functools
import os
import time
from _thread import allocate_lock  # what threading.Lock is, without importing threading (~1 ms per CNI exec)

try:  # the C driver itself: the sqlite3 package adds only datetime adapters (importing datetime) we never use
    import _sqlite3 as sqlite3
except ImportError:  # pragma: no cover - a build whose driver lives elsewhere
    import sqlite3
from _weakrefset import WeakSet  # what weakref.WeakSet is, without weakref's further imports
from collections.abc import Callable, Iterable, Sequence

from topoipam.errors import (
    AlreadyExistsError,
    ConflictError,
    DatastoreMissingError,
    DatastoreUnavailableError,
    TopoipamError,
    ValidationError,
)
from topoipam.store.base import Check, Create, Delete, Op, Record, Store, Update, check_one_op_per_key

# Annotations name a result type ``T`` for the reader only: they are never evaluated
# (``from __future__ import annotations``), which spares the plugin importing ``typing``.

SCHEMA_VERSION = 1
SYNCHRONOUS_MODES = ("OFF", "NORMAL", "FULL", "EXTRA")
DEFAULT_TIMEOUT = 10.0
# SQLite's bound-parameter limit is 32766 since 3.32; stay far below it.
_MAX_PARAMS = 500
_monotonic = time.monotonic

_SCHEMA = """
CREATE TABLE IF NOT EXISTS kv (
    key TEXT PRIMARY KEY,
    value BLOB NOT NULL,
    revision INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (
    id INTEGER PRIMARY KEY CHECK (id = 0),
    revision INTEGER NOT NULL
);
INSERT OR IGNORE INTO meta (id, revision) VALUES (0, 0);
"""


def parse_url(url: str) -> tuple[str, str, float]:
    """``(path, synchronous, timeout)`` from an SQLite URL or a plain path."""
    rest = url[len("sqlite://"):] if url.startswith("sqlite://") else url
    path, _, query = rest.partition("?")
    if not path:
        raise ValidationError(f"datastore URL {url!r} names no file: use sqlite:///absolute/path.db")
    synchronous, timeout = "NORMAL", DEFAULT_TIMEOUT
    for item in filter(None, query.split("&")):
        name, _, value = item.partition("=")
        if name == "synchronous" and value.upper() in SYNCHRONOUS_MODES:
            synchronous = value.upper()
        elif name == "timeout" and _positive_float(value):
            timeout = float(value)
        else:
            raise ValidationError(
                f"datastore URL {url!r}: unsupported option {item!r} "
                f"(use synchronous={'|'.join(SYNCHRONOUS_MODES)} or timeout=SECONDS)"
            )
    return path, synchronous, timeout


def _positive_float(text: str) -> bool:
    try:
        return float(text) > 0
    except ValueError:
        return False


def prefix_upper(prefix: str) -> str | None:
    """The smallest string greater than every string starting with ``prefix`` (None: no bound).

    SQLite compares TEXT with memcmp on UTF-8, which orders like Python's code
    point comparison, so the bound is the prefix with its last character
    incremented (characters already at the maximum are dropped).
    """
    chars = list(prefix)
    while chars:
        last = ord(chars.pop())
        if last < 0x10FFFF:
            nxt = last + 1
            if 0xD800 <= nxt <= 0xDFFF:  # surrogates cannot be encoded in UTF-8
                nxt = 0xE000
            return "".join(chars) + chr(nxt)
    return None


def _is_busy(exc: BaseException) -> bool:
    if not isinstance(exc, sqlite3.OperationalError):
        return False
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
    text = str(exc)
    return "locked" in text or "busy" in text


def _translate(exc: BaseException, path: str) -> TopoipamError:
    """The one mapping from sqlite3/OS exceptions to the errors of ``topoipam.errors``."""
    if isinstance(exc, TopoipamError):
        return exc
    if _is_busy(exc):
        return DatastoreUnavailableError(
            f"SQLite datastore {path} is busy: another process held its write lock for too long ({exc})"
        )
    code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
    if code == sqlite3.SQLITE_FULL:  # the transaction was rolled back: nothing of it was written
        return DatastoreUnavailableError(f"SQLite datastore {path}: the disk is full, nothing was written "
                                         f"(free some space on its file system) ({exc})")
    if code == sqlite3.SQLITE_READONLY:
        return DatastoreUnavailableError(f"SQLite datastore {path} is read-only: the file or its directory "
                                         f"cannot be written, nothing was written ({exc})")
    if isinstance(exc, OSError):
        reason = exc.strerror or str(exc)
        where = exc.filename or path
        return DatastoreUnavailableError(f"cannot open SQLite datastore {path}: {reason}: {where}")
    if isinstance(exc, sqlite3.DatabaseError) and not isinstance(exc, sqlite3.OperationalError):
        return DatastoreUnavailableError(
            f"SQLite datastore {path} is not a usable database ({exc}); move it aside or point --datastore elsewhere"
        )
    return DatastoreUnavailableError(f"SQLite datastore {path} failed: {exc}")


class SqliteStore(Store):
    """One sqlite3 connection per store object, shared by threads under a lock."""

    def __init__(self, url: str, *, create_dirs: bool = False) -> None:
        self.url = url
        self.create_dirs = create_dirs  # make missing parent directories (the default datastore only)
        self.path, self.synchronous, self.timeout = parse_url(url)
        self._lock = allocate_lock()
        # None: open on next use (first use, after a fork, or closed). A forked child never uses its parent's
        # connection: _after_fork_in_child drops it there, so no call pays for an os.getpid() check.
        self._conn: sqlite3.Connection | None = None
        self._cursor: sqlite3.Cursor | None = None  # reused by commit: conn.execute makes a cursor per statement
        self._closed = False
        self._revision = -1  # the revision counter as this store last saw it (-1: unknown); see _apply
        _STORES.add(self)
        self._guarded(lambda conn: None)  # open now: a bad path fails here, not at first use

    # -- the contract ------------------------------------------------------

    def get(self, key: str) -> Record | None:
        row = self._guarded(lambda c: c.execute("SELECT value, revision FROM kv WHERE key = ?", (key,)).fetchone())
        return Record(key, row[0], row[1]) if row is not None else None

    def get_many(self, keys: Iterable[str]) -> dict[str, Record]:
        wanted = list(dict.fromkeys(keys))
        if not wanted:
            return {}
        return self._guarded(lambda c: self._select_keys(c, wanted))

    def list(self, prefix: str, *, start: str | None = None, limit: int | None = None) -> list[Record]:
        if limit is not None and limit <= 0:
            return []
        lower = max(prefix, start or prefix)
        upper = prefix_upper(prefix)
        sql = "SELECT key, value, revision FROM kv WHERE key >= ?"
        args: list[object] = [lower]
        if upper is not None:
            sql += " AND key < ?"
            args.append(upper)
        sql += " ORDER BY key LIMIT ?"
        args.append(-1 if limit is None else limit)
        rows = self._guarded(lambda c: c.execute(sql, args).fetchall())
        return [Record(k, v, r) for k, v, r in rows]

    def commit(self, ops: Sequence[Op]) -> int:
        if type(ops) is not list:
            ops = list(ops)
        check_one_op_per_key(ops)
        if not ops:
            return self._guarded(self._current_revision)
        # The common case inline, as few frames as possible: connection open, file not busy. Anything
        # else (first use, a forked child, a busy file, closed) goes through _guarded's loop.
        busy_since = None
        with self._lock:
            if self._conn is not None:
                busy_since = _monotonic()
                try:
                    return self._write(self._cursor, ops)
                except (sqlite3.Error, OSError) as exc:
                    self._raise_unless_busy(exc, busy_since + self.timeout - 0.001)
        return self._guarded(lambda c: self._write(self._cursor, ops), busy_since)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._conn is not None:
                conn, self._conn, self._cursor = self._conn, None, None
                try:
                    conn.close()
                except sqlite3.Error:
                    pass  # closing is best effort; the file stays consistent

    # -- queries -----------------------------------------------------------

    @staticmethod
    def _current_revision(conn: sqlite3.Connection) -> int:
        return conn.execute("SELECT revision FROM meta WHERE id = 0").fetchone()[0]

    @staticmethod
    def _select_keys(conn: sqlite3.Connection, keys: list[str]) -> dict[str, Record]:
        chunks = [keys[i:i + _MAX_PARAMS] for i in range(0, len(keys), _MAX_PARAMS)]
        found: dict[str, Record] = {}

        def read() -> None:
            for chunk in chunks:
                marks = ",".join("?" * len(chunk))
                for k, v, r in conn.execute(f"SELECT key, value, revision FROM kv WHERE key IN ({marks})", chunk):
                    found[k] = Record(k, v, r)

        if len(chunks) == 1 or conn.in_transaction:
            read()
        else:  # several queries: one read transaction so they see one snapshot
            SqliteStore._transaction(conn, read, "BEGIN")
        return found

    def _apply(self, cursor: sqlite3.Cursor, ops: list[Op]) -> int:
        """Apply ``ops`` inside the open write transaction; raise on the first failed condition.

        Each write carries its own condition (``... WHERE key = ? AND revision = ?`` and its row
        count; a Create's INSERT hits the primary key), so there is no separate read of the
        revisions. The counter is bumped before the writes because they need the new revision.
        The bump is guessed: ``_revision`` is the counter as this connection last saw it, and
        one statement moves it on only if it is still that and every Check holds (``_bump_sql``).
        If not (another connection committed since, or a Check failed), one statement reads the
        counter and every Check, the Checks are judged, then the counter is bumped. We hold the
        write lock (BEGIN IMMEDIATE), so nobody moves the counter between that read and our write.
        A failed condition rolls everything back (``_write``), the bump included. The error names
        the first op, in order, whose condition fails, as the contract says: if a Check fails,
        every op is judged in order before anything is written; else the first write that fails
        is that op (every Check held, and so did the writes before it).
        """
        execute = cursor.execute
        guess = self._revision
        revision = guess + 1
        params = [revision, guess]
        for op in ops:
            if type(op) is Check:
                params += (op.key, op.revision)
        checks = (len(params) - 2) >> 1
        if checks == len(ops):
            return self._read_checks(cursor, ops)
        if guess < 0 or execute(_bump_sql(checks), params).rowcount != 1:
            revision = self._read_checks(cursor, ops) + 1
            # (UPDATE ... RETURNING costs several times a plain UPDATE in this sqlite3 binding: measured)
            execute("UPDATE meta SET revision = ? WHERE id = 0", (revision,))
        for op in ops:
            kind = type(op)
            if kind is Update:
                if execute("UPDATE kv SET value = ?, revision = ? WHERE key = ? AND revision = ?",
                           (op.value, revision, op.key, op.revision)).rowcount != 1:
                    raise self._conflict(cursor, op)
            elif kind is Create:
                try:
                    execute("INSERT INTO kv (key, value, revision) VALUES (?, ?, ?)", (op.key, op.value, revision))
                except sqlite3.IntegrityError:
                    if self._revision_of(cursor, op.key) is None:
                        raise  # not the primary key: a real fault, mapped by _translate
                    raise AlreadyExistsError(f"key {op.key} already exists") from None
            elif kind is Delete:
                if execute("DELETE FROM kv WHERE key = ? AND revision = ?", (op.key, op.revision)).rowcount != 1:
                    raise self._conflict(cursor, op)
        return revision

    def _read_checks(self, cursor: sqlite3.Cursor, ops: list[Op]) -> int:
        """The revision counter, read with every Check's revision in one statement; raise if a Check fails."""
        checks = [op for op in ops if type(op) is Check]
        row = cursor.execute(_read_checks_sql(len(checks)), [c.key for c in checks]).fetchone()
        self._revision = row[0]  # whatever happens next, that is the counter now
        if any((found or 0) != c.revision for c, found in zip(checks, row[1:])):
            raise self._first_failure(cursor, ops)
        return row[0]

    def _first_failure(self, conn: sqlite3.Cursor, ops: list[Op]) -> TopoipamError:
        """The error of the first op whose condition fails, judged before anything is written."""
        for op in ops:
            found = self._revision_of(conn, op.key)
            if type(op) is Create:
                if found is not None:
                    return AlreadyExistsError(f"key {op.key} already exists")
            elif (found or 0) != op.revision:
                return self._conflict(conn, op)
        return ConflictError("a condition of the transaction failed")  # not reached: a Check failed

    @staticmethod
    def _revision_of(conn: sqlite3.Cursor, key: str) -> int | None:
        row = conn.execute("SELECT revision FROM kv WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def _conflict(self, conn: sqlite3.Cursor, op: Op) -> ConflictError:
        found = self._revision_of(conn, op.key) or 0
        return ConflictError(f"update conflict on key {op.key}: revision {op.revision} expected, found {found}")

    @staticmethod
    def _transaction(conn: sqlite3.Connection, work: Callable[[], T], begin: str = "BEGIN IMMEDIATE") -> T:
        conn.execute(begin)
        try:
            result = work()
            conn.execute("COMMIT")
            return result
        except BaseException:
            _rollback(conn)
            raise

    def _write(self, cursor: sqlite3.Cursor, ops: list[Op]) -> int:
        """One write transaction applying ``ops`` (``_transaction`` without its closures: the hot path)."""
        cursor.execute("BEGIN IMMEDIATE")
        try:
            revision = self._apply(cursor, ops)
            cursor.execute("COMMIT")
            self._revision = revision  # the next commit's guess
            return revision
        except BaseException:
            _rollback(cursor.connection)
            raise

    # -- connection, retry and error mapping --------------------------------

    def _guarded(self, work: Callable[[sqlite3.Connection], T], busy_since: float | None = None) -> T:
        """Run ``work`` on the connection under the lock; retry a busy file until the timeout.

        SQLite's busy handler already waits ``timeout`` for a lock, but some
        busy cases return at once (WAL recovery, a snapshot that went stale),
        so the whole operation is retried with jittered backoff within the
        same deadline. A retry that starts just before the deadline may still
        wait in SQLite's handler, so the worst case is about twice ``timeout``.
        Conditions that failed (ConflictError, ...) are never retried here:
        that is the caller's business (store/retry.py).
        ``busy_since``: when a first attempt (``commit``'s inline one) began
        that found the file busy; the deadline counts from then and the loop
        starts with a pause.
        """
        busy = busy_since is not None
        deadline = (busy_since if busy else _monotonic()) + self.timeout
        pause = 0.001
        while True:
            if busy:
                import random  # only when the file is busy: not on every plugin start

                time.sleep(pause * (0.5 + random.random()))
                pause = min(pause * 2, 0.1)
            try:
                with self._lock:
                    return work(self._connection())
            except (sqlite3.Error, OSError) as exc:
                self._raise_unless_busy(exc, deadline - pause)
            busy = True

    def _raise_unless_busy(self, exc: BaseException, deadline: float) -> None:
        """Raise ``exc`` mapped (``_translate``) unless it is a busy file and ``deadline`` is still ahead."""
        if not _is_busy(exc) or _monotonic() > deadline:
            raise _translate(exc, self.path) from None

    def _connection(self) -> sqlite3.Connection:
        """The open connection (opened on first use, and again in a forked child)."""
        if self._closed:
            raise DatastoreUnavailableError(f"SQLite datastore {self.path} is closed")
        if self._conn is None:
            self._conn = self._open()
            self._cursor = self._conn.cursor()
        return self._conn

    def _open(self) -> sqlite3.Connection:
        _create_private_file(self.path, self.create_dirs)
        conn = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None, check_same_thread=False)
        try:
            conn.execute(f"PRAGMA synchronous = {self.synchronous}")
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version != SCHEMA_VERSION:
                self._initialise(conn, version)
            return conn
        except BaseException:
            conn.close()
            raise

    def _initialise(self, conn: sqlite3.Connection, version: int) -> None:
        if version > SCHEMA_VERSION:
            raise DatastoreUnavailableError(
                f"SQLite datastore {self.path} has schema version {version}, newer than this topoipam "
                f"understands ({SCHEMA_VERSION}); upgrade topoipam"
            )
        # The journal mode is stored in the file: set once, outside any transaction.
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise DatastoreUnavailableError(
                f"SQLite datastore {self.path} cannot use write-ahead logging (journal mode {mode}); "
                "put it on a local file system"
            )

        def create() -> None:
            # Statement by statement: executescript() would COMMIT the open transaction.
            for statement in filter(str.strip, _SCHEMA.split(";")):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

        self._transaction(conn, create)


def _rollback(conn: sqlite3.Connection) -> None:
    if conn.in_transaction:
        try:
            conn.execute("ROLLBACK")
        except sqlite3.Error:
            pass  # SQLite already rolled back (e.g. after SQLITE_FULL); nothing to undo


_STORES: WeakSet = WeakSet()


def _after_fork_in_child() -> None:
    """In a forked child: every store opens its own connection on next use and has a free lock.

    SQLite must not use a connection across fork(), not even to close it (its
    locks belong to the parent): the parent's connections are kept referenced,
    never closed, never used. A lock some parent thread held at the fork would
    stay held for ever in the child: each store gets a new one.
    """
    for store in list(_STORES):
        store._lock = allocate_lock()
        if store._conn is not None:
            _INHERITED.append(store._conn)
            store._conn = store._cursor = None


_INHERITED: list[sqlite3.Connection] = []
os.register_at_fork(after_in_child=_after_fork_in_child)


@functools.lru_cache(maxsize=64)
def _bump_sql(checks: int) -> str:
    """Move the counter from the guess (2nd parameter) to the 1st if it is still the guess and ``checks`` keys,
    each with its expected revision (0: absent), hold; row count 1 if all was so."""
    return ("UPDATE meta SET revision = ? WHERE id = 0 AND revision = ?"
            + " AND coalesce((SELECT revision FROM kv WHERE key = ?), 0) = ?" * checks)


@functools.lru_cache(maxsize=64)
def _read_checks_sql(checks: int) -> str:
    """One statement reading the revision counter and ``checks`` keys' revisions (NULL: absent)."""
    return "SELECT (SELECT revision FROM meta WHERE id = 0)" + ", (SELECT revision FROM kv WHERE key = ?)" * checks


def _create_private_file(path: str, create_dirs: bool) -> None:
    """Create ``path`` (and, with ``create_dirs``, its directories) readable by the owner only, whatever the umask.

    SQLite gives the -wal and -shm files the mode of the database file, so
    they are private too.
    """
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        if not create_dirs:
            raise DatastoreMissingError(f"cannot open SQLite datastore {path}: directory {parent} does not exist")
        os.makedirs(parent, mode=0o700, exist_ok=True)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    try:
        os.fchmod(fd, 0o600)
    finally:
        os.close(fd)
