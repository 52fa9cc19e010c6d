"""Fuzzing with hypothesis: selectors, manifests, CNI stdin and environment, ``ipam`` arguments.

Every target runs in-process (the CLI's ``main``, the plugin's ``respond``) against a real SQLite
file seeded with a pool and a node. Each input must end in an expected way: no exception escapes
(``main`` lets only bugs through; ``respond`` prints a traceback on stderr for them, which fails
the test), and an input that is rejected leaves every table byte-identical (``sqlite_dump``).

A few hundred inputs per target in the default run; ``TOPOIPAM_FUZZ_LONG=1`` runs 10,000 per
target (``TOPOIPAM_FUZZ_EXAMPLES=N`` sets another count) (docs/robustness.md has the counts of the last long run). The fixed hostile cases (alias
bombs, deep nesting, huge numbers, duplicate keys, 10 MB documents) run every time.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import sqlite_dump
from invariants import assert_invariants

LONG = os.environ.get("TOPOIPAM_FUZZ_LONG") == "1"
EXAMPLES = int(os.environ.get("TOPOIPAM_FUZZ_EXAMPLES", 10_000 if LONG else 300))  # per target
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=not LONG,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                       HealthCheck.data_too_large, HealthCheck.filter_too_much])

SEED = """\
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: fuzz-pool}
spec: {cidr: 10.9.0.0/24, blockSize: 28, nodeSelector: rack == "0"}
---
apiVersion: projectcalico.org/v3
kind: Node
metadata: {name: fuzz-node, labels: {rack: "0"}}
"""


class Tally:
    """Inputs run and how they ended, printed at the end of a target (pytest -s shows it)."""

    def __init__(self, target: str) -> None:
        self.target, self.counts = target, {"accepted": 0, "rejected": 0}

    def add(self, accepted: bool) -> None:
        self.counts["accepted" if accepted else "rejected"] += 1

    def report(self) -> None:
        total = sum(self.counts.values())
        print(f"\nfuzz {self.target}: {total} inputs ({self.counts['rejected']} rejected, "
              f"{self.counts['accepted']} accepted), 0 tracebacks, 0 state changes on rejection")
        assert total > 0


@pytest.fixture
def world(tmp_path):
    from topoipam.store import open_store

    url = f"sqlite://{tmp_path}/fuzz.db"
    code, _, err = run_cli(url, ["create", "-f", "-"], SEED)
    assert code == 0, err
    store = open_store(url)
    try:
        yield url, store
    finally:
        store.close()


def run_cli(url: str, argv: list[str], stdin: str = "") -> tuple[int, str, str]:
    """The real CLI entry point in-process; (exit code, stdout, stderr). An exception is a bug."""
    from topoipam.cli.main import main

    out, err = io.StringIO(), io.StringIO()
    old_stdin = sys.stdin
    sys.stdin = io.StringIO(stdin)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(["--datastore", url, *argv])
    finally:
        sys.stdin = old_stdin
    assert "Traceback" not in err.getvalue(), err.getvalue()
    return code, out.getvalue(), err.getvalue()


def cli_case(url: str, argv: list[str], stdin: str = "") -> bool:
    """Run one input; a rejection (exit != 0) must change nothing. True if it was accepted."""
    before = sqlite_dump(url)
    code, out, err = run_cli(url, argv, stdin)
    assert code in (0, 1, 2, 3, 4), (code, err)
    if code not in (0, 4):
        assert err.strip(), f"exit {code} without a message"
        assert sqlite_dump(url) == before, f"rejected ({code}: {err.strip()[:200]}) but the store changed"
    return code == 0


# ---------------------------------------------------------------- selectors

SELECTOR_TOKENS = ["a", "rack", "k8s.io/x-y_1", "==", "!=", "in", "not in", "has(", "all()", "global()", "(", ")",
                   "{", "}", ",", "&&", "||", "!", "'", '"', "'0'", '"x"', "contains", "starts with", "ends with",
                   "\\", " ", "\t", "\n", "\x00", "é", "{'a', 'b'}", "'" + "x" * 600 + "'"]


LABEL = st.sampled_from(["a", "rack", "k8s.io/x-y_1", "a", "rack", "zone", "in", "has", "x" * 513, "a b", "a/b/c"])
VALUE = st.sampled_from(["'0'", '"x"', "''", "'a\\'b'", "'" + "v" * 600 + "'", "0", "'é'"])
TERM = st.one_of(
    st.tuples(LABEL, st.sampled_from(["==", "!=", "contains", "starts with", "ends with"]), VALUE).map(" ".join),
    st.tuples(LABEL, st.sampled_from(["in", "not in"]), st.lists(VALUE, max_size=3).map(", ".join)).map(
        lambda t: f"{t[0]} {t[1]} {{{t[2]}}}"),
    LABEL.map("has({})".format), LABEL, st.sampled_from(["all()", "global()", "!all()", "()"]))
JOINERS = [" && ", " || ", "&&", " | ", " and "]
OPENERS = ["", "", "(", "!", "!(", "(("]


def _joined(parts) -> str:
    """Terms joined by operators, each with an opener (``(``, ``!``); parentheses closed at the end, or not."""
    text, depth = "", 0
    for i, (term, joiner, opener, close) in enumerate(parts):
        text += (joiner if i else "") + opener + term
        depth += opener.count("(")
    return text + ")" * (depth if parts[0][3] else max(0, depth - 1))


STRUCTURED = st.lists(st.tuples(TERM, st.sampled_from(JOINERS), st.sampled_from(OPENERS), st.booleans()),
                      min_size=1, max_size=4).map(_joined)
SELECTORS = st.one_of(st.text(max_size=200), st.lists(st.sampled_from(SELECTOR_TOKENS), max_size=30).map("".join),
                      st.lists(st.sampled_from(SELECTOR_TOKENS), max_size=30).map(" ".join), STRUCTURED, STRUCTURED)


def test_fuzz_selectors():
    from topoipam.errors import SelectorError
    from topoipam.selector import parse

    tally = Tally("selectors")

    @FUZZ
    @given(SELECTORS)
    def case(text):
        try:
            sel = parse(text)
        except SelectorError as exc:
            assert exc.message
            tally.add(False)
            return
        assert parse(str(sel)) == sel  # the canonical form is a fixed point
        sel.evaluate({"rack": "0", "a": "x"})
        tally.add(True)

    case()
    tally.report()


# ---------------------------------------------------------------- manifests

SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), st.text(max_size=20),
                    st.sampled_from(["10.9.1.0/24", "fd00::/64", "10.9.0.0/24", "Always", "Never", "CrossSubnet",
                                     "rack == '0'", "all()", "26", "Workload", "Tunnel"]))
FIELDS = ["apiVersion", "kind", "metadata", "spec", "name", "labels", "annotations", "cidr", "blockSize",
          "nodeSelector", "ipipMode", "vxlanMode", "natOutgoing", "disabled", "allowedUses", "items", "strictAffinity",
          "maxBlocksPerHost", "reservedCIDRs", "namespaceSelector", "uid", "resourceVersion", "x"]
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                       st.dictionaries(st.sampled_from(FIELDS), inner, max_size=5)),
                      max_leaves=20)


@st.composite
def resources(draw):
    kind = draw(st.sampled_from(["IPPool", "Node", "IPAMConfiguration", "IPReservation", "IPPoolList", "BGPPeer"]))
    doc = {"apiVersion": draw(st.sampled_from(["projectcalico.org/v3", "v1", ""])), "kind": kind,
           "metadata": {"name": draw(st.sampled_from(["p1", "fuzz-pool", "fuzz-node", "default", "", "A_B", "x" * 300]))},
           "spec": draw(st.dictionaries(st.sampled_from(FIELDS), VALUES, max_size=5))}
    for _ in range(draw(st.integers(0, 2))):  # mutate: a field replaced by anything
        doc[draw(st.sampled_from(FIELDS))] = draw(VALUES)
    return doc


@st.composite
def manifests(draw):
    import yaml

    docs = draw(st.lists(resources(), min_size=0, max_size=3))
    form = draw(st.sampled_from(["yaml", "json", "raw", "spliced"]))
    if form == "json":
        return json.dumps(docs if len(docs) != 1 else docs[0])
    if form == "raw":
        return draw(st.text(max_size=300))
    text = "---\n".join(yaml.safe_dump(d) for d in docs)
    if form == "spliced" and text:  # YAML syntax spliced in at a random place
        at = draw(st.integers(0, len(text)))
        text = text[:at] + draw(st.sampled_from(["&a ", "*a", "<<: *a\n", "!!binary ", "!!python/object ", "? ",
                                                 "{", "[", "'", "\t", "\x00", "%YAML 1.1\n", ": :", "\n- ",
                                                 "1" * 5000])) + text[at:]
    return text


def test_fuzz_manifests(world):
    url, store = world
    tally = Tally("manifests (create/apply -f -)")

    @FUZZ
    @given(st.sampled_from(["create", "apply", "replace"]), manifests())
    def case(verb, text):
        tally.add(cli_case(url, [verb, "-f", "-"], text))

    case()
    tally.report()
    assert_invariants(store, sqlite_path=url[len("sqlite://"):])


BOMB = "".join(f"{chr(97 + i)}: &{chr(97 + i)} [{', '.join([f'*{chr(96 + i)}'] * 9) if i else 'x, x, x, x, x, x, x, x, x'}]\n"
               for i in range(10))
POOL = "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {{name: {name}}}\nspec: {{cidr: {cidr}{extra}}}\n"


def _ten_mb_yaml() -> str:
    doc = POOL.format(name="big", cidr="10.9.1.0/24", extra=", nodeSelector: 'a == \"" + "x" * 1000 + "\"'")
    return ("---\n" + doc) * (10 * 1024 * 1024 // len(doc))


HOSTILE = {
    "alias bomb": BOMB,
    "alias bomb in a field": BOMB + "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: b}\n"
                                    "spec: {cidr: 10.9.1.0/24, allowedUses: *j}\n",
    "alias bomb as labels": "x: &l {a: b}\n" + "apiVersion: projectcalico.org/v3\nkind: Node\n"
                                               "metadata: {name: n, labels: *l}\n",
    "alias chain 2,400 deep": "".join(f"k{i}: &a{i} {'[' * 60}{f'*a{i - 1}' if i else 'x'}{']' * 60}\n" for i in range(40)),
    "deep YAML flow": "a: " + "[" * 200_000 + "]" * 200_000,
    "deep YAML block": "".join("  " * i + "- \n" for i in range(3000)),
    "deep JSON": "[" * 200_000 + "]" * 200_000,
    "deep JSON object": '{"a":' * 50_000 + "1" + "}" * 50_000,
    "huge integer YAML": POOL.format(name="h", cidr="10.9.1.0/24", extra=", blockSize: " + "9" * 5000),
    "huge integer JSON": json.dumps({"apiVersion": "projectcalico.org/v3", "kind": "IPPool", "metadata": {"name": "h"},
                                     "spec": {"cidr": "10.9.1.0/24"}})[:-2] + ', "blockSize": ' + "9" * 5000 + "}}",
    "huge float": POOL.format(name="h", cidr="10.9.1.0/24", extra=", blockSize: 1e999"),
    "huge integer label": "apiVersion: projectcalico.org/v3\nkind: Node\nmetadata: {name: n, labels: {a: " + "9" * 4000 + "}}\n",
    "duplicate key YAML": POOL.format(name="d", cidr="10.9.1.0/24", extra=", cidr: 10.9.2.0/24"),
    "duplicate key JSON": '{"apiVersion": "projectcalico.org/v3", "kind": "IPPool", "kind": "Node"}',
    "complex key": "? [a, b]\n: 1\n",
    "python tag": "!!python/object/apply:os.system ['touch /tmp/topoipam-fuzz-pwned']\n",
    "10 MB YAML": _ten_mb_yaml(),
    "10 MB JSON": json.dumps({"apiVersion": "projectcalico.org/v3", "kind": "Node",
                              "metadata": {"name": "n", "annotations": {"a": "x" * (10 * 1024 * 1024)}}}),
    "10 MB of one line": "a" * (10 * 1024 * 1024),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_manifest(world, case):
    """Rejected with a message (exit 2) and nothing changed, or (10 MB of valid documents) accepted; no crash."""
    url, store = world
    before = sqlite_dump(url)
    code, _, err = run_cli(url, ["create", "-f", "-"], HOSTILE[case])
    assert not os.path.exists("/tmp/topoipam-fuzz-pwned")
    if case == "10 MB JSON":  # a 10 MB annotation is a valid Node (Calico sets no size limit)
        assert code in (0, 2), (code, err[:300])
    elif case == "10 MB YAML":  # 10 MB of the same pool: "given twice", one line
        assert code == 2 and "given twice" in err, err[:300]
    elif case == "alias bomb as labels":
        assert code == 2 and "unknown field" in err, err[:300]
    else:
        assert code == 2, (code, err[:300])
    assert len(err) < 10_000, "the message quotes the whole input"
    if code != 0:
        assert sqlite_dump(url) == before


# ---------------------------------------------------------------- CNI stdin and environment

CNI_COMMANDS = ["ADD", "DEL", "CHECK", "GC", "STATUS", "VERSION", "", "add", "FOO"]
CNI_VERSIONS = ["1.1.0", "1.0.0", "0.4.0", "0.3.1", "0.2.0", "2.0.0", "", "x", 1]
IDS = st.one_of(st.sampled_from(["c1", "c2", "abc-123", "", ".", "../../etc", "a/b", "a" * 300, "x\x00y", "é"]),
                st.text(max_size=20))
IPAM_VALUES = st.one_of(st.sampled_from(["fuzz-node", "ghost", "10.9.0.0/24", "10.9.0.5", "fd00::/64", ""]),
                        st.booleans(), st.integers(), st.none(), st.lists(st.text(max_size=10), max_size=3),
                        st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=2))


@st.composite
def cni_inputs(draw):
    env = {"CNI_COMMAND": draw(st.sampled_from(CNI_COMMANDS))}
    for name, values in (("CNI_CONTAINERID", IDS), ("CNI_NETNS", st.sampled_from(["/var/run/netns/x", "", "rel"])),
                         ("CNI_IFNAME", st.sampled_from(["eth0", "", "a" * 16, "a/b", "..", "e th"])),
                         ("CNI_ARGS", st.sampled_from(["", "IgnoreUnknown=1", "IP=10.9.0.7", "IP=1.2.3.4",
                                                       "IP=garbage;IgnoreUnknown=1", "K8S_POD_NAME=p;x", "=", ";;",
                                                       "IgnoreUnknown=1;IP=10.9.0.300"])),
                         ("CNI_PATH", st.sampled_from(["/opt/cni/bin", ""]))):
        if draw(st.booleans()):
            env[name] = draw(values)
    ipam = {"type": "topoipam-cni", "nodename": "fuzz-node", "agent_socket": ""}
    for key in draw(st.lists(st.sampled_from(["nodename", "assign_ipv4", "assign_ipv6", "ipv4_pools", "ipv6_pools",
                                              "gateway", "routes", "datastore", "agent_socket", "bogus"]), max_size=3)):
        ipam[key] = draw(IPAM_VALUES)
    conf = {"cniVersion": draw(st.sampled_from(CNI_VERSIONS)), "name": draw(IDS), "type": "bridge", "ipam": ipam}
    if draw(st.booleans()):
        conf["prevResult"] = draw(st.one_of(VALUES, st.just({"ips": [{"address": "10.9.0.5/28"}]})))
    if draw(st.booleans()):
        conf["cni.dev/valid-attachments"] = draw(st.one_of(VALUES, st.just([{"containerID": "c1", "ifname": "eth0"}])))
    form = draw(st.sampled_from(["json", "json", "mutated", "raw"]))
    stdin = json.dumps(conf).encode()
    if form == "mutated":
        at = draw(st.integers(0, len(stdin)))
        stdin = stdin[:at] + draw(st.binary(max_size=8)) + stdin[at:]
    elif form == "raw":
        stdin = draw(st.binary(max_size=200))
    return env, stdin


def test_fuzz_cni_requests(world):
    from topoipam.cni.handler import respond
    from topoipam.ipam import IpamService

    url, store = world
    tally = Tally("CNI stdin and environment (respond in-process)")
    service = IpamService(store)

    def open_backend(_url):  # whatever the netconf names, the test's store: fuzzed URLs open no file
        return store, service

    @FUZZ
    @given(cni_inputs())
    def case(inputs):
        env, stdin = inputs
        before = sqlite_dump(url)
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            code, out = respond(env, stdin, open_backend)
        assert "Traceback" not in err.getvalue(), err.getvalue()
        answer = json.loads(out) if out else None
        if code != 0:
            assert isinstance(answer, dict) and isinstance(answer.get("code"), int) and answer.get("msg"), out
            assert sqlite_dump(url) == before, f"rejected ({answer}) but the store changed"
        tally.add(code == 0)

    case()
    tally.report()
    assert_invariants(store, sqlite_path=url[len("sqlite://"):])


EXEC_CASES = {
    "not JSON": ({"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c", "CNI_IFNAME": "eth0", "CNI_NETNS": "/x"}, b"\xff{"),
    "no command": ({}, b"{}"),
    "bad container id": ({"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "../x", "CNI_IFNAME": "eth0", "CNI_NETNS": "/x"},
                         None),
    "bad IP arg": ({"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c", "CNI_IFNAME": "eth0", "CNI_NETNS": "/x",
                    "CNI_ARGS": "IgnoreUnknown=1;IP=10.9.0.999"}, None),
    "unknown node": ({"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c", "CNI_IFNAME": "eth0", "CNI_NETNS": "/x"}, "ghost"),
}


@pytest.mark.parametrize("case", list(EXEC_CASES))
def test_exec_plugin_rejects_cleanly(world, case):
    """The installed plugin exec'd: the spec's error object, exit 1, no traceback, nothing changed."""
    from netns import PLUGIN, run_plugin

    url, _ = world
    env, stdin = EXEC_CASES[case]
    conf = {"cniVersion": "1.0.0", "name": "net", "type": "bridge",
            "ipam": {"type": "topoipam-cni", "nodename": "fuzz-node", "datastore": url, "agent_socket": ""}}
    if stdin == "ghost":
        conf["ipam"]["nodename"], stdin = "ghost", None
    before = sqlite_dump(url)
    call = run_plugin(PLUGIN, {"PATH": os.environ["PATH"], **env}, stdin if stdin is not None else conf)
    assert call.returncode == 1, call
    assert "Traceback" not in call.stderr
    answer = call.json
    assert isinstance(answer["code"], int) and answer["msg"]
    assert sqlite_dump(url) == before


# ---------------------------------------------------------------- ipam arguments

IPAM_WORDS = ["show", "check", "release", "configure", "split", "assign", "coverage", "explain", "headroom", "drift",
              "--show-blocks", "--ip", "--show-borrowed", "--show-configuration", "--handle", "--from-report",
              "--strictaffinity", "--max-blocks-per-host", "--cidr", "--name", "--node", "--ipv4", "--ipv6", "--pool",
              "--namespace", "--attr", "--show-problem-ips", "-o", "--output", "--label", "--labels", "--family",
              "--help", "-h", "fuzz-node", "fuzz-pool", "ghost", "10.9.0.5", "10.9.0.0/24", "10.9.0.300", "fd00::1",
              "0", "1", "2", "-1", "4", "99999999999999999999", "true", "false", "yes", "rack", "rack=0", "k=v", "=",
              "", " ", "report.json", "json", "yaml", "wide", "prometheus", "--", "-", "é", "\x00"]


def _safe(argv: list[str]) -> bool:
    """No path outside the test's working directory (``check -o`` and ``--from-report`` take file names)."""
    return not any(a.startswith(("/", "~")) or ".." in a or "=/" in a for a in argv)


def test_fuzz_ipam_arguments(world, tmp_path, monkeypatch):
    url, store = world
    monkeypatch.chdir(tmp_path)
    tally = Tally("ipam arguments (CLI main in-process)")
    words = st.one_of(st.sampled_from(IPAM_WORDS), st.text(max_size=12))

    @FUZZ
    @given(st.lists(words, max_size=6).filter(_safe))
    def case(argv):
        tally.add(cli_case(url, ["ipam", *argv]))

    case()
    tally.report()
    assert_invariants(store, sqlite_path=url[len("sqlite://"):])
