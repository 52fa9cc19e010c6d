"""``topoipam demo``: the seed tutorial end to end, every command shown with its real output.

The tutorial (Calico's "assign IP addresses based on topology"): install
(``init``), four nodes in two racks, list the pools, delete the default pool,
label the nodes by rack, create one pool per rack exactly as the seed writes
them, list the pools, run five nginx pods over the four nodes, list them with
their addresses, and check that every address lies in its rack's pool. Then
the seed's closing note made visible: relabel kube-node-1 into rack 1; its
running pod keeps its rack-0 address, the pod recreated (CNI DEL + ADD) gets
a rack-1 address, and ``ipam check`` is clean.

Everything runs for real on a throwaway SQLite file in a temporary directory
(removed at the end), named by ``TOPOIPAM_DATASTORE`` while the demo runs:
``$ topoipam ...`` lines run the real CLI entry point in-process, and pods
get their addresses from the CNI plugin's request handler
(``cni.handler.respond``, what ``topoipam-cni`` runs), with the environment
and network configuration a container runtime would pass. The closing
checks compare against the seed's own figures (rack r = 192.168.r.0/24), not
against what topoipam computed; the demo exits 0 only if all of them hold.
"""

from __future__ import annotations

import contextlib
import io
import ipaddress
import json
import os
import sys

from topoipam.errors import EXIT_FAILED

NODES = [f"kube-node-{i}" for i in range(4)]
RACK_OF = {node: i // 2 for i, node in enumerate(NODES)}
RACK_CIDR = {rack: ipaddress.ip_network(f"192.168.{rack}.0/24") for rack in (0, 1)}
# The seed's pods and the nodes it shows them on.
PODS = [("nginx-5c7588df-prx4z", "kube-node-0"), ("nginx-5c7588df-s7qw6", "kube-node-1"),
        ("nginx-5c7588df-w7r7g", "kube-node-2"), ("nginx-5c7588df-62lnf", "kube-node-3"),
        ("nginx-5c7588df-pnsvv", "kube-node-2")]
MOVED_POD, RECREATED_POD, MOVED_NODE = "nginx-5c7588df-s7qw6", "nginx-5c7588df-k8vz2", "kube-node-1"
NETWORK = "k8s-pod-network"

NODES_YAML = "".join(f"---\napiVersion: projectcalico.org/v3\nkind: Node\nmetadata:\n  name: {n}\n" for n in NODES)
# Exactly the seed's here-documents.
RACK_POOL = """\
apiVersion: projectcalico.org/v3
kind: IPPool
metadata:
  name: rack-{rack}-ippool
spec:
  cidr: 192.168.{rack}.0/24
  ipipMode: Always
  natOutgoing: true
  nodeSelector: rack == "{rack}"
"""
# What calico-node / init read: the demo runs with none of them set, as a fresh install.
CLEARED_ENV_PREFIXES = ("CALICO_IPV4POOL_", "CALICO_IPV6POOL_")
CLEARED_ENV = ("NO_DEFAULT_POOLS", "FELIX_IPV6SUPPORT")


class DemoFailed(Exception):
    pass


def register(subparsers) -> None:
    text = "Run the seed tutorial end to end on a throwaway datastore, showing every command and its output."
    p = subparsers.add_parser("demo", help=text, description=text + " Exit 0 only if every check holds. "
                              "--datastore is ignored: the demo makes its own SQLite file in a temporary "
                              "directory and removes it at the end.")
    p.set_defaults(run=run_demo)


def container_id(pod: str) -> str:
    import hashlib  # imported here: every `topoipam` command registers this module

    return hashlib.sha256(pod.encode()).hexdigest()[:12]


class Demo:
    def __init__(self, out) -> None:
        self.out = out
        self.results: dict[str, ipaddress.IPv4Interface] = {}

    def say(self, text: str = "") -> None:
        self.out.write(text + "\n")

    def step(self, text: str) -> None:
        self.say()
        self.say(f"# {text}")

    def cli(self, *argv: str, stdin: str | None = None, expect: int = 0) -> str:
        from topoipam.cli.main import main

        shown = " ".join(argv)
        self.say(f"$ topoipam {shown}" + (" <<EOF" if stdin is not None else ""))
        if stdin is not None:
            self.out.write(stdin)
            self.say("EOF")
        out, err = io.StringIO(), io.StringIO()
        saved_in = sys.stdin
        sys.stdin = io.StringIO(stdin or "")
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                code = main(list(argv))
        finally:
            sys.stdin = saved_in
        self.out.write(out.getvalue() + err.getvalue())
        if code != expect:
            raise DemoFailed(f"'topoipam {shown}' exited {code}, expected {expect}")
        return out.getvalue()

    def cni(self, command: str, pod: str, node: str) -> dict | None:
        """One plugin invocation through the plugin's own request handler, as the runtime on ``node`` makes it."""
        from topoipam.cni.handler import respond
        from topoipam.ipam import IpamService
        from topoipam.store import open_store

        cid = container_id(pod)
        env = {"CNI_COMMAND": command, "CNI_CONTAINERID": cid, "CNI_NETNS": f"/var/run/netns/cni-{cid}",
               "CNI_IFNAME": "eth0", "CNI_ARGS": f"K8S_POD_NAMESPACE=default;K8S_POD_NAME={pod}",
               "CNI_PATH": "/opt/cni/bin"}
        conf = {"cniVersion": "1.0.0", "name": NETWORK, "ipam": {"type": "topoipam-cni", "nodename": node}}
        self.say(f"$ CNI_COMMAND={command} CNI_CONTAINERID={cid} CNI_IFNAME=eth0 "
                 f"CNI_ARGS='K8S_POD_NAMESPACE=default;K8S_POD_NAME={pod}' topoipam-cni   # on {node}")
        stores = []

        def open_backend(url):
            stores.append(open_store(url))
            return stores[-1], IpamService(stores[-1])

        try:
            code, out = respond(env, json.dumps(conf).encode(), open_backend)
        finally:
            for s in stores:
                s.close()
        result = json.loads(out) if out else None
        if result is not None:
            self.say(json.dumps(result))
        if code != 0:
            raise DemoFailed(f"CNI {command} of {pod} on {node} failed: {out.decode().strip()}")
        if command == "ADD":
            self.results[pod] = ipaddress.ip_interface(result["ips"][0]["address"])
        return result

    def check(self, ok: bool, good: str, bad: str) -> None:
        self.say(f"CHECK {'OK' if ok else 'FAILED'}: {good if ok else bad}")
        if not ok:
            raise DemoFailed(bad)

    # ------------------------------------------------------------ the tutorial

    def run(self) -> None:
        self.say("# topoipam demo: Calico's \"assign IP addresses based on topology\" tutorial, end to end.")
        self.say("# Two racks of two nodes; rack-0 gets 192.168.0.0/24, rack-1 gets 192.168.1.0/24.")
        self.say("# A throwaway SQLite datastore (TOPOIPAM_DATASTORE, in a temporary directory) is used and removed.")
        self.step("Install: the default pool Calico creates when none is configured.")
        self.cli("init")
        self.step("The four nodes of the cluster (kubelet registers them; here from YAML).")
        self.cli("create", "-f", "-", stdin=NODES_YAML)
        self.cli("get", "ippool", "-o", "wide")
        self.step("1. Delete the default pool: it takes the whole /16.")
        self.cli("delete", "ippools", "default-ipv4-ippool")
        self.step("2. Label the nodes by rack.")
        for node in NODES:
            self.cli("label", "nodes", node, f"rack={RACK_OF[node]}")
        self.step("3. One pool per rack, selecting the rack's nodes.")
        for rack in (0, 1):
            self.cli("create", "-f", "-", stdin=RACK_POOL.format(rack=rack))
        self.cli("get", "ippool", "-o", "wide")
        self.pods()
        self.relabel()

    def pods(self) -> None:
        self.step("4. kubectl run nginx --image nginx --replicas 5: five pods over the four nodes. For each pod the")
        self.say("#    container runtime of its node calls the CNI IPAM plugin (ADD); here its request handler runs")
        self.say("#    in-process with the same environment and this network config (result shown on one line):")
        self.say(f"#    {json.dumps({'cniVersion': '1.0.0', 'name': NETWORK, 'ipam': {'type': 'topoipam-cni', 'nodename': '<node>'}})}")
        for pod, node in PODS:
            self.cni("ADD", pod, node)
        self.cli("get", "workloadendpoints", "-o", "wide")
        wrong = [f"{pod} on {node} (rack {RACK_OF[node]}) got {self.results[pod].ip}, outside "
                 f"{RACK_CIDR[RACK_OF[node]]}" for pod, node in PODS if self.results[pod].ip not in RACK_CIDR[RACK_OF[node]]]
        self.check(not wrong, f"all {len(PODS)} addresses lie in their rack's pool "
                   f"(rack 0: {RACK_CIDR[0]}, rack 1: {RACK_CIDR[1]})", "; ".join(wrong))

    def relabel(self) -> None:
        kept = self.results[MOVED_POD]
        self.step("Note: IPAM does not move running workloads. Move kube-node-1 to rack 1:")
        self.cli("label", "nodes", MOVED_NODE, "rack=1", "--overwrite")
        self.cli("get", "workloadendpoints", "-o", "wide")
        shown = self.cli("ipam", "show", "--ip", str(kept.ip))
        self.check(f"IP {kept.ip} is in use" in shown and f"pod: {MOVED_POD}" in shown and kept.ip in RACK_CIDR[0],
                   f"running pod {MOVED_POD} kept {kept.ip} (rack-0's pool {RACK_CIDR[0]})",
                   f"running pod {MOVED_POD} lost {kept.ip}")
        self.step("Recreate the pod (the runtime's CNI DEL, then ADD for its replacement): it gets a rack-1 address.")
        self.cni("DEL", MOVED_POD, MOVED_NODE)
        self.cni("ADD", RECREATED_POD, MOVED_NODE)
        self.cli("get", "workloadendpoints", "-o", "wide")
        new = self.results[RECREATED_POD]
        self.check(new.ip in RACK_CIDR[1], f"recreated pod {RECREATED_POD} on {MOVED_NODE} got {new.ip} "
                   f"(rack-1's pool {RACK_CIDR[1]})", f"recreated pod {RECREATED_POD} got {new.ip}, outside "
                   f"{RACK_CIDR[1]}")
        self.step("kube-node-1's emptied rack-0 block went back (its pool no longer selects the node); IPAM is consistent.")
        self.cli("ipam", "show", "--show-blocks")
        self.cli("ipam", "check")
        self.say()
        self.say("Demo complete: every check holds.")


@contextlib.contextmanager
def _demo_environment(url: str):
    """TOPOIPAM_DATASTORE names the throwaway file; the pool variables ``init`` reads are cleared."""
    saved = dict(os.environ)
    for name in list(os.environ):
        if name.startswith(CLEARED_ENV_PREFIXES) or name in CLEARED_ENV:
            del os.environ[name]
    os.environ["TOPOIPAM_DATASTORE"] = url
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def run_demo(args, ctx) -> int:
    import shutil
    import tempfile

    workdir = tempfile.mkdtemp(prefix="topoipam-demo-")
    demo = Demo(ctx.out)
    try:
        with _demo_environment(f"sqlite://{workdir}/topoipam.db"):
            demo.run()
    except DemoFailed as exc:
        ctx.out.flush()
        print(f"demo failed: {exc}", file=ctx.err)
        return EXIT_FAILED
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0
