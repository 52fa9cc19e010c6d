"""The etcd v3 datastore backend (``etcd://`` and ``etcds://``).

Talks gRPC to etcd with the generated v3 stubs of ``etcd-sdk-python``; the
channels, endpoint failover, authentication and error mapping are ours, because
the CAS contract needs control over what may be retried. grpc and the stubs are
imported when the first store is opened, never at module import. (Chosen over the
HTTP-gateway client etcd3gw: on one loopback etcd about 2.5x the CAS round trips
per second and ~40 ms less import time; see bench/etcd_bench.py.)

URL::

    etcd://[user:password@]host:port[,host:port...][?timeout=5&keepalive=30]
    etcds://host:port[,...]?ca=/ca.pem&cert=/client.pem&key=/client-key.pem

``config`` (a mapping with the same option names plus ``user`` and
``password``) overrides the URL's options; ``store/etcd_url.py`` parses both.
``.url`` never carries credentials.
``keepalive`` is the gRPC keepalive ping interval in seconds: a connection whose
peer stops answering pings (a member frozen or cut off without a RST) is
declared dead after that interval plus min(keepalive, 10) s, which ends a watch
on it with ``DatastoreUnavailableError`` instead of leaving it waiting forever.
(etcd answers pings more frequent than its ``--grpc-keepalive-min-time``, 5 s
by default, with a GOAWAY; keep ``keepalive`` above that in production.)

Large reads are paged (``store/etcd_pages.py``): ``list`` and ``get_many`` read
in requests of a bounded size, all pinned to the revision of the first, so the
result is one consistent snapshot however many pages it takes. If etcd compacts
that revision mid-way, the read starts again once from a fresh revision. The
channel's receive limit (``MAX_RECEIVE_BYTES``) is raised above gRPC's 4 MiB
default only as a second line of defence.

Revisions are etcd's ``mod_revision``. ``commit`` is one etcd Txn that compares
the ``mod_revision`` of every key (0 = absent, for Create) and then applies the
puts and deletes; its failure branch reads the keys back in the same Txn so the
error can name the first condition that failed without a second round trip.

Every gRPC exception passes through ``_map_rpc_error``: unreachable members,
lost quorum, timeouts, TLS and authentication failures all become
``DatastoreUnavailableError`` naming the endpoints and the reason. Every
request carries a deadline and the ``hasleader`` metadata, so a member that
has lost its leader answers at once instead of letting a CNI caller hang.

Failover and retries: reads move to the next endpoint on any unavailability.
A write moves on only when it provably did not reach a member that could apply
it (connection failed, or the member refused it for having no leader), as
etcd's own Go client does; after a timeout or a dropped connection its outcome
is unknown and the caller gets ``DatastoreUnavailableError`` saying so (a blind
resend of a CAS could report a conflict against its own write).
"""

from __future__ import annotations

import os
import threading
import time
from topoipam.structs import dataclass
from typing import Any, Iterator, Mapping, Sequence

from topoipam.errors import (
    AlreadyExistsError,
    ConflictError,
    DatastoreUnavailableError,
    TopoipamError,
    ValidationError,
)
from topoipam.store.base import Create, Delete, Op, Record, Store, Update, check_one_op_per_key
from topoipam.store.etcd_pages import MAX_TXN_OPS, Compacted, TooLarge, prefix_end, range_pages, read_keys
from topoipam.store.etcd_url import EtcdOptions, parse_url  # noqa: F401 - parse_url is part of this API

MAX_RECEIVE_BYTES = 64 << 20  # the channel's receive limit; paging keeps responses far below it

# A member with no leader rejects requests carrying this metadata at once (etcd's
# rpctypes.MetadataRequireLeaderKey) instead of waiting for an election.
_REQUIRE_LEADER = ("hasleader", "true")


@dataclass(frozen=True, slots=True)
class WatchEvent:
    """One change seen by ``EtcdStore.watch``: ``type`` is ``"put"`` or ``"delete"``.

    ``revision`` is the store revision of the change; for a delete ``value`` is empty.
    """

    type: str
    key: str
    value: bytes
    revision: int


def _read_file(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise ValidationError(f"etcd datastore: cannot read the {what} file {path}: {e.strerror}") from None


class _Outcome(Exception):
    """Internal: an RPC failed; ``retry_write`` says whether a write may go to the next endpoint."""

    def __init__(self, error: TopoipamError, retry_read: bool, retry_write: bool, reauth: bool = False):
        super().__init__(error.message)
        self.error, self.retry_read, self.retry_write, self.reauth = error, retry_read, retry_write, reauth


def _unavailable(where: str, reason: str, read: bool, write: bool, reauth: bool = False) -> _Outcome:
    later = "; try again later" if read else ""  # configuration problems do not heal by waiting
    return _Outcome(DatastoreUnavailableError(f"{where}: {reason}{later}", details=reason), read, write, reauth)


class EtcdStore(Store):
    def __init__(
        self, url: str, config: Mapping[str, Any] | None = None, *, max_receive_bytes: int = MAX_RECEIVE_BYTES
    ) -> None:
        self._opts = parse_url(url, config)
        self._max_receive = max_receive_bytes
        self.url = self._opts.public_url
        # gRPC's C core logs connection errors to stderr by itself; ours are raised as errors instead.
        os.environ.setdefault("GRPC_VERBOSITY", "NONE")
        from topoipam.extras import require

        grpc = require("grpc", "etcd", "the etcd datastore")  # heavy: only when an etcd store is opened
        etcdrpc = require("pyetcd.etcdrpc", "etcd", "the etcd datastore")

        self._grpc, self._pb = grpc, etcdrpc
        self._creds = None
        if self._opts.tls:
            self._creds = grpc.ssl_channel_credentials(
                _read_file(self._opts.ca, "ca") if self._opts.ca else None,
                _read_file(self._opts.key, "key") if self._opts.key else None,
                _read_file(self._opts.cert, "cert") if self._opts.cert else None,
            )
        self._lock = threading.Lock()
        self._channels: dict[str, Any] = {}
        self._stubs: dict[tuple[str, str], tuple] = {}  # (endpoint, service) -> (channel, stub)
        self._current = 0
        self._token: str | None = None
        self._closed = False

    # --- contract --------------------------------------------------------------------
    def get(self, key: str) -> Record | None:
        resp = self._call("KV", "Range", self._pb.RangeRequest(key=key.encode()), write=False)
        return self._record(resp.kvs[0]) if resp.kvs else None

    def list(self, prefix: str, *, start: str | None = None, limit: int | None = None) -> list[Record]:
        try:
            return [r for page in self.pages(prefix, start=start, limit=limit) for r in page]
        except Compacted:  # compacted mid-listing: once more from a fresh revision
            return [r for page in self.pages(prefix, start=start, limit=limit) for r in page]

    def pages(self, prefix: str, *, start: str | None = None, limit: int | None = None) -> Iterator[list[Record]]:
        """``list``, one bounded page at a time; every page is read at the revision of the first.

        Raises ``ConflictError`` if etcd compacts that revision before the last page
        is read (``list`` then starts again once).
        """
        for kvs in range_pages(self._read, self._pb, prefix, start, limit):
            yield [self._record(kv) for kv in kvs]

    def get_many(self, keys) -> dict[str, Record]:
        keys = list(dict.fromkeys(keys))
        try:
            return self._get_many(keys)
        except Compacted:
            return self._get_many(keys)

    def _get_many(self, keys: list[str]) -> dict[str, Record]:
        return {rec.key: rec for rec in map(self._record, read_keys(self._read, self._pb, keys))}

    def commit(self, ops: Sequence[Op]) -> int:
        pb = self._pb
        check_one_op_per_key(ops)
        compare, success, failure = [], [], []
        for op in ops:
            key = op.key.encode()
            rev = 0 if isinstance(op, Create) else op.revision
            compare.append(pb.Compare(key=key, result=pb.Compare.EQUAL, target=pb.Compare.MOD, mod_revision=rev))
            if isinstance(op, (Create, Update)):
                success.append(pb.RequestOp(request_put=pb.PutRequest(key=key, value=op.value)))
            elif isinstance(op, Delete):
                success.append(pb.RequestOp(request_delete_range=pb.DeleteRangeRequest(key=key)))
            # The failure branch reads every key back, so the error names the culprit.
            failure.append(pb.RequestOp(request_range=pb.RangeRequest(key=key, keys_only=True)))
        req = pb.TxnRequest(compare=compare, success=success, failure=failure)
        resp = self._call("KV", "Txn", req, write=bool(success))
        if resp.succeeded:
            return resp.header.revision
        current = {}
        for r in resp.responses:
            for kv in r.response_range.kvs:
                current[kv.key.decode()] = kv.mod_revision
        for op in ops:
            have = current.get(op.key, 0)
            if isinstance(op, Create):
                if have:
                    raise AlreadyExistsError(f"key {op.key} already exists")
            elif have != op.revision:
                raise ConflictError(f"update conflict on key {op.key}: revision {op.revision} expected, found {have}")
        raise ConflictError("transaction conditions failed, but every key matched when read back")  # not reached

    def watch(self, prefix: str, start_revision: int | None = None) -> Iterator[WatchEvent]:
        """Yield every change under ``prefix`` from ``start_revision`` (default: changes after now), forever.

        Close the generator to stop. Raises ``DatastoreUnavailableError`` when the
        stream breaks (resume from the last revision seen + 1) and ``ConflictError``
        when ``start_revision`` has been compacted away (list again, then watch
        from the list's revision + 1).
        """
        stream, stop, endpoint = self._open_watch(prefix, start_revision)
        try:
            for resp in stream:
                yield from self._watch_events(resp, prefix, start_revision, endpoint)
            raise DatastoreUnavailableError(f"etcd watch on {prefix} ended by the server ({endpoint})")
        except self._grpc.RpcError as exc:
            raise self._watch_broken(exc, prefix, endpoint) from None
        finally:
            stop.set()
            stream.cancel()

    def _open_watch(self, prefix: str, start_revision: int | None):
        """Start a watch stream on the current endpoint: (stream, event that ends it, endpoint)."""
        pb = self._pb
        if self._opts.user and self._token is None:
            self.revision()  # authenticates through the normal path; the stream needs the token
        create = pb.WatchCreateRequest(
            key=prefix.encode() or b"\0", range_end=prefix_end(prefix.encode()), start_revision=start_revision or 0
        )
        stop = threading.Event()

        def requests():
            yield pb.WatchRequest(create_request=create)
            stop.wait()  # etcd ends the watch when the client half-closes, so hold the stream open

        endpoint = self._endpoint_name()
        try:
            stream = self._stub(endpoint, "Watch").Watch(requests(), metadata=self._metadata())
        except self._grpc.RpcError as exc:
            raise self._map_rpc_error(exc, endpoint).error from None
        return stream, stop, endpoint

    @staticmethod
    def _watch_events(resp, prefix: str, start_revision: int | None, endpoint: str) -> Iterator[WatchEvent]:
        """The events of one watch response, or the error a compacted or cancelled watch ends with."""
        if resp.compact_revision:
            raise ConflictError(
                f"cannot watch {prefix} from revision {start_revision}: etcd compacted history up to"
                f" revision {resp.compact_revision}; list again and watch from there"
            )
        if resp.canceled:  # e.g. the member lost its leader
            raise DatastoreUnavailableError(
                f"etcd at {endpoint} cancelled the watch on {prefix}: {resp.cancel_reason or 'no reason given'}"
                "; watch again from the last revision seen + 1"
            )
        for ev in resp.events:
            kind = "delete" if ev.type == type(ev).DELETE else "put"
            yield WatchEvent(kind, ev.kv.key.decode(), bytes(ev.kv.value), ev.kv.mod_revision)

    def _watch_broken(self, exc, prefix: str, endpoint: str) -> TopoipamError:
        """The error a watch stream's gRPC failure ends the watch with."""
        err = self._map_rpc_error(exc, endpoint).error
        if not isinstance(err, DatastoreUnavailableError):
            return err
        # A frozen or cut-off member is found by the channel's keepalive pings and lands here too.
        reason = exc.details() if hasattr(exc, "details") else str(exc)
        return DatastoreUnavailableError(
            f"etcd watch on {prefix} at {endpoint} broke ({reason}); watch again from the last revision seen + 1",
            details=err.details or err.message,
        )

    def revision(self) -> int:
        """The current store revision (a watch from ``revision() + 1`` sees every later change)."""
        resp = self._call("KV", "Range", self._pb.RangeRequest(key=b"\0", limit=1, count_only=True), write=False)
        return resp.header.revision

    def close(self) -> None:
        with self._lock:
            self._closed = True
            channels, self._channels, self._stubs = list(self._channels.values()), {}, {}
        for ch in channels:
            ch.close()

    # --- plumbing --------------------------------------------------------------------
    def _read(self, method: str, request):
        return self._call("KV", method, request, write=False)

    @staticmethod
    def _record(kv) -> Record:
        return Record(kv.key.decode(), bytes(kv.value), kv.mod_revision)

    def _endpoint_name(self) -> str:
        with self._lock:
            return self._opts.endpoints[self._current % len(self._opts.endpoints)]

    def _channel(self, endpoint: str):
        with self._lock:
            if self._closed:
                raise DatastoreUnavailableError(f"etcd datastore {self.url} is closed")
            ch = self._channels.get(endpoint)
            if ch is None:
                # Short reconnect backoff: a restarted member is used again within a second.
                # Keepalive pings, also on a stream that carries no data (a quiet watch), detect
                # a peer that vanished without a RST. Not on an idle connection: etcd's server
                # policy (PermitWithoutStream=false) counts those pings as abuse and closes the
                # connection with GOAWAY too_many_pings after three; an idle channel's next
                # request has its own deadline and failover anyway.
                keepalive = self._opts.keepalive
                options = [
                    ("grpc.initial_reconnect_backoff_ms", 100),
                    ("grpc.min_reconnect_backoff_ms", 100),
                    ("grpc.max_reconnect_backoff_ms", 1000),
                    ("grpc.max_receive_message_length", self._max_receive),
                    ("grpc.keepalive_time_ms", int(keepalive * 1000)),
                    ("grpc.keepalive_timeout_ms", int(min(keepalive, 10.0) * 1000)),
                    ("grpc.http2.ping_timeout_ms", int(min(keepalive, 10.0) * 1000)),
                    ("grpc.keepalive_permit_without_calls", 0),
                    ("grpc.http2.max_pings_without_data", 0),
                ]
                if self._creds is not None:
                    ch = self._grpc.secure_channel(endpoint, self._creds, options=options)
                else:
                    ch = self._grpc.insecure_channel(endpoint, options=options)
                self._channels[endpoint] = ch
            return ch

    def _stub(self, endpoint: str, service: str):
        # Kept per channel: building a stub makes a callable per RPC method (~0.15 ms of CPU),
        # which was a fifth of the agent's own time per steady-state ADD. Stubs are thread-safe.
        channel = self._channel(endpoint)
        kept = self._stubs.get((endpoint, service))
        if kept is None or kept[0] is not channel:
            kept = self._stubs[(endpoint, service)] = (channel, getattr(self._pb, f"{service}Stub")(channel))
        return kept[1]

    def _metadata(self) -> tuple:
        return (_REQUIRE_LEADER, ("token", self._token)) if self._token else (_REQUIRE_LEADER,)

    def _call(self, service: str, method: str, request, *, write: bool):
        """Send one request, failing over across endpoints within the store's timeout."""
        deadline = time.monotonic() + self._opts.timeout
        n = len(self._opts.endpoints)
        reasons: list[str] = []
        reauthed = False
        attempt = 0
        while True:
            endpoint = self._endpoint_name()
            remaining = deadline - time.monotonic()
            try:
                if self._opts.user and self._token is None:
                    self._authenticate(endpoint, remaining)
                    remaining = deadline - time.monotonic()
                # With several endpoints an attempt gets half of what is left, so one black-holed
                # member cannot eat the whole budget before the others are tried.
                budget = remaining if n == 1 else remaining / 2
                fn = getattr(self._stub(endpoint, service), method)
                return fn(request, timeout=max(budget, 0.05), metadata=self._metadata())
            except self._grpc.RpcError as exc:
                outcome = self._map_rpc_error(exc, endpoint)
            except _Outcome as raised:
                outcome = raised
            if outcome.reauth and not reauthed:
                self._token, reauthed = None, True
                continue
            reasons.append(f"{endpoint}: {outcome.error.details or outcome.error.message}")
            attempt += 1
            may_retry = outcome.retry_write if write else outcome.retry_read
            if not may_retry:
                raise outcome.error
            with self._lock:
                self._current += 1
            if time.monotonic() >= deadline or attempt >= 2 * n:
                raise DatastoreUnavailableError(
                    f"etcd datastore unavailable: no member of {', '.join(self._opts.endpoints)} answered"
                    f" within {self._opts.timeout:g}s ({'; '.join(reasons[-n:])}); try again later",
                    details="; ".join(reasons),
                )
            if attempt >= n:
                time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))  # every member refused: let an election run

    def _authenticate(self, endpoint: str, remaining: float) -> None:
        req = self._pb.AuthenticateRequest(name=self._opts.user, password=self._opts.password or "")
        try:
            resp = self._stub(endpoint, "Auth").Authenticate(req, timeout=max(remaining, 0.05))
        except self._grpc.RpcError as exc:
            if "authentication is not enabled" in (exc.details() or ""):
                self._token = ""  # the cluster does not check credentials; send none
                return
            raise self._map_rpc_error(exc, endpoint) from None
        self._token = resp.token

    def _map_rpc_error(self, exc, endpoint: str) -> _Outcome:
        """The one place where gRPC and etcd errors become topoipam errors (checked in this order)."""
        code = exc.code() if hasattr(exc, "code") else None
        details = (exc.details() if hasattr(exc, "details") else None) or str(exc)
        where = f"etcd at {endpoint}"
        outcome = (self._access_outcome(code, details, where) or self._connection_outcome(code, details, where)
                   or self._refusal_outcome(code, details, where))
        if outcome is not None:
            return outcome
        sc = self._grpc.StatusCode
        if code == sc.RESOURCE_EXHAUSTED:
            return _unavailable(where, f"busy: {details}", True, False)
        if code == sc.CANCELLED:
            return _unavailable(where, f"request cancelled: {details}", True, False)
        return _unavailable(where, f"request failed ({code.name if code else 'error'}): {details}", False, False)

    def _access_outcome(self, code, details: str, where: str) -> _Outcome | None:
        """TLS and authentication failures (an expired token: authenticate again and resend)."""
        low = details.lower()
        if any(s in low for s in ("ssl", "handshake", "certificate", "tls", "tsi_")):
            return _unavailable(
                where,
                f"TLS failed: the member's certificate is not signed by the given ca, or the member refused"
                f" the client certificate ({details}); check the ca, cert and key options",
                True, True,
            )
        if "invalid auth token" in low or "auth: revision in header is old" in low:
            return _unavailable(where, "authentication token expired", True, True, reauth=True)
        if "authentication failed" in low or "invalid user id or password" in low:
            return _unavailable(where, f"authentication failed for user {self._opts.user!r}: {details}", False, False)
        if code == self._grpc.StatusCode.PERMISSION_DENIED or "user name is empty" in low or "permission denied" in low:
            who = f"user {self._opts.user!r}" if self._opts.user else "no user (the cluster requires authentication)"
            return _unavailable(where, f"permission denied for {who}: {details}", False, False)
        return None

    def _connection_outcome(self, code, details: str, where: str) -> _Outcome | None:
        """Unreachable, leaderless or timed-out members: whether a write may be resent elsewhere."""
        low = details.lower()
        sc = self._grpc.StatusCode
        if code == sc.UNAVAILABLE:
            # Nothing reached a member that could apply it: safe to resend a write elsewhere.
            not_sent = "failed to connect" in low or "no leader" in low or "connection refused" in low
            if "no leader" in low:
                return _unavailable(where, "no leader (the cluster has lost quorum or is electing)", True, True)
            if not_sent:
                hint = " (if the member serves TLS, use etcds://)" if "socket closed" in low and not self._opts.tls else ""
                return _unavailable(where, f"unreachable: {details}{hint}", True, True)
            return _unavailable(
                where,
                f"connection lost mid-request ({details}; a write's outcome is unknown, read before retrying)",
                True, False,
            )
        if code == sc.DEADLINE_EXCEEDED or "context deadline exceeded" in low:
            return _unavailable(
                where,
                f"timed out after {self._opts.timeout:g}s (a write's outcome is unknown; read before retrying)",
                True, False,
            )
        return None

    def _refusal_outcome(self, code, details: str, where: str) -> _Outcome | None:
        """Requests etcd refused as such (nothing was written): none is retried as it is."""
        low = details.lower()
        sc = self._grpc.StatusCode
        if "too many operations in txn request" in low:
            err = ValidationError(
                f"{where} refused a transaction with more operations than its --max-txn-ops allows"
                f" (etcd's default is {MAX_TXN_OPS}); split the change or raise that limit"
            )
            return _Outcome(err, False, False)
        if code == sc.INVALID_ARGUMENT:  # empty key, request too large, ...: nothing was written
            return _Outcome(ValidationError(f"{where} refused the request: {details}"), False, False)
        if code == sc.RESOURCE_EXHAUSTED and "larger than max" in low:
            err = TooLarge(f"{where}: a response exceeded the receive limit of {self._max_receive} bytes ({details})")
            return _Outcome(err, False, False)
        if "required revision has been compacted" in low:
            return _Outcome(Compacted(f"{where}: the revision being read was compacted away ({details})"), False, False)
        return None
