"""Prometheus /metrics scraped over HTTP (loopback only) from `topoipam metrics serve` on SQLite and from a
running agent on a real etcd, parsed with prometheus_client's text parser, compared with what `ipam show`,
`ipam headroom`, `ipam coverage` and `ipam drift` say about the same store, built through the public CLI:
the seed's racks (kube-node-0..3, rack = i // 2, rack-r-ippool = 192.168.r.0/24), a node labelled rack=2
that no pool selects, a borrowed address, and a relabelled node whose address now drifts.
Every server is a child process stopped by its pid (SIGTERM) in a finally block.
"""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from agent_proc import TOPOIPAM, AgentProc, exec_cni
from test_agent import ipip_address, wait_for
from seed_yaml import RACK_POOL
from topoipam.metrics.collector import SNAPSHOT_HELP, StoreCollector
from topoipam.metrics.families import HELP
from topoipam.metrics.process import PROCESS_HELP
from topoipam.store import open_store
from topoipam.store.snapshot import read_snapshot

DOCS = Path(__file__).resolve().parents[1] / "docs" / "metrics.md"
NODE = "---\napiVersion: projectcalico.org/v3\nkind: Node\nmetadata:\n  name: {name}\n  labels:\n    rack: \"{rack}\"\n"


def run(url: str, *argv: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(TOPOIPAM), "--datastore", url, *argv], input=stdin, capture_output=True, text=True,
                          timeout=120)


def ok(url: str, *argv: str, stdin: str | None = None) -> str:
    r = run(url, *argv, stdin=stdin)
    assert r.returncode == 0, (argv, r.stdout, r.stderr)
    return r.stdout


def build_seed(url: str) -> dict:
    """The seed's racks, kube-node-4 in rack 2 (no pool), workloads, one borrowed address, one drift."""
    ok(url, "create", "-f", "-", stdin="".join(NODE.format(name=f"kube-node-{i}", rack=min(i // 2, 2))
                                               for i in range(5)))
    ok(url, "create", "-f", "-", stdin=RACK_POOL.format(rack=0) + "---\n" + RACK_POOL.format(rack=1))
    for i, n in ((0, 3), (1, 2), (2, 5), (3, 1)):
        ok(url, "ipam", "assign", "--node", f"kube-node-{i}", "--handle", f"w{i}", "--ipv4", str(n),
           "--namespace", "default", "--attr", f"pod=w{i}")
    first = ipaddress.ip_address(ok(url, "ipam", "assign", "--node", "kube-node-0", "--handle", "seen").split()[0])
    # kube-node-1 takes an address in kube-node-0's block: borrowed (ipam show --show-borrowed lists it).
    ok(url, "ipam", "assign", "--node", "kube-node-1", "--handle", "borrow", "--ip", str(first + 20))
    # kube-node-3 moves to rack 0: its rack-1 address now lies outside every pool that selects it.
    ok(url, "label", "nodes", "kube-node-3", "rack=0", "--overwrite")
    return {"borrower": "kube-node-1"}


class Served:
    """`topoipam metrics serve` (or an agent) as a child process; ``url`` read from its log."""

    def __init__(self, argv: list[str], log: Path, marker: str) -> None:
        self.log = log
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        self.url = self._wait_url(marker)

    def _wait_url(self, marker: str) -> str:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            text = self.log.read_text(errors="replace")
            for line in text.splitlines():
                if marker in line and "http://127.0.0.1:" in line:
                    return line[line.index("http://"):].split()[0]
            if self.proc.poll() is not None:
                raise AssertionError(f"exited {self.proc.returncode}: {text}")
            time.sleep(0.05)
        raise AssertionError(f"no metrics URL after 60 s: {self.log.read_text()}")

    def stop(self) -> int:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
        try:
            return self.proc.wait(timeout=60)
        finally:
            if self.proc.poll() is None:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)


def scrape(url: str) -> dict:
    """{(sample name, sorted label items): value}, and the families' HELP under ("#help", name)."""
    assert url.startswith("http://127.0.0.1:")
    with urllib.request.urlopen(url, timeout=60) as resp:
        text = resp.read().decode()
    out = {}
    for family in text_string_to_metric_families(text):
        out[("#help", family.name)] = family.documentation
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def of(samples: dict, name: str, **labels) -> float | None:
    return samples.get((name, tuple(sorted((k, str(v)) for k, v in labels.items()))))


def show_pools(url: str) -> dict:
    """`ipam show`: CIDR -> (total, in use), read by column name."""
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in ok(url, "ipam", "show").splitlines()
            if line.startswith("|")]
    head = rows[0]
    return {r[head.index("CIDR")]: (int(float(r[head.index("IPS TOTAL")])), int(r[head.index("IPS IN USE")].split()[0]))
            for r in rows[1:]}


def check_against_cli(url: str, samples: dict, borrower: str) -> None:
    pools = {p["cidr"]: p for p in json.loads(ok(url, "ipam", "headroom", "--by", "rack", "-o", "json"))["pools"]}
    report = json.loads(ok(url, "ipam", "headroom", "--by", "rack", "-o", "json"))
    for cidr, (total, in_use) in show_pools(url).items():
        p = pools[cidr]
        key = {"pool": p["pool"], "family": 4}
        assert of(samples, "topoipam_pool_addresses", **key) == total
        assert of(samples, "topoipam_pool_addresses_in_use", **key) == in_use
        assert of(samples, "topoipam_pool_addresses_free", **key) == p["free"]
        assert of(samples, "topoipam_pool_blocks_claimed", **key) == p["blocks_claimed"]
        assert of(samples, "topoipam_pool_blocks_unclaimed", **key) == p["blocks_unclaimed"]
    assert report["domains"]
    for d in report["domains"]:
        key = {"label": "rack", "value": d["domain"], "family": d["version"]}
        for name, field in (("addresses", "total"), ("addresses_in_use", "in_use"), ("addresses_free", "free"),
                            ("blocks_claimed", "blocks_claimed"), ("blocks_unclaimed", "blocks_unclaimed"),
                            ("workloads_fit", "fit")):
            assert of(samples, f"topoipam_domain_{name}", **key) == d[field], (name, d)
        assert of(samples, "topoipam_domain_nodes", **key) == len(d["nodes"])
    for n in report["nodes"]:
        key = {"node": n["node"], "family": n["version"]}
        assert of(samples, "topoipam_node_blocks", **key) == n["blocks"]
        assert of(samples, "topoipam_node_block_addresses_free", **key) == n["free"]
        assert of(samples, "topoipam_node_block_addresses_in_use", **key) == n["in_use"]
    borrowed = [line for line in ok(url, "ipam", "show", "--show-borrowed").splitlines()
                if line.startswith("|") and borrower in line]
    assert len(borrowed) == 1 and of(samples, "topoipam_node_borrowed_addresses", node=borrower, family=4) == 1
    coverage = json.loads(run(url, "ipam", "coverage", "-o", "json").stdout)
    uncovered = {(n["node"], n["version"]) for n in coverage["nodes"] if not n["covered"]}
    assert uncovered == {("kube-node-4", 4)}
    assert of(samples, "topoipam_uncovered_nodes", family=4) == 1
    assert {(dict(k[1])["node"], int(dict(k[1])["family"])) for k in samples
            if k[0] == "topoipam_node_uncovered"} == uncovered
    drift = json.loads(run(url, "ipam", "drift", "-o", "json").stdout)
    assert len(drift) == 1 and of(samples, "topoipam_drifted_workloads", family=4) == 1


def test_metrics_serve_on_sqlite_matches_show_and_headroom(tmp_path):
    url = f"sqlite://{tmp_path}/m.db"
    seeded = build_seed(url)
    served = Served([str(TOPOIPAM), "--datastore", url, "metrics", "serve", "--listen", "127.0.0.1:0",
                     "--by", "rack", "--max-age", "0"], tmp_path / "serve.log", "Serving metrics")
    try:
        samples = scrape(served.url)
        check_against_cli(url, samples, seeded["borrower"])
        allocated = sum(n for _, n in show_pools(url).values())
        assert sum(v for k, v in samples.items() if k[0] == "topoipam_node_allocations") == allocated
        assert of(samples, "topoipam_node_allocations", node="kube-node-2", family=4) == 5
        assert of(samples, "topoipam_metrics_datastore_up") == 1
        assert of(samples, "topoipam_metrics_snapshot_records") > 0
        assert samples[("#help", "topoipam_pool_addresses_free")] == HELP["topoipam_pool_addresses_free"][1]
        # --max-age 0: the next scrape reads again, and sees a new assignment.
        ok(url, "ipam", "assign", "--node", "kube-node-2", "--handle", "late")
        again = scrape(served.url)
        assert of(again, "topoipam_node_allocations", node="kube-node-2", family=4) == 6
        assert of(again, "topoipam_metrics_snapshot_revision") > of(samples, "topoipam_metrics_snapshot_revision")
        assert ("topoipam_assignment_duration_seconds_count", ()) not in again  # agent only
    finally:
        assert served.stop() == 0  # SIGTERM: a clean stop


def test_agent_on_etcd_serves_metrics(tmp_path, etcd_server):
    etcd_server.wipe()
    url = etcd_server.url()
    seeded = build_seed(url)
    agent = AgentProc(tmp_path, url, "kube-node-0", {"rack": "0"},
                      extra_args=["--metrics-listen", "127.0.0.1:0", "--metrics-by", "rack",
                                  "--metrics-max-age", "0"]).start()
    store = open_store(url)
    try:
        wait_for(lambda: ipip_address(store, "kube-node-0"), what="IPIP tunnel address")  # then nothing moves
        assert exec_cni("ADD", agent.socket, "c1").returncode == 0
        assert exec_cni("ADD", agent.socket, "c2").returncode == 0
        bad = exec_cni("ADD", agent.socket, "c3", ipv4_pools=["no-such-pool"])
        assert bad.returncode != 0
        code = bad.json["code"]
        metrics_url = next(line[line.index("http://"):].split()[0] for line in agent.log().splitlines()
                           if "serving metrics on" in line)
        samples = scrape(metrics_url)
        check_against_cli(url, samples, seeded["borrower"])
        assert of(samples, "topoipam_cni_requests_total", command="ADD") == 3
        assert of(samples, "topoipam_assignment_duration_seconds_count") == 3
        assert of(samples, "topoipam_assignment_duration_seconds_bucket", le="+Inf") == 3
        assert of(samples, "topoipam_cni_errors_total", code=code) == 1
        assert of(samples, "topoipam_cas_conflicts_total") is not None
        # seed: 3 + 1 (the borrowed one is kube-node-1's); the tunnel address; 2 CNI ADDs
        assert of(samples, "topoipam_node_allocations", node="kube-node-0", family=4) == 4 + 1 + 2
    finally:
        store.close()
        assert agent.stop() == 0


def _busy_port() -> socket.socket:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    return s


@pytest.mark.parametrize("argv, message", [
    (["--listen", "127.0.0.1"], "expected ADDR:PORT"),
    (["--listen", "localhost:9091"], "is not an IP address"),
    (["--listen", "::1:9091"], "in brackets"),
    (["--listen", "127.0.0.1:70000"], "0 to 65535"),
    (["--listen", "127.0.0.1:0", "--by", "no such!"], "is not a label key"),
    (["--listen", "127.0.0.1:0", "--by", "zone"], "no node has such a label (labels on nodes: rack)"),
    (["--listen", "127.0.0.1:0", "--max-age", "-1"], "0 or more"),
    (["--listen", "127.0.0.1:0", "--max-age", "soon"], "invalid float value"),
    (["--by", "rack"], "--listen"),
])
def test_bad_metrics_flags_exit_2(tmp_path, argv, message):
    url = f"sqlite://{tmp_path}/m.db"
    ok(url, "create", "-f", "-", stdin=NODE.format(name="n0", rack=0))
    before = read_snapshot(open_store(url))
    r = run(url, "metrics", "serve", *argv)
    assert r.returncode == 2 and message in r.stderr, r
    after = read_snapshot(open_store(url))
    assert after.revision == before.revision and len(after) == len(before)


def test_port_in_use_exits_2_for_serve_and_agent(tmp_path):
    url = f"sqlite://{tmp_path}/m.db"
    busy = _busy_port()
    try:
        listen = f"127.0.0.1:{busy.getsockname()[1]}"
        r = run(url, "metrics", "serve", "--listen", listen)
        assert r.returncode == 2 and "Address already in use" in r.stderr, r
        sock = tmp_path / "a.sock"
        r = run(url, "agent", "--node", "n0", "--socket", str(sock), "--metrics-listen", listen)
        assert r.returncode == 2 and "--metrics-listen" in r.stderr and "Address already in use" in r.stderr, r
        assert not sock.exists()  # nothing was served
        assert read_snapshot(open_store(url)).list("/topoipam/v3/nodes/") == []  # nor registered
    finally:
        busy.close()


@pytest.mark.parametrize("argv, message", [
    (["--metrics-listen", "nowhere"], "expected ADDR:PORT"),
    (["--metrics-listen", "127.0.0.1:0", "--metrics-by", "x!"], "is not a label key"),
    (["--metrics-by", "rack"], "need --metrics-listen"),
])
def test_bad_agent_metrics_flags_exit_2(tmp_path, argv, message):
    sock = tmp_path / "a.sock"
    r = run(f"sqlite://{tmp_path}/m.db", "agent", "--node", "n0", "--socket", str(sock), *argv)
    assert r.returncode == 2 and message in r.stderr, r
    assert not sock.exists()


def test_a_scrape_within_max_age_reads_nothing_and_one_snapshot_is_one_listing(tmp_path):
    url = f"sqlite://{tmp_path}/m.db"
    build_seed(url)
    store = open_store(url)
    from prometheus_client import CollectorRegistry, generate_latest

    reg = CollectorRegistry(auto_describe=False)
    collector = StoreCollector(store, ["rack"], max_age=3600)
    reg.register(collector)
    try:
        first = generate_latest(reg)
        ok(url, "ipam", "assign", "--node", "kube-node-2", "--handle", "late")
        second = generate_latest(reg)
        assert collector.computed == 1  # cached: the new assignment is not seen yet
        strip = [line for line in first.decode().splitlines() if "snapshot_age" not in line]
        assert strip == [line for line in second.decode().splitlines() if "snapshot_age" not in line]
        collector.max_age = 0
        third = generate_latest(reg).decode()
        assert collector.computed == 2
        assert 'topoipam_node_allocations{family="4",node="kube-node-2"} 6.0' in third
    finally:
        store.close()


def test_every_metric_is_documented_with_its_help():
    text = DOCS.read_text()
    for name in [*HELP, *SNAPSHOT_HELP, *PROCESS_HELP]:
        assert f"`{name}`" in text, name


def test_snapshot_serves_what_was_listed():
    store = open_store("memory://")
    from topoipam.store.base import Create

    store.commit([Create("/topoipam/a/1", b"x"), Create("/topoipam/a/2", b"y"), Create("/topoipam/b", b"z"),
                  Create("/other", b"w")])
    snap = read_snapshot(store)
    assert [r.key for r in snap.list("/topoipam/a/")] == ["/topoipam/a/1", "/topoipam/a/2"]
    assert [r.key for r in snap.list("/topoipam/", start="/topoipam/a/2", limit=1)] == ["/topoipam/a/2"]
    assert snap.get("/other") is None and snap.get("/topoipam/b").value == b"z"
    store.commit([Create("/topoipam/a/3", b"v")])
    assert len(snap.list("/topoipam/a/")) == 2  # a copy: later writes are not seen
    from topoipam.errors import ValidationError

    with pytest.raises(ValidationError):
        snap.commit([Create("/topoipam/c", b"")])
    assert snap.revision == 1 and len(snap) == 3


def test_cas_counters_count_lost_races_of_the_one_retry_loop():
    """A commit that loses its race (another writer moved the key between read and commit) is one
    conflict; a loop that loses every time is one exhausted operation. Real memory store, real run_cas."""
    from prometheus_client import CollectorRegistry, generate_latest

    from topoipam.errors import RetriesExhaustedError
    from topoipam.metrics.process import AgentMetrics
    from topoipam.store.base import Create, Update
    from topoipam.store.retry import CAS_STATS, MAX_RETRIES, Plan, run_cas

    store = open_store("memory://")
    store.commit([Create("/k", b"0")])

    def racing(lose: int):
        def attempt(n):
            rec = store.get("/k")
            if n < lose:  # someone else writes after our read
                store.commit([Update("/k", b"other", rec.revision)])
            return Plan([Update("/k", b"mine", rec.revision)], result=n)
        return attempt

    before = (CAS_STATS.conflicts, CAS_STATS.exhausted)
    assert run_cas(store, racing(2), "test") == 2
    assert (CAS_STATS.conflicts, CAS_STATS.exhausted) == (before[0] + 2, before[1])
    with pytest.raises(RetriesExhaustedError):
        run_cas(store, racing(MAX_RETRIES), "test")
    assert (CAS_STATS.conflicts, CAS_STATS.exhausted) == (before[0] + 2 + MAX_RETRIES, before[1] + 1)

    registry = CollectorRegistry(auto_describe=False)
    recorder = AgentMetrics(registry)
    recorder.served("ADD", 1, json.dumps({"code": 11, "msg": "try again"}).encode(), 0.003)
    recorder.served("DEL", 0, b"", 0.001)
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in text_string_to_metric_families(generate_latest(registry).decode()) for s in f.samples}
    assert samples[("topoipam_cas_conflicts_total", ())] == CAS_STATS.conflicts
    assert samples[("topoipam_cas_retries_exhausted_total", ())] == CAS_STATS.exhausted
    assert samples[("topoipam_cni_errors_total", (("code", "11"),))] == 1
    assert samples[("topoipam_assignment_duration_seconds_count", ())] == 1  # ADD only
    assert samples[("topoipam_assignment_duration_seconds_bucket", (("le", "0.005"),))] == 1
    assert samples[("topoipam_assignment_duration_seconds_bucket", (("le", "0.0025"),))] == 0
    assert samples[("topoipam_cni_requests_total", (("command", "DEL"),))] == 1


def test_an_unreachable_datastore_is_reported_not_a_failed_scrape(tmp_path):
    """etcd on a loopback port nobody listens on: the endpoint serves datastore_up 0 and no IPAM figures."""
    idle = socket.socket()
    idle.bind(("127.0.0.1", 0))
    port = idle.getsockname()[1]
    idle.close()  # nothing listens there now
    served = Served([str(TOPOIPAM), "--datastore", f"etcd://127.0.0.1:{port}?timeout=1", "metrics", "serve",
                     "--listen", "127.0.0.1:0"], tmp_path / "serve.log", "Serving metrics")
    try:
        samples = scrape(served.url)
        assert of(samples, "topoipam_metrics_datastore_up") == 0
        assert not [k for k in samples if k[0].startswith("topoipam_pool_")]
    finally:
        assert served.stop() == 0
    assert "cannot read the datastore" in served.log.read_text()


def test_ipv6_figures_carry_family_6(tmp_path):
    url = f"sqlite://{tmp_path}/m.db"
    ok(url, "create", "-f", "-", stdin=NODE.format(name="n0", rack=0))
    ok(url, "create", "-f", "-", stdin="apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata:\n  name: v6\n"
                                       "spec:\n  cidr: fd00:10::/120\n  blockSize: 122\n")
    ok(url, "ipam", "assign", "--node", "n0", "--handle", "h6", "--ipv6", "3")
    store = open_store(url)
    try:
        from topoipam.metrics.families import render

        samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
                   for f in text_string_to_metric_families(render(StoreCollector(store, ["rack"]).collect()))
                   for s in f.samples}
    finally:
        store.close()
    assert of(samples, "topoipam_pool_addresses", pool="v6", family=6) == 256
    assert of(samples, "topoipam_pool_addresses_in_use", pool="v6", family=6) == 3
    assert of(samples, "topoipam_node_allocations", node="n0", family=6) == 3
    assert of(samples, "topoipam_node_blocks", node="n0", family=6) == 1
    assert of(samples, "topoipam_domain_addresses_free", label="rack", value="0", family=6) == 253
    assert of(samples, "topoipam_uncovered_nodes", family=6) == 0
    assert of(samples, "topoipam_uncovered_nodes", family=4) is None  # no IPv4 pool: no IPv4 question
