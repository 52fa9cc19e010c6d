"""Helpers for the agent and cluster tests: real agent processes, real plugin execs, load workers.

* ``AgentProc``: ``.venv/bin/topoipam agent ...`` as a child process (its log in a
  file); ``stop()`` sends SIGTERM by pid and waits, ``kill()`` SIGKILLs by pid.
* ``exec_cni``: exec the installed ``topoipam-cni`` with a netconf naming the
  agent's socket, as a runtime does.
* ``socket_worker`` / ``service_worker``: load generators run in spawned
  processes; every acknowledged assignment is written (and flushed) to a file
  as soon as it is acknowledged, so a checker knows exactly what was promised.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

from netns import PLUGIN, VENV_BIN, PluginCall, cni_env, run_plugin

TOPOIPAM = VENV_BIN / "topoipam"


class AgentProc:
    def __init__(self, tmp: Path, url: str, node: str, labels: dict[str, str] | None = None,
                 socket_path: str | None = None, *, extra_args: tuple[str, ...] = (),
                 prefix: tuple[str, ...] = ()) -> None:
        """``extra_args`` follow the agent's own; ``prefix`` runs it under another command (e.g. ip netns exec)."""
        self.node, self.url = node, url
        self.extra_args, self.prefix = tuple(extra_args), tuple(prefix)
        self.socket = socket_path or str(tmp / f"agent-{node}.sock")
        self.log_path = tmp / f"agent-{node}.log"
        self.labels = labels or {}
        self.proc: subprocess.Popen | None = None
        self._log_start = 0

    def start(self, wait: bool = True) -> "AgentProc":
        args = [*self.prefix, str(TOPOIPAM), "agent", "--node", self.node, "--socket", self.socket,
                "--datastore", self.url, *self.extra_args]
        for k, v in self.labels.items():
            args += ["--label", f"{k}={v}"]
        # The log is appended to across restarts: readiness is judged on what this start wrote.
        self._log_start = self.log_path.stat().st_size if self.log_path.exists() else 0
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        if wait:
            self.wait_ready()
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Until the node is registered (the agent logs it) and the socket exists."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"agent {self.node} exited {self.proc.returncode}: {self.log()[-2000:]}")
            text = self.log()[self._log_start:]
            if os.path.exists(self.socket) and f"node {self.node} " in text and "(labels" in text:
                return
            time.sleep(0.05)
        raise RuntimeError(f"agent {self.node} not ready after {timeout}s: {self.log()[-2000:]}")

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM by pid; the exit code."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.kill(self.proc.pid, signal.SIGUSR1)  # the agent dumps every thread's stack into its log
            time.sleep(1.0)
            raise AssertionError(f"agent {self.node} still running {timeout}s after SIGTERM; its log ends:\n"
                                 f"{self.log()[-6000:]}") from None
        finally:
            self.kill()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)


def netconf(socket_path: str | None, *, name: str = "net", version: str = "1.0.0", **ipam) -> dict:
    conf = {"cniVersion": version, "name": name, "type": "bridge", "ipam": {"type": "topoipam-cni", **ipam}}
    if socket_path is not None:
        conf["ipam"]["agent_socket"] = socket_path
    return conf


def exec_cni(command: str, socket_path: str | None, container_id: str, *, timeout: float = 60, **ipam) -> PluginCall:
    env = cni_env(command, container_id=container_id, netns=f"/var/run/netns/{container_id}",
                  args="IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=" + container_id)
    version = "1.1.0" if command in ("GC", "STATUS") else "1.0.0"
    return run_plugin(PLUGIN, env, netconf(socket_path, version=version, **ipam), timeout=timeout)


def add_env(container_id: str) -> dict[str, str]:
    return {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": container_id, "CNI_NETNS": f"/var/run/netns/{container_id}",
            "CNI_IFNAME": "eth0", "CNI_ARGS": "IgnoreUnknown=1;K8S_POD_NAMESPACE=default"}


def _record(out, **fields) -> None:
    out.write(json.dumps({"t": time.time(), **fields}) + "\n")
    out.flush()


def socket_worker(sockets: list[str], count: int, out_path: str, tag: str, deadline_s: float = 150.0) -> None:
    """``count`` ADDs through the agents' sockets (round robin), in-process client, one container each."""
    from topoipam.cni.agent_client import AgentUnavailable, call

    stdin = json.dumps(netconf(None)).encode()
    end = time.monotonic() + deadline_s
    with open(out_path, "w") as out:
        done = attempt = 0
        while done < count and time.monotonic() < end:
            sock = sockets[attempt % len(sockets)]
            cid = f"{tag}-{attempt}"
            attempt += 1
            try:
                code, stdout = call(sock, add_env(cid), stdin)
            except AgentUnavailable as exc:
                _record(out, error="unavailable", msg=str(exc)[:200])
                time.sleep(0.02)
                continue
            answer = json.loads(stdout)
            if code != 0:
                _record(out, error=answer.get("code"), msg=answer.get("msg", "")[:200])
                time.sleep(0.02)
                continue
            _record(out, ip=answer["ips"][0]["address"].split("/")[0], handle=f"net.{cid}:eth0", socket=sock)
            done += 1


def service_worker(url: str, nodes: list[str], count: int, out_path: str, tag: str, deadline_s: float = 150.0) -> None:
    """``count`` assignments through the IPAM service on the datastore, one handle each, nodes round robin."""
    from topoipam.errors import TopoipamError
    from topoipam.ipam import AssignRequest, IpamService
    from topoipam.store import open_store

    store = open_store(url)
    svc = IpamService(store)
    end = time.monotonic() + deadline_s
    try:
        with open(out_path, "w") as out:
            done = attempt = 0
            while done < count and time.monotonic() < end:
                node = nodes[attempt % len(nodes)]
                handle = f"{tag}.{attempt}"
                attempt += 1
                try:
                    res = svc.auto_assign(AssignRequest(node=node, handle=handle, num4=1, attrs={"node": node}))
                except TopoipamError as exc:
                    _record(out, error=type(exc).__name__, msg=str(exc)[:200])
                    time.sleep(0.02)
                    continue
                _record(out, ip=str(res.ipv4[0].ip), handle=handle, node=node)
                done += 1
    finally:
        store.close()


def read_records(paths) -> tuple[list[dict], list[dict]]:
    """(acknowledged assignments, errors) from workers' files."""
    acks, errors = [], []
    for path in paths:
        if not os.path.exists(path):
            continue
        for line in Path(path).read_text().splitlines():
            rec = json.loads(line)
            (errors if "error" in rec else acks).append(rec)
    return acks, errors


def count_acks(paths) -> int:
    n = 0
    for path in paths:
        try:
            n += sum(1 for line in Path(path).read_text().splitlines() if '"ip"' in line)
        except FileNotFoundError:
            pass
    return n
