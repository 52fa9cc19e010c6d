"""The agent's own families: CNI requests it served, how long assignments took, CNI errors by code, CAS races.

``AgentMetrics.served`` is called by the agent after each request it answers (``agent.daemon``);
the compare-and-swap figures are the process's ``store.retry.CAS_STATS``, read at scrape time.
"""

from __future__ import annotations

import json

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily

from topoipam.store.retry import CAS_STATS

# CNI ADD through the agent: ~1-10 ms on a warm node; seconds when the datastore is slow or contended.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

PROCESS_HELP = {
    "topoipam_assignment_duration_seconds": "Seconds the agent took to answer a CNI ADD (address assignment, "
                                            "datastore commit included), successful or not",
    "topoipam_cni_requests_total": "CNI requests the agent answered, by command",
    "topoipam_cni_errors_total": "CNI requests the agent answered with an error, by the CNI error code "
                                 "(spec codes 1-99, topoipam's 100+)",
    "topoipam_cas_conflicts_total": "Compare-and-swap commits in this process that lost a race and were retried",
    "topoipam_cas_retries_exhausted_total": "Operations in this process that lost every compare-and-swap attempt "
                                            "(RetriesExhaustedError)",
}


class _CasCollector:
    def describe(self):
        return self.collect()

    def collect(self):
        for name, value in (("topoipam_cas_conflicts", CAS_STATS.conflicts),
                            ("topoipam_cas_retries_exhausted", CAS_STATS.exhausted)):
            yield CounterMetricFamily(name, PROCESS_HELP[name + "_total"], value=value)


class AgentMetrics:
    """The agent's families, registered on ``registry``."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.latency = Histogram("topoipam_assignment_duration_seconds",
                                 PROCESS_HELP["topoipam_assignment_duration_seconds"], buckets=LATENCY_BUCKETS,
                                 registry=registry)
        self.requests = Counter("topoipam_cni_requests", PROCESS_HELP["topoipam_cni_requests_total"], ["command"],
                                registry=registry)
        self.errors = Counter("topoipam_cni_errors", PROCESS_HELP["topoipam_cni_errors_total"], ["code"],
                              registry=registry)
        registry.register(_CasCollector())

    def served(self, command: str, exit_code: int, out: bytes, seconds: float) -> None:
        """One answered request: ``exit_code`` and ``out`` as the plugin prints them (an error object on
        a non-zero exit)."""
        self.requests.labels(command or "none").inc()
        if command == "ADD":
            self.latency.observe(seconds)
        if exit_code:
            self.errors.labels(str(_error_code(out))).inc()


def _error_code(out: bytes) -> int | str:
    try:
        return int(json.loads(out)["code"])
    except (ValueError, KeyError, TypeError):
        return "unknown"
