"""Progress on stderr only when stderr is a terminal: each long command run as a real process with its
stderr on a pseudo-terminal (the stdlib ``pty``) draws and then erases its progress line; with stderr on
a pipe the same command writes not one byte more than its own messages."""

from __future__ import annotations

import os
import pty
import subprocess
import sys

import pytest

from seed_yaml import NODES_YAML as NODES, RACK_POOLS

CLEAR = "\r\x1b[K"


def run(url: str, argv: list[str], tty: bool) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of ``topoipam --datastore url argv...``, stderr on a pty if ``tty``."""
    cmd = [sys.executable, "-m", "topoipam.cli.main", "--datastore", url, *argv]
    if not tty:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        return p.returncode, p.stdout, p.stderr
    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=slave, stdin=subprocess.DEVNULL)
        os.close(slave)
        slave = None
        chunks = []
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed its end
                break
            if not data:
                break
            chunks.append(data)
        out = proc.stdout.read().decode()
        proc.stdout.close()
        code = proc.wait(timeout=120)
    finally:
        if slave is not None:
            os.close(slave)
        os.close(master)
    return code, out, b"".join(chunks).decode().replace("\r\n", "\n")


@pytest.fixture
def world(cli, sqlite_url, tmp_path):
    assert cli("create", "-f", "-", stdin=NODES).code == 0
    for i in range(4):
        assert cli("label", "nodes", f"kube-node-{i}", f"rack={i // 2}").code == 0
    assert cli("create", "-f", "-", stdin=RACK_POOLS).code == 0
    for i in range(4):
        assert cli("ipam", "assign", "--node", f"kube-node-{i}", "--handle", f"w{i}").code == 0
    report = tmp_path / "report.json"
    assert cli("ipam", "check", "-o", str(report)).code == 0
    return sqlite_url, tmp_path


COMMANDS = {
    "coverage": (["ipam", "coverage"], "coverage: nodes: 4/4 (100%)"),
    "headroom": (["ipam", "headroom", "--by", "rack"], "headroom: domains: 2/2 (100%)"),
    "drift": (["ipam", "drift"], "drift: addresses: 4/4 (100%)"),
    "check": (["ipam", "check"], "check: 4 blocks read"),
    "map": (["ipam", "map", "-o", "{tmp}/m.svg", "--by", "rack"], "map: reading blocks: 4/4 (100%)"),
    "release": (["ipam", "release", "--from-report", "{tmp}/report.json"], None),
    "split": (["ipam", "split", "2", "--name", "rack-1-ippool"], "split: replacing pool rack-1-ippool by 2 pools"),
}


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_progress_only_on_a_terminal_and_erased(world, name):
    url, tmp = world
    argv, shown = COMMANDS[name]
    argv = [a.replace("{tmp}", str(tmp)) for a in argv]
    code, out, err = run(url, argv, tty=False)
    assert code == 0 and err == "", (code, out, err)  # a pipe: nothing but the command's own messages (none)
    if name in ("split", "map", "release"):
        return  # these changed the store or the file: their terminal run is the next test's world
    code2, out2, err2 = run(url, argv, tty=True)
    assert (code2, out2) == (code, out)  # the same answer
    assert CLEAR in err2 and err2.endswith(CLEAR)  # drawn, then the line erased
    assert shown in err2


@pytest.mark.parametrize("name", ["split", "map"])
def test_progress_of_writing_commands_on_a_terminal(world, name):
    url, tmp = world
    argv, shown = COMMANDS[name]
    code, out, err = run(url, [a.replace("{tmp}", str(tmp)) for a in argv], tty=True)
    assert code == 0, (out, err)
    assert shown in err and err.endswith(CLEAR)


def test_release_from_report_progress_is_erased_before_its_next_line(world, cli):
    url, tmp = world
    from topoipam.ipam import IpamService
    from topoipam.store import open_store

    store = open_store(url)
    try:  # two leaked addresses: allocated for a node that is not registered (ipam check's node-missing)
        for ip in ("192.168.0.10", "192.168.0.11"):
            IpamService(store).assign_ip(ip, f"ghost-{ip}", {"node": "ghost"}, "kube-node-0")
    finally:
        store.close()
    assert cli("ipam", "check", "-o", str(tmp / "leaks.json")).code == 4
    code, out, err = run(url, ["ipam", "release", "--from-report", str(tmp / "leaks.json")], tty=True)
    assert code == 0 and "Released 2 IPs successfully" in out, (out, err)
    assert "release: addresses: 2/2 (100%)" in err and err.endswith(CLEAR)


def test_redraws_are_throttled_and_the_last_one_always_drawn():
    import io

    from topoipam.cli.progress import Progress

    now = [0.0]
    stream = io.StringIO()
    bar = Progress(stream, "work", True, clock=lambda: now[0])
    for done in range(1, 1001):  # 1,000 updates within 50 ms: one first draw and the final one
        now[0] = done * 0.00005
        bar.update(done, 1000)
    assert stream.getvalue().count(CLEAR) == 2 and stream.getvalue().endswith("work: 1,000/1,000 (100%)")
    now[0] += 1
    bar.update(5)
    assert stream.getvalue().endswith(CLEAR + "work: 5")
    bar.close()
    assert stream.getvalue().endswith(CLEAR)
    quiet = io.StringIO()
    off = Progress(quiet, "work", False)
    off.stage("x")
    off.update(1, 2)
    off.close()
    assert quiet.getvalue() == ""
