"""The node agent: one datastore connection, the node's registration and tunnel addresses, the CNI socket.

    agent = Agent(store, node="kube-node-0", labels={"rack": "0"}, socket_path="/run/topoipam/agent.sock")
    agent.start()          # serve at once; register the node as soon as the datastore answers
    ...
    agent.stop()           # SIGTERM: stop accepting, finish in-flight requests, remove the socket

Requests are served by ``cni.handler.respond`` in-process against the agent's
store and its one ``IpamService``, which keeps the topology and the node's
blocks and affinities between requests (``ipam/topology.py``, ``ipam/cache.py``)
and fences every assignment commit on the topology generation and the node's
key, so nothing it keeps can make a landed decision wrong. The topology watch
(``agent.watch``) tells the service to drop its kept topology when a pool, the
IPAM config, a reservation or the Node changes (saving the refused commit that
would otherwise find out). The netconf's ``datastore`` is ignored (the agent
has its own) and its ``nodename`` defaults to the agent's node. Until the node
is registered every request is answered with CNI code 11, as are requests
while the datastore is unreachable (the store fails fast, so no request hangs).

With ``routes=True`` (``--routes blackhole``) the agent also keeps a blackhole
route per affine block in the node's routing table (``agent.routes``).

A maintenance thread registers the node (retrying while the datastore is away)
and keeps the tunnel addresses in line whenever the watch reports a change,
retrying with backoff after a failure.

A garbage-collection thread runs ``ipam.gc.collect`` every ``gc_interval`` seconds (0: never):
the same decision and fenced releases as ``topoipam ipam gc``, with no lock. It keeps
``first_seen`` between passes, so a holder without a timestamp is released once it has stayed
unchanged for ``gc_grace``. Every release is logged with who held it, since when and why.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Mapping

from topoipam import errors as E
from topoipam.agent.node import reconcile_tunnels, register_node
from topoipam.agent.routes import BlockRoutes
from topoipam.agent.server import SLOW_REQUEST, AgentServer
from topoipam.agent.watch import TopologyWatch
from topoipam.cni import protocol as P
from topoipam.cni.agent_client import DEFAULT_SOCKET, request_version
from topoipam.cni.handler import respond
from topoipam.ipam import IpamService
from topoipam.store.base import Store

log = logging.getLogger("topoipam.agent")

RETRY_AFTER_FAILURE = 2.0  # seconds between maintenance attempts while the datastore is away
DEFAULT_GC_INTERVAL = 300.0  # seconds between garbage-collection passes


class Agent:
    def __init__(self, store: Store, node: str, labels: Mapping[str, str] | None = None,
                 socket_path: str = DEFAULT_SOCKET, *, poll_interval: float = 1.0, max_in_flight: int = 32,
                 routes: bool = False, gc_interval: float = DEFAULT_GC_INTERVAL,
                 gc_grace: float | None = None, slow_request: float = SLOW_REQUEST, metrics=None) -> None:
        from topoipam.ipam.gc import DEFAULT_GRACE

        self.store = store
        self.node = node
        self.labels = dict(labels or {})
        self.watch = TopologyWatch(store, node, poll_interval=poll_interval)
        self.service = IpamService(store)  # every request and the tunnel addresses: one service, one cache
        self.server = AgentServer(socket_path, self.serve, max_in_flight=max_in_flight, slow_request=slow_request)
        self.routes = BlockRoutes(store, node) if routes else None
        self.registered = threading.Event()
        self.tunnels: dict[str, str] = {}
        self.tunnels_done = threading.Event()  # the last reconciliation succeeded
        self._changed = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.gc_interval = gc_interval
        self.gc_grace = DEFAULT_GRACE if gc_grace is None else gc_grace
        self.gc_passes = 0  # completed passes (tests wait on it)
        self._gc_seen: dict = {}  # ipam.gc first_seen, kept between passes
        self._gc_thread: threading.Thread | None = None
        self.metrics = metrics  # metrics.process.AgentMetrics when --metrics-listen is given, else None

    # --- serving ---------------------------------------------------------------------
    def serve(self, env: Mapping[str, str], stdin: bytes) -> tuple[int, bytes]:
        if self.metrics is None:
            return self._answer(env, stdin)
        started = time.perf_counter()
        code, out = self._answer(env, stdin)
        self.metrics.served(env.get("CNI_COMMAND", ""), code, out, time.perf_counter() - started)
        return code, out

    def _answer(self, env: Mapping[str, str], stdin: bytes) -> tuple[int, bytes]:
        if not self.registered.is_set() and env.get("CNI_COMMAND") != "VERSION":
            err = P.CniError(E.CNI_TRY_AGAIN_LATER, f"the topoipam agent of node {self.node} is starting: "
                             "its node is not registered yet (is the datastore reachable?)")
            return 1, P.dumps(P.error_object(err, request_version(stdin)))
        answer = respond(env, stdin, lambda _url: (self.store, self.service), default_nodename=self.node)
        if self.routes is not None and env.get("CNI_COMMAND") == "ADD":
            self.routes.poke()  # the ADD may have claimed a block
        return answer

    # --- life cycle ------------------------------------------------------------------
    def start(self) -> "Agent":
        self.watch.add_listener(self.service.forget_topology)  # before the reconciliation reads it again
        self.watch.add_listener(self._changed.set)
        if self.routes is not None:
            self.watch.add_listener(self.routes.poke)
            self.routes.start()
        self.server.start()
        log.info("serving topoipam-cni on %s for node %s (datastore %s)", self.server.path, self.node,
                 self.store.url)
        self.watch.start()  # first: a poller's baseline is read before the reconciliation below
        self._thread = threading.Thread(target=self._maintain, name="topoipam-agent-maintain", daemon=True)
        self._thread.start()
        if self.gc_interval > 0:
            self._gc_thread = threading.Thread(target=self._collect_garbage, name="topoipam-agent-gc", daemon=True)
            self._gc_thread.start()
        return self

    def stop(self, grace: float = 60.0) -> bool:
        """Stop accepting, finish what is in flight, remove the socket. True if nothing was cut short."""
        self._stop.set()
        self._changed.set()
        clean = self.server.shutdown(grace)
        self.watch.stop()
        if self.routes is not None:
            self.routes.stop()  # the routes stay: the blocks are still this node's while it is away
        for thread in (self._thread, self._gc_thread):
            if thread is not None:
                thread.join(timeout=grace)
        return clean

    def _collect_garbage(self) -> None:
        import time

        from topoipam.ipam import gc

        def logged(g, outcome: str) -> None:
            log.info("gc %s: %s", outcome, gc.describe(g, now))

        while not self._stop.wait(self.gc_interval):
            now = time.time()
            try:
                verdict, done = gc.collect(self.service, now, self.gc_grace, first_seen=self._gc_seen,
                                           on_release=logged)
            except E.TopoipamError as exc:
                log.warning("gc pass failed: %s; next pass in %gs", exc, self.gc_interval)
                continue
            self.gc_passes += 1
            if verdict.young:
                log.info("gc: %d holder(s) gone for less than the grace (%gs), kept for now",
                         len(verdict.young), self.gc_grace)

    def _maintain(self) -> None:
        while not self._stop.is_set():
            try:
                if not self.registered.is_set():
                    node, outcome = register_node(self.store, self.node, self.labels)
                    log.info("node %s %s (labels %s)", self.node, outcome, node.labels)
                    self.registered.set()
                self._changed.clear()
                self.tunnels_done.clear()
                self.tunnels = reconcile_tunnels(self.store, self.node, self.service)
                self.tunnels_done.set()
            except E.TopoipamError as exc:
                log.warning("node %s: %s; retrying in %gs", self.node, exc, RETRY_AFTER_FAILURE)
                self._stop.wait(RETRY_AFTER_FAILURE)
                continue
            self._changed.wait()
