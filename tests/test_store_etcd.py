"""The etcd backend beyond the shared contract (which runs on etcd through the ``store`` fixture):
URL handling, lazy import, TLS, user/password auth, unreachable endpoints, etcd's transaction
size limit, watch, and a three-member cluster losing its leader, its quorum, and a member that
comes back; paged listings of more than gRPC's 4 MiB message limit and a watch on a frozen member.
Every etcd here is a real process on loopback, stopped by pid in fixture teardown.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time

import pytest

from etcd_cluster import HAVE_ETCD, SKIP_REASON, EtcdCluster, free_port, make_tls
from topoipam.errors import AlreadyExistsError, ConflictError, DatastoreUnavailableError, ValidationError
from topoipam.store import Create, open_store
from topoipam.store.etcd import EtcdStore, parse_url

needs_etcd = pytest.mark.skipif(not HAVE_ETCD, reason=SKIP_REASON)


def finishes(fn, within: float):
    """Run ``fn`` in a thread; return ("ok", value) or ("error", exc), or fail if it hangs past ``within`` s.

    A hang guard, generous on purpose: the assertions are about what happened, not how fast.
    """
    box: list = []

    def run():
        try:
            box.append(("ok", fn()))
        except BaseException as e:  # noqa: BLE001 - handed to the test
            box.append(("error", e))

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(within)
    assert box, f"call still running after {within}s: it hangs instead of failing"
    return box[0]


# -- URL ------------------------------------------------------------------------------


def test_url_strips_credentials_and_keeps_endpoints():
    opts = parse_url("etcd://alice:s%3Acret@10.0.0.1:2379,10.0.0.2,[::1]:2380?timeout=2")
    assert opts.endpoints == ("10.0.0.1:2379", "10.0.0.2:2379", "[::1]:2380")
    assert (opts.user, opts.password, opts.timeout) == ("alice", "s:cret", 2.0)
    assert "alice" not in opts.public_url and "cret" not in opts.public_url
    assert opts.public_url == "etcd://10.0.0.1:2379,10.0.0.2:2379,[::1]:2380?timeout=2"


def test_config_mapping_overrides_url_options():
    opts = parse_url("etcds://h:1", {"ca": "/ca.pem", "cert": "/c.pem", "key": "/k.pem", "user": "u", "password": "p"})
    assert (opts.tls, opts.ca, opts.cert, opts.key, opts.user) == (True, "/ca.pem", "/c.pem", "/k.pem", "u")
    assert "p" not in opts.public_url.split("?")[0].replace("etcds", "")


@pytest.mark.parametrize(
    "url, words",
    [
        ("etcd://h:1?ca=/x", "etcds://"),
        ("etcds://h:1?cert=/x", "both cert and key"),
        ("etcd://h:1?colour=red", "colour"),
        ("etcd://h:notaport", "h:notaport"),
        ("etcd://h:1?timeout=soon", "soon"),
        ("etcd://h:1?keepalive=0", "keepalive must be positive"),
        ("etcd://bob@h:1", "without a password"),
        ("etcd://", "names no host"),
    ],
)
def test_bad_urls_are_rejected_with_the_reason(url, words):
    with pytest.raises(ValidationError, match=words):
        parse_url(url)


def test_keepalive_option_is_kept_in_the_public_url():
    opts = parse_url("etcd://u:p@h:1?keepalive=2.5")
    assert opts.keepalive == 2.5 and opts.public_url == "etcd://h:1?keepalive=2.5"
    assert parse_url("etcd://h:1").keepalive == 30.0


def test_unreadable_ca_file_is_a_validation_error(tmp_path):
    with pytest.raises(ValidationError, match="ca file"):
        EtcdStore(f"etcds://127.0.0.1:1?ca={tmp_path}/missing.pem")


def test_importing_the_store_package_loads_no_grpc():
    code = "import sys, topoipam.store, topoipam.store.etcd; print('grpc' in sys.modules, 'pyetcd' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


# -- unreachable ------------------------------------------------------------------------


def test_unreachable_endpoint_is_unavailable_not_a_hang():
    port = free_port()  # nothing listens there
    store = open_store(f"etcd://127.0.0.1:{port}?timeout=1")
    try:
        kind, err = finishes(lambda: store.create("/k", b"v"), within=15)
        assert kind == "error" and isinstance(err, DatastoreUnavailableError), err
        assert f"127.0.0.1:{port}" in str(err) and "try again later" in str(err)
        kind, err = finishes(lambda: store.get("/k"), within=15)
        assert isinstance(err, DatastoreUnavailableError)
    finally:
        store.close()


@needs_etcd
def test_a_dead_endpoint_in_the_list_is_skipped(etcd_server):
    etcd_server.wipe()
    url = f"etcd://127.0.0.1:{free_port()},{etcd_server.endpoints()}"
    with open_store(url) as store:
        for i in range(3):  # whichever endpoint it starts on, every call lands
            rev = store.create(f"/dead-first/{i}", b"x")
            assert store.get(f"/dead-first/{i}").revision == rev


# -- watch ------------------------------------------------------------------------------


@needs_etcd
def test_watch_replays_changes_from_a_revision_in_order(etcd_server):
    etcd_server.wipe()
    with EtcdStore(etcd_server.url()) as store:
        start = store.revision() + 1
        r1 = store.create("/w/a", b"1")
        r2 = store.update("/w/a", b"2", r1)
        store.create("/other/x", b"-")
        store.delete("/w/a", r2)
        r4 = store.create("/w/b", b"3")
        events = store.watch("/w/", start)
        seen = [next(events) for _ in range(4)]
        events.close()
    assert [(e.type, e.key, e.value) for e in seen] == [
        ("put", "/w/a", b"1"), ("put", "/w/a", b"2"), ("delete", "/w/a", b""), ("put", "/w/b", b"3"),
    ]
    assert seen[0].revision == r1 and seen[1].revision == r2 and seen[3].revision == r4
    assert seen[2].revision < r4


@needs_etcd
def test_watch_from_a_compacted_revision_says_list_again(etcd_server):
    etcd_server.wipe()
    with EtcdStore(etcd_server.url()) as store:
        r1 = store.create("/wc/a", b"1")
        r2 = store.update("/wc/a", b"2", r1)
        etcd_server.compact(r2)
        events = store.watch("/wc/", r1)
        with pytest.raises(ConflictError, match="compacted"):
            next(events)


def test_watch_reports_a_dead_member_as_unavailable(tmp_path):
    if not HAVE_ETCD:
        pytest.skip(SKIP_REASON)
    with EtcdCluster(tmp_path) as cluster, EtcdStore(cluster.url()) as store:
        events = store.watch("/wd/", store.revision() + 1)
        store.create("/wd/a", b"1")
        assert next(events).key == "/wd/a"
        cluster.kill(0)
        kind, err = finishes(lambda: next(events), within=30)
        assert kind == "error" and isinstance(err, DatastoreUnavailableError), err
        assert cluster.endpoints() in str(err)


def test_an_empty_key_is_refused_as_invalid(etcd_server):
    with EtcdStore(etcd_server.url()) as store:
        with pytest.raises(ValidationError, match="key is not provided"):
            store.create("", b"v")


_INCREMENTER = """
import sys
from topoipam.errors import ConflictError
from topoipam.store import open_store
store = open_store(sys.argv[1])
done = 0
while done < int(sys.argv[2]):
    rec = store.get("/race/n")
    try:
        store.update("/race/n", str(int(rec.value) + 1).encode(), rec.revision)
        done += 1
    except ConflictError:
        pass
store.close()
"""


@needs_etcd
def test_processes_racing_on_one_key_lose_no_increment(etcd_server):
    etcd_server.wipe()
    url = etcd_server.url()
    with open_store(url) as store:
        store.create("/race/n", b"0")
        procs = []
        try:  # started inside the try: a failed start still stops the ones already running
            for _ in range(4):
                procs.append(subprocess.Popen([sys.executable, "-c", _INCREMENTER, url, "25"]))
            codes = [p.wait(timeout=120) for p in procs]
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()
        assert codes == [0, 0, 0, 0]
        assert store.get("/race/n").value == b"100"


# -- TLS --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_etcd(tmp_path_factory):
    if not HAVE_ETCD:
        pytest.skip(SKIP_REASON)
    base = tmp_path_factory.mktemp("etcd-tls")
    tls = make_tls(base / "pki")
    with EtcdCluster(base, tls=tls) as cluster:
        yield cluster


def test_tls_with_the_right_client_certificate_works(tls_etcd):
    with open_store(tls_etcd.url()) as store:
        assert store.url.startswith("etcds://127.0.0.1:")
        rev = store.create("/tls/k", b"v")
        assert store.get("/tls/k").revision == rev


@pytest.mark.parametrize("variant", ["no client cert", "client cert from another CA", "server CA unknown"])
def test_tls_fails_clearly_without_the_right_certificates(tls_etcd, variant):
    t = tls_etcd.tls
    query = {
        "no client cert": f"ca={t.ca}",
        "client cert from another CA": f"ca={t.ca}&cert={t.other_cert}&key={t.other_key}",
        "server CA unknown": f"ca={t.other_ca}&cert={t.client_cert}&key={t.client_key}",
    }[variant]
    with open_store(f"etcds://{tls_etcd.endpoints()}?{query}&timeout=2") as store:
        kind, err = finishes(lambda: store.get("/tls/k"), within=20)
    assert kind == "error" and isinstance(err, DatastoreUnavailableError), err
    assert tls_etcd.endpoints() in str(err)
    assert "TLS failed" in str(err) and "check the ca, cert and key options" in str(err)


def test_plain_etcd_url_against_a_tls_member_is_unavailable(tls_etcd):
    with open_store(f"etcd://{tls_etcd.endpoints()}?timeout=1") as store:
        kind, err = finishes(lambda: store.get("/tls/k"), within=15)
    assert isinstance(err, DatastoreUnavailableError), err


# -- auth and etcd's default transaction limit -------------------------------------------


@pytest.fixture(scope="module")
def auth_etcd(tmp_path_factory):
    if not HAVE_ETCD:
        pytest.skip(SKIP_REASON)
    # Tokens live one second here, so a test can see the store authenticate again.
    cluster = EtcdCluster(tmp_path_factory.mktemp("etcd-auth"), max_txn_ops=128, extra_args=("--auth-token-ttl=1",))
    with cluster:
        cluster.enable_auth("ipam", "pa55word")
        yield cluster


def test_user_and_password_authenticate_and_stay_out_of_the_url(auth_etcd):
    with open_store(f"etcd://ipam:pa55word@{auth_etcd.endpoints()}") as store:
        assert "pa55word" not in store.url and "ipam" not in store.url
        rev = store.create("/auth/k", b"v")
        assert store.get("/auth/k").revision == rev


def test_an_expired_auth_token_is_renewed_transparently(auth_etcd):
    with open_store(f"etcd://ipam:pa55word@{auth_etcd.endpoints()}") as store:
        rev = store.create("/auth/ttl", b"v")
        time.sleep(3)  # the token (TTL 1 s) expires on the server
        assert store.update("/auth/ttl", b"w", rev) > rev
        assert store.get("/auth/ttl").value == b"w"


def test_wrong_password_says_authentication_failed(auth_etcd):
    with open_store(f"etcd://ipam:wrong@{auth_etcd.endpoints()}?timeout=2") as store:
        with pytest.raises(DatastoreUnavailableError, match="authentication failed for user 'ipam'"):
            store.get("/auth/k")


def test_no_credentials_on_an_auth_cluster_is_refused_clearly(auth_etcd):
    with open_store(f"etcd://{auth_etcd.endpoints()}?timeout=2") as store:
        with pytest.raises(DatastoreUnavailableError, match="requires authentication"):
            store.create("/auth/anon", b"v")


def test_a_transaction_over_etcds_limit_is_a_validation_error_and_writes_nothing(auth_etcd):
    with open_store(f"etcd://ipam:pa55word@{auth_etcd.endpoints()}") as store:
        with pytest.raises(ValidationError, match="max-txn-ops"):
            store.commit([Create(f"/big/{i:04d}", b"x") for i in range(129)])
        assert store.list("/big/") == []
        assert len(store.get_many([f"/big/{i:04d}" for i in range(300)])) == 0


# -- three members ----------------------------------------------------------------------


@pytest.fixture
def trio(tmp_path):
    if not HAVE_ETCD:
        pytest.skip(SKIP_REASON)
    with EtcdCluster(tmp_path, size=3) as cluster:
        yield cluster


def _write_until_it_lands(store, key: str, attempts: int = 60) -> tuple[int, list]:
    """Create ``key``, retrying on DatastoreUnavailableError only; every attempt must end (no hang).

    A timed-out attempt may still have landed (the error says its outcome is unknown), so a
    later AlreadyExistsError is resolved the documented way: by reading the key.
    """
    errors = []
    for _ in range(attempts):
        kind, value = finishes(lambda: store.create(key, b"v"), within=30)
        if kind == "ok":
            return value, errors
        if isinstance(value, AlreadyExistsError) and errors and "outcome is unknown" in str(errors[-1]):
            return store.get(key).revision, errors
        assert isinstance(value, DatastoreUnavailableError), value
        errors.append(value)
    pytest.fail(f"{key} never written after {attempts} attempts: {errors[-1]}")


@pytest.mark.slow
def test_killing_the_leader_fails_writes_cleanly_then_they_resume(trio):
    with open_store(trio.url() + "?timeout=2") as store:
        store.create("/ha/before", b"v")
        leader = trio.leader()
        trio.kill(leader)
        rev, errors = _write_until_it_lands(store, "/ha/after")
        assert all("try again later" in str(e) for e in errors)
        assert store.get("/ha/after").revision == rev
        assert store.get("/ha/before") is not None
        assert trio.leader() != leader


@pytest.mark.slow
def test_without_quorum_writes_are_unavailable_not_hung(trio):
    with open_store(trio.url() + "?timeout=2") as store:
        store.create("/q/k", b"v")
        first = trio.leader()
        trio.kill(first)
        trio.kill(next(i for i in trio.alive()))
        for op in (lambda: store.create("/q/new", b"v"), lambda: store.get("/q/k")):
            kind, err = finishes(op, within=30)
            assert kind == "error" and isinstance(err, DatastoreUnavailableError), err
            assert "try again later" in str(err)


@pytest.mark.slow
def test_a_killed_member_restarts_and_catches_up(trio):
    victim = next(i for i in range(3) if i != trio.leader())
    trio.kill(victim)
    with open_store(trio.url() + "?timeout=2") as store:
        revs = [_write_until_it_lands(store, f"/rejoin/{i}")[0] for i in range(5)]
    trio.restart(victim)
    with open_store(trio.url([victim]) + "?timeout=5") as only_victim:
        records = only_victim.list("/rejoin/")
        assert [r.revision for r in records] == revs
        rev = only_victim.create("/rejoin/via-victim", b"v")  # forwarded to the leader
        assert only_victim.get("/rejoin/via-victim").revision == rev


# -- large reads: paged, one revision -------------------------------------------------------

GRPC_DEFAULT_RECEIVE = 4 << 20  # what a channel accepts when nobody raises the limit
RECORD = 4096


def _value(i: int, tag: bytes = b"") -> bytes:
    head = f"{i:05d}".encode() + tag
    return head + random.Random(i).randbytes(RECORD - len(head))


def _fill(store, prefix: str, n: int) -> list[str]:
    """``n`` records of 4 KiB under ``prefix``, written in a shuffled order; their keys in key order."""
    keys = [f"{prefix}{i:05d}" for i in range(n)]
    order = list(range(n))
    random.Random(7).shuffle(order)
    for at in range(0, n, 250):  # 250 x 4 KiB stays under etcd's 1.5 MiB request limit
        store.commit([Create(keys[i], _value(i)) for i in order[at:at + 250]])
    return keys


@pytest.fixture
def small_receive_store(etcd_server):
    """A store whose channels keep gRPC's default 4 MiB receive limit: only paging makes big reads work."""
    etcd_server.wipe()
    with EtcdStore(etcd_server.url(), max_receive_bytes=GRPC_DEFAULT_RECEIVE) as store:
        yield store


@needs_etcd
def test_listing_12_mib_works_in_key_order_under_the_default_receive_limit(small_receive_store, etcd_server):
    import grpc
    from pyetcd import etcdrpc

    store = small_receive_store
    keys = _fill(store, "/big/", 3000)
    # Control: the same prefix in one unpaged range request is over the 4 MiB limit.
    with grpc.insecure_channel(etcd_server.endpoints()) as ch:
        with pytest.raises(grpc.RpcError) as raised:
            etcdrpc.KVStub(ch).Range(etcdrpc.RangeRequest(key=b"/big/", range_end=b"/big0"), timeout=10)
        assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    records = store.list("/big/")
    assert [r.key for r in records] == keys
    assert all(r.value == _value(i) for i, r in enumerate(records))
    window = store.list("/big/", start="/big/00100", limit=1200)  # crosses page boundaries
    assert [r.key for r in window] == keys[100:1300]
    assert [r.key for r in store.list("/big/", start="/big/02990")] == keys[2990:]


@needs_etcd
def test_records_of_64_kib_overflow_the_first_guess_and_the_pages_shrink(small_receive_store):
    store = small_receive_store
    keys = [f"/fat/{i:03d}" for i in range(300)]  # 256 of them (the first page's guess) = 16 MiB
    for at in range(0, 300, 20):
        store.commit([Create(k, k.encode() * (65536 // len(k))) for k in keys[at:at + 20]])
    records = store.list("/fat/")
    assert [r.key for r in records] == keys
    assert all(r.value == r.key.encode() * (65536 // len(r.key)) for r in records)
    assert sorted(store.get_many(reversed(keys))) == keys  # 128 per transaction would be 8 MiB


@needs_etcd
def test_a_listing_is_one_snapshot_though_writes_land_before_its_last_page(small_receive_store):
    store = small_receive_store
    keys = _fill(store, "/snap/", 3000)
    last = store.get(keys[-1])
    pages = store.pages("/snap/")
    first = next(pages)
    # Written after the first page was read and before the last: neither may show.
    store.create("/snap/99999", b"late")
    store.update(keys[-1], _value(2999, b"changed"), last.revision)
    rest = list(pages)
    assert rest, "3000 records of 4 KiB came in one page; the test shows nothing"
    records = first + [r for page in rest for r in page]
    assert [r.key for r in records] == keys
    assert records[-1].value == _value(2999) and records[-1].revision == last.revision
    # A fresh listing sees both writes.
    fresh = store.list("/snap/")
    assert fresh[-1].key == "/snap/99999" and fresh[-2].value == _value(2999, b"changed")


@needs_etcd
def test_a_listing_whose_revision_is_compacted_mid_way_is_a_conflict(small_receive_store, etcd_server):
    store = small_receive_store
    _fill(store, "/cmp/", 1500)
    pages = store.pages("/cmp/")
    next(pages)
    etcd_server.compact(store.create("/cmp/late", b"x"))
    with pytest.raises(ConflictError, match="compacted"):
        list(pages)
    assert len(store.list("/cmp/")) == 1501  # a new listing reads at a fresh revision


@needs_etcd
def test_get_many_of_1500_records_of_4_kib(small_receive_store):
    store = small_receive_store
    keys = _fill(store, "/many/", 1500)
    wanted = keys + [f"/many/absent-{i}" for i in range(50)]
    random.Random(3).shuffle(wanted)
    found = store.get_many(wanted)
    assert sorted(found) == keys
    assert all(found[k].value == _value(int(k.rsplit("/", 1)[1])) for k in keys)
    assert len({r.revision for r in found.values()}) > 1  # the records really come from several commits


# -- keepalive ----------------------------------------------------------------------------


def test_a_watch_on_a_frozen_member_ends_as_unavailable_instead_of_hanging(tmp_path):
    """SIGSTOP keeps the TCP connection open (the kernel still ACKs) but nothing answers: only the
    keepalive pings can tell. The member permits 1 s pings (etcd's default minimum is 5 s)."""
    if not HAVE_ETCD:
        pytest.skip(SKIP_REASON)
    with EtcdCluster(tmp_path, extra_args=("--grpc-keepalive-min-time=100ms",)) as cluster:
        with EtcdStore(cluster.url() + "?keepalive=1&timeout=2") as store:
            events = store.watch("/frozen/", store.revision() + 1)
            store.create("/frozen/a", b"1")
            assert next(events).key == "/frozen/a"
            time.sleep(2.5)  # a quiet watch outlives several keepalive rounds
            store.create("/frozen/b", b"2")
            assert next(events).key == "/frozen/b"
            pid = cluster.members[0].proc.pid
            os.kill(pid, signal.SIGSTOP)
            try:
                kind, err = finishes(lambda: next(events), within=30)
            finally:
                os.kill(pid, signal.SIGCONT)
            assert kind == "error" and isinstance(err, DatastoreUnavailableError), err
            assert cluster.endpoints() in str(err) and "watch again" in str(err)
            events.close()
