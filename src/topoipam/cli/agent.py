"""``topoipam agent --node NAME [--label k=v]... [--socket PATH] [--datastore URL]``: run the node agent.

Runs in the foreground until SIGTERM or SIGINT, logging to stderr. On either
signal it stops accepting requests, finishes those in flight, removes the
socket and exits 0 (1 if in-flight requests outlived ``--grace``).
The datastore must be configured explicitly (``--datastore``, ``$TOPOIPAM_DATASTORE`` or
calicoctl's configuration): an agent never falls back to a local file (exit 2).

``--metrics-listen ADDR:PORT`` (off unless given) also serves Prometheus ``/metrics``: the
datastore's families of ``topoipam metrics serve`` (``--metrics-by LABEL``,
``--metrics-max-age``) and the agent's own (requests, assignment latency, CNI errors by
code, compare-and-swap conflicts); see docs/metrics.md. Its flags are checked before the
datastore is opened, and it listens before the socket is served, so a bad address or a
port in use exits 2 with nothing started. ``--metrics-by`` is checked as a label key only:
the agent starts while the datastore is away, so which labels nodes carry is not known.
"""

from __future__ import annotations

from topoipam.errors import EXIT_FAILED, EXIT_OK, ValidationError


def register(subparsers) -> None:
    text = "Run the node agent: register the node, keep its tunnel addresses, serve topoipam-cni over a unix socket."
    p = subparsers.add_parser("agent", help=text, description=text)
    p.add_argument("--node", required=True, help="the name of the Node this agent serves")
    p.add_argument("--label", action="append", default=[], metavar="KEY=VALUE",
                   help="a label to set on the Node (repeatable); other labels are left as they are")
    from topoipam.cni.agent_client import DEFAULT_SOCKET

    p.add_argument("--socket", default=DEFAULT_SOCKET, metavar="PATH",
                   help=f"the unix socket topoipam-cni connects to (default {DEFAULT_SOCKET})")
    p.add_argument("--grace", type=float, default=60.0, metavar="SECONDS",
                   help="how long shutdown waits for requests in flight (default 60)")
    p.add_argument("--routes", choices=("none", "blackhole"), default="none",
                   help="blackhole: keep a blackhole route per block affine to this node in the main routing "
                        "table (proto 199, for BIRD/FRR to announce; needs CAP_NET_ADMIN). Default none")
    p.add_argument("--gc-interval", default="5m", metavar="DURATION",
                   help="run a garbage-collection pass (as 'ipam gc') this often; 0 disables (default 5m)")
    p.add_argument("--gc-grace", default="15m", metavar="DURATION",
                   help="release only what has been gone this long (as 'ipam gc --grace'; default 15m)")
    p.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    p.add_argument("--slow-request-ms", type=float, default=5.0, metavar="MS",
                   help="with --log-level debug, log where each request slower than this spent its time "
                        "(decode, serve: own CPU and datastore wait, encode); 0 logs every request (default 5)")
    p.add_argument("--metrics-listen", metavar="ADDR:PORT", default=None,
                   help="serve Prometheus /metrics there (e.g. 127.0.0.1:9091; off unless given): the "
                        "datastore's IPAM figures, as `topoipam metrics serve`, and the agent's own")
    from topoipam.cli.metrics import add_metrics_flags

    add_metrics_flags(p, "metrics-")
    p.set_defaults(run=run_agent)


def run_agent(args, ctx) -> int:
    import logging  # imported here, not at the top: every `topoipam` command registers this module
    import signal
    import threading

    from topoipam.agent.daemon import Agent
    from topoipam.agent.node import parse_labels
    from topoipam.store import open_store

    logging.basicConfig(level=args.log_level.upper(), stream=ctx.err,
                        format="%(asctime)s topoipam agent %(levelname)s: %(message)s")
    from topoipam.core.duration import parse_duration

    labels = parse_labels(args.label)
    _check_node_name(args.node)
    gc_interval, gc_grace = parse_duration(args.gc_interval), parse_duration(args.gc_grace)
    if args.slow_request_ms < 0:
        raise ValidationError(f"--slow-request-ms must not be negative, got {args.slow_request_ms:g}")
    metrics_flags = _metrics_flags(args)
    choice = ctx.datastore(allow_default=False)
    store = open_store(choice.url, choice.config)
    import faulthandler

    faulthandler.register(signal.SIGUSR1, file=ctx.err, all_threads=True)  # `kill -USR1`: every thread's stack
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    server = metrics = None
    try:
        if metrics_flags is not None:  # first: a port in use fails before the agent serves anything
            server, metrics = _metrics_server(store, args, *metrics_flags)
            logging.getLogger("topoipam.agent").info("serving metrics on %s", server.url)
        agent = Agent(store, args.node, labels, args.socket, routes=args.routes == "blackhole",
                      gc_interval=gc_interval, gc_grace=gc_grace,
                      slow_request=args.slow_request_ms / 1e3, metrics=metrics)
        agent.start()
        # Wake up often: the kernel may deliver SIGTERM to any thread (gRPC's among them). Python then
        # only flags it, and runs the handler when the main thread next executes bytecode; a main
        # thread blocked in one long wait would not see the signal until the wait ran out (seen: an
        # agent ignoring SIGTERM for the test's whole 60 s, 3 times in ~90 runs under load).
        while not stop.wait(0.2):
            pass
        logging.getLogger("topoipam.agent").info("stopping: finishing %d request(s) in flight",
                                                 agent.server.in_flight)
        clean = agent.stop(args.grace)
    finally:
        if server is not None:
            server.stop()
        store.close()
    logging.getLogger("topoipam.agent").info("stopped (%d requests served)", agent.server.served)
    return EXIT_OK if clean else EXIT_FAILED


def _metrics_flags(args):
    """(labels, max age) when ``--metrics-listen`` is given (checked before anything starts), else None."""
    if args.metrics_listen is None:
        if args.metrics_by or args.metrics_max_age is not None:
            raise ValidationError("--metrics-by and --metrics-max-age need --metrics-listen ADDR:PORT")
        return None
    from topoipam.cli.metrics import check_metrics_flags

    return check_metrics_flags(args, args.metrics_listen, "--metrics-listen", "metrics-")


def _metrics_server(store, args, labels, max_age):
    """The started metrics server and the agent's recorder, on one registry with the datastore's families."""
    from topoipam.metrics import MetricsServer, datastore_registry
    from topoipam.metrics.process import AgentMetrics

    registry, _ = datastore_registry(store, labels, max_age)
    recorder = AgentMetrics(registry)
    return MetricsServer(registry, args.metrics_listen, "--metrics-listen").start(), recorder


def _check_node_name(name: str) -> None:
    """Refuse a name the Node could never be registered under (exit 2), instead of retrying forever."""
    from topoipam.model.types import Metadata, Node
    from topoipam.model.validate import validate

    validate(Node(Metadata(name=name)))
