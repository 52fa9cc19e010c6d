"""Prometheus metrics over HTTP: the datastore's IPAM state (any backend) and the agent's own counters.

    registry, collector = datastore_registry(store, ["rack"])     # families computed per scrape, cached
    server = MetricsServer(registry, "127.0.0.1:9091").start()    # GET /metrics
    ...
    server.stop()

``families``: what is exported and from which analysis (``ipam.insights``);
``collector``: one consistent read per computation, kept ``max_age`` seconds;
``process``: the agent's request/latency/error/CAS families; ``http``: the endpoint.
Used by ``topoipam metrics serve`` and ``topoipam agent --metrics-listen``; prometheus_client
is imported here, so the edges import this package only when metrics are asked for.
Names, labels and help texts: docs/metrics.md.
"""

from __future__ import annotations

from topoipam.errors import ValidationError
from topoipam.metrics.collector import DEFAULT_MAX_AGE, StoreCollector
from topoipam.metrics.http import MetricsServer, parse_listen
from topoipam.model.validate import qualified_name_errors

__all__ = ["DEFAULT_MAX_AGE", "MetricsServer", "StoreCollector", "check_label_names", "datastore_registry",
           "parse_listen"]


def datastore_registry(store, labels: list[str], max_age: float = DEFAULT_MAX_AGE):
    """A registry holding only topoipam's datastore collector (no process/platform defaults)."""
    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry(auto_describe=False)
    collector = StoreCollector(store, labels, max_age)
    registry.register(collector)
    return registry, collector


def check_label_names(labels: list[str], flag: str = "--by") -> list[str]:
    """Each ``--by`` value must be a label key (Kubernetes' qualified name); repeated ones count once."""
    for label in labels:
        errors = qualified_name_errors(label)
        if errors:
            raise ValidationError(f"{flag} {label!r} is not a label key: {'; '.join(errors)}")
    return list(dict.fromkeys(labels))


def check_labels_present(nodes, labels: list[str], flag: str = "--by") -> None:
    """Refuse a ``--by`` label no node carries (a typo would export only the <none> domain)."""
    seen = {key for n in nodes for key in n.labels}
    missing = [label for label in labels if label not in seen]
    if missing:
        known = ", ".join(sorted(seen)) or "none"
        raise ValidationError(f"{flag} {', '.join(missing)}: no node has such a label (labels on nodes: {known})")
