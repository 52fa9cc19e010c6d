"""Helpers for tests that drive CNI plugins the way a container runtime does.

* ``run_plugin``: exec a plugin with the CNI environment and a JSON config on
  stdin; returns exit code, decoded stdout and stderr.
* ``cni_bin_dir``: a ``CNI_PATH`` directory holding the reference plugins
  (Debian's containernetworking-plugins, /usr/lib/cni) and ``topoipam-cni``.
* ``Netns``: network namespaces with unique names that the test creates and
  always deletes (``ip netns add/del``), and ``addresses`` to read what a
  plugin configured inside one (``ip -n NS -j addr``).

Bridges are created inside a namespace the test owns ("host" namespace), never
in the machine's own: nothing here touches or sends traffic on a real network.
"""

from __future__ import annotations

import itertools
import json
import os
import pathlib
import shutil
import subprocess
import sys
from dataclasses import dataclass
from typing import Any

REPO = pathlib.Path(__file__).resolve().parents[1]
VENV_BIN = REPO / ".venv" / "bin"
PLUGIN = VENV_BIN / "topoipam-cni"
REFERENCE_DIR = pathlib.Path("/usr/lib/cni")
IP = shutil.which("ip") or "/usr/sbin/ip"
_counter = itertools.count()


def netns_unavailable_reason() -> str | None:
    """Why network namespaces cannot be made here, or None when they can."""
    if os.geteuid() != 0:
        return "network namespaces need root (run the suite as root, as CI does)"
    if not os.path.exists(IP):
        return "iproute2 (ip) is not installed"
    if not (REFERENCE_DIR / "bridge").exists():
        return "the reference CNI plugins are not installed (apt-get install containernetworking-plugins)"
    probe = unique_name("probe")
    made = subprocess.run([IP, "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"ip netns add failed: {made.stderr.strip()}"
    subprocess.run([IP, "netns", "del", probe], capture_output=True)
    return None


def unique_name(kind: str) -> str:
    return f"tpi-{kind}-{os.getpid()}-{next(_counter)}"


@dataclass
class PluginCall:
    returncode: int
    stdout: str
    stderr: str

    @property
    def json(self) -> Any:
        return json.loads(self.stdout) if self.stdout.strip() else None


def cni_env(command: str, *, container_id: str | None = None, netns: str | None = None,
            ifname: str | None = "eth0", args: str | None = None, path: str | None = None,
            extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment a runtime gives a plugin; None leaves a variable out."""
    env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), "CNI_COMMAND": command}
    for name, value in (("CNI_CONTAINERID", container_id), ("CNI_NETNS", netns), ("CNI_IFNAME", ifname),
                        ("CNI_ARGS", args), ("CNI_PATH", path)):
        if value is not None:
            env[name] = value
    env.update(extra or {})
    return env


def run_plugin(plugin: str | os.PathLike, env: dict[str, str], stdin: bytes | str | dict,
               *, in_netns: str | None = None, timeout: float = 60) -> PluginCall:
    """Exec ``plugin`` as a runtime does; ``in_netns`` runs it inside that namespace (ip netns exec)."""
    if isinstance(stdin, dict):
        stdin = json.dumps(stdin)
    if isinstance(stdin, str):
        stdin = stdin.encode()
    cmd = [str(plugin)] if in_netns is None else [IP, "netns", "exec", in_netns, str(plugin)]
    proc = subprocess.run(cmd, input=stdin, env=env, capture_output=True, timeout=timeout)
    return PluginCall(proc.returncode, proc.stdout.decode(), proc.stderr.decode())


def cni_bin_dir(directory: pathlib.Path) -> pathlib.Path:
    """A CNI_PATH directory: symlinks to the reference plugins and to the installed topoipam-cni."""
    directory.mkdir(parents=True, exist_ok=True)
    for plugin in REFERENCE_DIR.iterdir():
        (directory / plugin.name).symlink_to(plugin)
    (directory / "topoipam-cni").symlink_to(PLUGIN)
    return directory


class Netns:
    """Network namespaces created by the test; ``close`` deletes every one (call it in finally)."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def add(self, kind: str) -> str:
        name = unique_name(kind)
        subprocess.run([IP, "netns", "add", name], check=True, capture_output=True)
        self.names.append(name)
        subprocess.run([IP, "-n", name, "link", "set", "lo", "up"], check=True, capture_output=True)
        return name

    @staticmethod
    def path(name: str) -> str:
        return f"/run/netns/{name}"

    def close(self) -> None:
        for name in reversed(self.names):
            subprocess.run([IP, "netns", "del", name], capture_output=True)
        self.names.clear()

    def __enter__(self) -> "Netns":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def addresses(netns: str, ifname: str) -> list[str]:
    """Global addresses (CIDR form) on ``ifname`` inside ``netns``."""
    out = subprocess.run([IP, "-n", netns, "-j", "addr", "show", "dev", ifname],
                         check=True, capture_output=True, text=True).stdout
    return [f"{a['local']}/{a['prefixlen']}" for link in json.loads(out) for a in link.get("addr_info", [])
            if a.get("scope") == "global"]


def link_exists(netns: str, ifname: str) -> bool:
    return subprocess.run([IP, "-n", netns, "link", "show", "dev", ifname], capture_output=True).returncode == 0


def python() -> str:
    """The venv's interpreter: a symlink to the real binary (not a version-manager shim), so the venv applies."""
    return str(VENV_BIN / "python3") if (VENV_BIN / "python3").exists() else sys.executable
