"""``topoipam metrics serve --listen ADDR:PORT [--by LABEL]... [--max-age SECONDS]``: Prometheus /metrics.

Serves the datastore's IPAM families (``topoipam.metrics``; docs/metrics.md) for any
datastore, the SQLite file included, in the foreground until SIGTERM or SIGINT (then
it stops serving and exits 0). The agent serves the same, plus its own counters, with
``topoipam agent --metrics-listen``. Flags are checked before anything is served: a bad
address, a port in use, a ``--by`` that is no label key or that no node carries, a
negative ``--max-age``: exit 2. An unreachable datastore at start: exit 3.
"""

from __future__ import annotations

from topoipam.errors import EXIT_OK, ValidationError


def add_metrics_flags(p, prefix: str = "") -> None:
    """``--by`` and ``--max-age``; the agent has them as ``--metrics-by``, ``--metrics-max-age`` (prefix)."""
    p.add_argument(f"--{prefix}by", dest="metrics_by", action="append", default=[], metavar="LABEL",
                   help="also export headroom per value of this node label (e.g. rack); repeatable")
    p.add_argument(f"--{prefix}max-age", dest="metrics_max_age", type=float, default=None, metavar="SECONDS",
                   help="serve the computed datastore figures for up to this long before reading the datastore "
                        "again (default 30)")


def register(subparsers) -> None:
    text = "Prometheus metrics of the datastore over HTTP."
    p = subparsers.add_parser("metrics", help=text, description=text)
    sub = p.add_subparsers(dest="metrics_command", metavar="COMMAND", parser_class=type(p))
    sub.required = True
    s = sub.add_parser("serve", help="Serve /metrics for the datastore until SIGTERM/SIGINT.",
                       description="topoipam metrics serve --listen ADDR:PORT [--by LABEL]... [--max-age SECONDS]")
    s.add_argument("--listen", required=True, metavar="ADDR:PORT",
                   help="where to listen: 127.0.0.1:9091, [::1]:9091, 0.0.0.0:9091 (port 0: any free port)")
    add_metrics_flags(s)
    s.set_defaults(run=run_serve)


def check_metrics_flags(args, listen: str, listen_flag: str = "--listen", prefix: str = "") -> tuple[list, float]:
    """Check the listen address and ``add_metrics_flags``' flags before the datastore is opened:
    ``(labels, max_age)``. The 'metrics' extra (prometheus_client) must be installed."""
    from topoipam.extras import require

    require("prometheus_client", "metrics", f"Prometheus metrics ({listen_flag})")
    from topoipam.metrics import DEFAULT_MAX_AGE, check_label_names, parse_listen

    parse_listen(listen, listen_flag)
    labels = check_label_names(args.metrics_by, f"--{prefix}by")
    max_age = DEFAULT_MAX_AGE if args.metrics_max_age is None else args.metrics_max_age
    if not max_age >= 0:
        raise ValidationError(f"--{prefix}max-age {max_age:g}: must be a number of seconds, 0 or more")
    return labels, max_age


def wait_for_signal() -> None:
    """Block until SIGTERM or SIGINT (waking often: see ``cli.agent.run_agent`` on why)."""
    import signal
    import threading

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.wait(0.2):
        pass


def run_serve(args, ctx) -> int:
    import logging

    labels, max_age = check_metrics_flags(args, args.listen)  # first: it names a missing extra
    from topoipam.metrics import MetricsServer, check_labels_present, datastore_registry
    from topoipam.resources import repo

    logging.basicConfig(level=logging.INFO, stream=ctx.err,
                        format="%(asctime)s topoipam metrics %(levelname)s: %(message)s")
    if labels:
        check_labels_present(repo.list_nodes(ctx.store), labels)
    registry, _ = datastore_registry(ctx.store, labels, max_age)
    server = MetricsServer(registry, args.listen).start()
    try:
        print(f"Serving metrics of {ctx.store.url} on {server.url}", file=ctx.err, flush=True)
        wait_for_signal()
    finally:
        server.stop()
    return EXIT_OK
