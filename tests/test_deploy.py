"""deploy/ as shipped: deploy/install.sh into a temporary root, the installed systemd unit checked by
``systemd-analyze verify`` and its ExecStart run as systemd would (SQLite and etcd), and a podman
container whose network comes from the installed plugin and the installed conflist.

No systemd runs here as PID 1, so the unit is not started by systemd: its command line, environment
file and defaults are expanded the way systemd expands them and run directly. Podman runs inside a
network namespace the test made (``nsenter --net``: ``ip netns exec`` would remount /sys and hide
the cgroup mounts runc needs), so the bridge and its address live there, never on the machine's own
network; nothing is sent anywhere.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import tarfile
import time
from pathlib import Path

import pytest

from netns import Netns, netns_unavailable_reason

REPO = Path(__file__).resolve().parents[1]
SHIPPED_UNIT = REPO / "deploy" / "systemd" / "topoipam-agent.service"
SHIPPED_CONFLIST = REPO / "deploy" / "cni" / "10-topoipam.conflist"
POOL = "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: p1}\nspec: {cidr: 10.77.0.0/24}\n"

pytestmark = pytest.mark.slow


def install(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(REPO / "deploy" / "install.sh"), "--root", str(root), *args],
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("node")
    (root / "var" / "lib" / "topoipam").mkdir(parents=True)
    proc = install(root, "--datastore", f"sqlite://{root}/var/lib/topoipam/topoipam.db", "--node", "n1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return root


def topoipam(root: Path, *argv: str, stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run([str(root / "opt/topoipam/venv/bin/topoipam"), *argv], input=stdin,
                          capture_output=True, text=True, timeout=120)


def test_installed_unit_passes_systemd_analyze_verify(root):
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    unit = root / "etc/systemd/system/topoipam-agent.service"
    proc = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "topoipam-agent" not in proc.stderr, proc.stderr


def test_installed_files_are_the_shipped_ones_with_their_paths(root):
    socket = f"{root}/run/topoipam/agent.sock"
    expected = SHIPPED_UNIT.read_text().replace("/run/topoipam/agent.sock", socket)
    expected = expected.replace("/opt/topoipam", f"{root}/opt/topoipam").replace("/etc/topoipam", f"{root}/etc/topoipam")
    expected = expected.replace("ReadWritePaths=/run/topoipam", f"ReadWritePaths=/run/topoipam {root}/run/topoipam")
    assert (root / "etc/systemd/system/topoipam-agent.service").read_text() == expected
    conf = json.loads(SHIPPED_CONFLIST.read_text())
    conf["plugins"][0]["ipam"]["agent_socket"] = socket
    assert json.loads((root / "etc/cni/net.d/10-topoipam.conflist").read_text()) == conf
    plugin = root / "opt/cni/bin/topoipam-cni"
    assert os.access(plugin, os.X_OK) and plugin.resolve() == root / "opt/topoipam/venv/bin/topoipam-cni"
    # The lean launcher, not pip's console script (site, re), with its code cache built beside the package.
    assert plugin.read_text().startswith(f"#!{root}/opt/topoipam/venv/bin/python -IS\n")
    assert list((root / "opt/topoipam/venv/lib").glob("python3.*/site-packages/topoipam/__pycache__/cni-path.*.codecache"))
    env = root / "etc/topoipam/agent.env"
    assert env.stat().st_mode & 0o777 == 0o600
    assert f"TOPOIPAM_DATASTORE=sqlite://{root}/var/lib/topoipam/topoipam.db\n" in env.read_text()


def exec_start(root: Path) -> tuple[list[str], dict[str, str]]:
    """The unit's ExecStart as systemd runs it: Environment= defaults, then EnvironmentFile=, then
    ``${VAR}`` replaced as one word and ``$VAR`` split on whitespace."""
    env: dict[str, str] = {}
    command = ""
    for line in (root / "etc/systemd/system/topoipam-agent.service").read_text().splitlines():
        key, _, value = line.partition("=")
        if key == "Environment":
            name, _, val = value.partition("=")
            env[name] = val
        elif key == "EnvironmentFile":
            for entry in Path(value.lstrip("-")).read_text().splitlines():
                if entry.strip() and not entry.startswith("#"):
                    name, _, val = entry.partition("=")
                    env[name] = val
        elif key == "ExecStart":
            command = value
    env["TOPOIPAM_NODE"] = env["TOPOIPAM_NODE"].replace("%l", os.uname().nodename.split(".")[0])
    argv: list[str] = []
    for word in shlex.split(command):
        whole = re.fullmatch(r"\$\{(\w+)\}", word)
        split = re.fullmatch(r"\$(\w+)", word)
        if whole:
            argv.append(env.get(whole.group(1), ""))
        elif split:
            argv += env.get(split.group(1), "").split()
        else:
            argv.append(re.sub(r"\$\{(\w+)\}", lambda m: env.get(m.group(1), ""), word))
    return argv, env


class Agent:
    """The unit's ExecStart, started and stopped by pid (SIGTERM, as systemd's KillSignal)."""

    def __init__(self, root: Path) -> None:
        argv, env = exec_start(root)
        self.socket = Path(argv[argv.index("--socket") + 1])
        self.proc = subprocess.Popen(argv, env={**os.environ, **env}, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.socket.exists():
            assert self.proc.poll() is None, self.proc.stdout.read()
            assert time.monotonic() < deadline, "the agent did not open its socket"
            time.sleep(0.1)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=90)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()


@pytest.mark.parametrize("backend", ["sqlite", "etcd"])
def test_unit_exec_start_serves_on_both_datastores(root, backend, request):
    if backend == "etcd":
        server = request.getfixturevalue("etcd_server")
        server.wipe()
        url = server.url()
    else:
        url = f"sqlite://{root}/var/lib/topoipam/topoipam.db"
    assert install(root, "--datastore", url).returncode == 0  # re-running the installer changes the setting
    try:
        agent = Agent(root)
        agent.wait_ready()
        nodes = topoipam(root, "--datastore", url, "get", "nodes")
        assert nodes.returncode == 0 and "n1" in nodes.stdout.split()
    finally:
        code = agent.stop()
        install(root, "--datastore", f"sqlite://{root}/var/lib/topoipam/topoipam.db")
    assert code == 0


def test_unit_without_a_datastore_exits_2_and_is_not_restarted(root, tmp_path):
    env_file = root / "etc/topoipam/agent.env"
    saved = env_file.read_text()
    env_file.write_text("TOPOIPAM_NODE=n1\n")  # the datastore line is missing
    try:
        argv, env = exec_start(root)
        proc = subprocess.run(argv, env={**os.environ, **env}, capture_output=True, text=True, timeout=60)
    finally:
        env_file.write_text(saved)
    assert proc.returncode == 2 and "--datastore is empty" in proc.stderr, proc.stderr
    assert "RestartPreventExitStatus=2" in SHIPPED_UNIT.read_text().splitlines()


def _podman_unavailable() -> str | None:
    reason = netns_unavailable_reason()
    if reason:
        return reason
    for tool in ("podman", "runc", "nsenter"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (apt-get install podman runc busybox-static)"
    if not Path("/bin/busybox").exists():
        return "busybox-static is not installed"
    return None


def _busybox_image(tmp: Path) -> Path:
    """A root file system tarball holding busybox and the applets the test runs."""
    tar_path = tmp / "rootfs.tar"
    with tarfile.open(tar_path, "w") as tar:
        tar.add("/bin/busybox", "bin/busybox")
        for applet in ("sh", "ip"):
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type, link.linkname = tarfile.SYMTYPE, "busybox"
            tar.addfile(link)
    return tar_path


def _podman_env(root: Path, tmp: Path) -> dict[str, str]:
    hard = int(subprocess.run(["sh", "-c", "ulimit -Hn"], capture_output=True, text=True).stdout.strip() or 1024)
    (tmp / "containers.conf").write_text(f"""[containers]
default_ulimits = ["nofile={min(hard, 4096)}:{min(hard, 4096)}", "nproc=4096:4096"]
[network]
network_backend = "cni"
cni_plugin_dirs = ["{root}/opt/cni/bin", "/usr/lib/cni"]
network_config_dir = "{root}/etc/cni/net.d"
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
""")
    (tmp / "storage.conf").write_text(f"""[storage]
driver = "vfs"
graphroot = "{tmp}/storage"
runroot = "{tmp}/runroot"
""")
    return {**os.environ, "CONTAINERS_CONF": str(tmp / "containers.conf"),
            "CONTAINERS_STORAGE_CONF": str(tmp / "storage.conf")}


@pytest.mark.netns
def test_podman_container_gets_its_address_from_the_installed_plugin(root, tmp_path):
    reason = _podman_unavailable()
    if reason:
        pytest.skip(reason)
    url = f"sqlite://{root}/var/lib/topoipam/topoipam.db"
    assert topoipam(root, "--datastore", url, "apply", "-f", "-", stdin=POOL).returncode == 0
    env = _podman_env(root, tmp_path)
    podman = ["podman", "--log-level", "error"]
    subprocess.run([*podman, "import", "-q", str(_busybox_image(tmp_path)), "localhost/tpi-busybox:1"],
                   env=env, check=True, capture_output=True, timeout=120)
    agent = Agent(root)
    try:
        agent.wait_ready()
        with Netns() as ns:
            host = ns.add("podhost")
            run = subprocess.run(["nsenter", f"--net=/run/netns/{host}", *podman, "run", "--rm",
                                  "--network", "k8s-pod-network", "localhost/tpi-busybox:1", "/bin/ip", "-4", "-o",
                                  "addr", "show", "eth0"], env=env, capture_output=True, text=True, timeout=180)
            assert run.returncode == 0, run.stderr
            address = re.search(r"inet (10\.77\.0\.\d+)/26", run.stdout)
            assert address, run.stdout
            blocks = topoipam(root, "--datastore", url, "ipam", "show", "--show-blocks").stdout
            assert "10.77.0." in blocks
            # --rm: podman ran CNI DEL when the container stopped, so the address is free again
            shown = topoipam(root, "--datastore", url, "ipam", "show", "--ip", address.group(1))
            assert "is not assigned" in shown.stdout + shown.stderr, shown.stdout + shown.stderr
    finally:
        assert agent.stop() == 0
        subprocess.run([*podman, "rm", "-a", "-f"], env=env, capture_output=True, timeout=120)
        subprocess.run([*podman, "rmi", "-a", "-f"], env=env, capture_output=True, timeout=120)


# --- the DaemonSet and its image ------------------------------------------------------------------
MANIFEST = REPO / "deploy" / "kubernetes" / "topoipam.yaml"
CONTAINERFILE = REPO / "deploy" / "Containerfile"


def _manifest() -> dict[str, dict]:
    import yaml

    return {doc["kind"]: doc for doc in yaml.safe_load_all(MANIFEST.read_text()) if doc}


def test_daemonset_manifest_is_consistent_with_the_image_and_the_conflist():
    docs = _manifest()
    assert set(docs) == {"Namespace", "ServiceAccount", "ConfigMap", "DaemonSet"}
    assert json.loads(docs["ConfigMap"]["data"]["cni-conf"]) == json.loads(SHIPPED_CONFLIST.read_text())
    pod = docs["DaemonSet"]["spec"]["template"]["spec"]
    volumes = {v["name"] for v in pod["volumes"]}
    containers = pod["initContainers"] + pod["containers"]
    for container in containers:
        assert {m["name"] for m in container["volumeMounts"]} <= volumes, container["name"]
    assert len({c["image"] for c in containers}) == 1
    image_text = CONTAINERFILE.read_text()
    agent = pod["containers"][0]
    assert agent["command"] == ["/opt/topoipam/venv/bin/topoipam"] and "/opt/topoipam/venv" in image_text
    assert "make-cni-pyz.py /opt/topoipam/topoipam-cni" in image_text
    assert "--datastore=$(TOPOIPAM_DATASTORE)" in agent["args"]


@pytest.mark.skipif(os.geteuid() != 0 or not Path("/bin/busybox").exists() or not Path("/usr/bin/python3").exists(),
                    reason="needs root (chroot), busybox-static and the system's /usr/bin/python3")
def test_daemonset_init_script_installs_a_plugin_that_runs_on_the_hosts_python(tmp_path):
    """The init container's script, exactly as shipped, run in a chroot laid out as the image and its
    mounts; then the installed file serves an ADD on the system's python3, which has no topoipam."""
    import yaml  # noqa: F401  (the manifest is YAML)

    docs = _manifest()
    init = docs["DaemonSet"]["spec"]["template"]["spec"]["initContainers"][0]
    chroot = tmp_path / "image"
    for d in ("bin", "opt/topoipam", "config", "host/opt/cni/bin", "host/etc/cni/net.d"):
        (chroot / d).mkdir(parents=True)
    shutil.copy("/bin/busybox", chroot / "bin/busybox")
    for applet in ("sh", "cp", "chmod", "mv"):
        (chroot / "bin" / applet).symlink_to("busybox")
    made = subprocess.run(["/usr/bin/python3", str(REPO / "deploy/make-cni-pyz.py"),
                           str(chroot / "opt/topoipam/topoipam-cni")], capture_output=True, text=True, timeout=120)
    assert made.returncode == 0, made.stderr
    (chroot / "config/cni-conf").write_text(docs["ConfigMap"]["data"]["cni-conf"])
    proc = subprocess.run([shutil.which("chroot") or "/usr/sbin/chroot", str(chroot), *init["command"], *init["args"]], capture_output=True, text=True,
                          timeout=60, env={"PATH": "/bin"})
    assert proc.returncode == 0, proc.stderr
    plugin = chroot / "host/opt/cni/bin/topoipam-cni"
    assert os.access(plugin, os.X_OK)
    assert plugin.read_bytes().startswith(b"#!/usr/bin/python3 -IS\n")
    conf = json.loads((chroot / "host/etc/cni/net.d/10-topoipam.conflist").read_text())
    assert conf == json.loads(SHIPPED_CONFLIST.read_text())

    from agent_proc import AgentProc

    url = f"sqlite://{tmp_path}/t.db"
    subprocess.run([str(REPO / ".venv/bin/topoipam"), "--datastore", url, "create", "-f", "-"], input=POOL,
                   check=True, capture_output=True, text=True, timeout=60)
    agent = AgentProc(tmp_path, url, "n1").start()
    try:
        netconf = {**conf["plugins"][0], "cniVersion": conf["cniVersion"], "name": conf["name"]}
        netconf["ipam"] = {**netconf["ipam"], "agent_socket": agent.socket}  # what install.sh substitutes
        env = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c1", "CNI_NETNS": "/run/netns/c1", "CNI_IFNAME": "eth0",
               "CNI_PATH": "/opt/cni/bin", "PATH": "/usr/bin:/bin"}
        add = subprocess.run([str(plugin)], input=json.dumps(netconf), capture_output=True, text=True, env=env,
                             timeout=60)
        assert add.returncode == 0, add.stdout + add.stderr
        assert json.loads(add.stdout)["ips"][0]["address"].startswith("10.77.0.")
        delete = subprocess.run([str(plugin)], input=json.dumps(netconf), capture_output=True, text=True,
                                env={**env, "CNI_COMMAND": "DEL"}, timeout=60)
        assert delete.returncode == 0, delete.stdout
    finally:
        assert agent.stop() == 0
