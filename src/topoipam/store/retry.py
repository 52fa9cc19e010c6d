"""The one compare-and-swap retry loop of the project (IPAM, resources, the agent).

Every write is planned from fresh reads and committed conditionally on the
revisions read (``store.commit`` with Update/Create/Delete/Check). A commit that
loses a race (``ConflictError``, or ``AlreadyExistsError`` from a Create) means
someone else changed what we read: read again and re-plan. After
``MAX_RETRIES`` lost races in a row the caller gets ``RetriesExhaustedError``;
a conflict never escapes ``run_cas``. Errors raised while *planning* (e.g. an
address already assigned) propagate unchanged: they are answers, not races.
"""

from __future__ import annotations

from _thread import allocate_lock  # threading.Lock, without importing threading (CNI path)
import time
from topoipam.structs import dataclass, field
from collections.abc import Callable, Sequence

from topoipam.errors import AlreadyExistsError, ConflictError, RetriesExhaustedError
from topoipam.store.base import Op, Store

MAX_RETRIES = 100  # Calico's datastoreRetries


class CasStats:
    """Lost races and exhausted loops in this process, for the agent's metrics. Counted only on a
    lost race (under a lock: threads of the agent race each other), never on the winning path."""

    def __init__(self) -> None:
        self.conflicts = 0  # commits that lost their race and were retried
        self.exhausted = 0  # calls that ended in RetriesExhaustedError
        self._lock = allocate_lock()

    def add(self, conflicts: int = 0, exhausted: int = 0) -> None:
        with self._lock:
            self.conflicts += conflicts
            self.exhausted += exhausted


CAS_STATS = CasStats()

# ``T`` in annotations names the attempt's result for the reader; annotations are never evaluated
# here, which keeps ``typing`` off the plugin's start-up path.


@dataclass
class Plan:
    """What one attempt wants written (nothing: no commit) and what the call returns if it lands."""

    ops: Sequence[Op] = field(default_factory=list)
    result: T | None = None
    on_commit: Callable[[int], None] | None = None  # called with the revision the commit landed at
    on_conflict: Callable[[], None] | None = None  # called when the commit lost its race (before the retry)


def run_cas(store: Store, attempt: Callable[[int], Plan[T]], what: str | Callable[[], str]) -> T | None:
    """Plan with ``attempt(n)`` (n = lost races so far) and commit, until a commit lands. ``what``
    names the operation in the error (a callable is only called then: hot paths skip formatting)."""
    for n in range(MAX_RETRIES):
        plan = attempt(n)
        if not plan.ops:
            return plan.result
        try:
            revision = store.commit(plan.ops)
        except (ConflictError, AlreadyExistsError):
            CAS_STATS.add(conflicts=1)
            if plan.on_conflict is not None:
                plan.on_conflict()
            if n >= 2:  # heavy contention: spread the contenders out a little
                import random  # only under contention: not on every plugin start

                time.sleep(random.uniform(0, 0.0005 * min(n, 20)))
            continue
        if plan.on_commit is not None:
            plan.on_commit(revision)
        return plan.result
    CAS_STATS.add(exhausted=1)
    raise RetriesExhaustedError(
        f"Max retries hit - excessive concurrent IPAM requests ({what() if callable(what) else what}: "
        f"{MAX_RETRIES} compare-and-swap conflicts in a row)")


def rerun(run: Callable[[], T], *, moved: type[Exception], refresh: Callable[[], None] | None = None,
          what: str | Callable[[], str]) -> T:
    """Call ``run()`` again, after ``refresh()``, while it raises ``moved``: the outer loop for a
    decision whose inputs (not only its writes) changed under it, e.g. the IPAM topology a commit
    was fenced on. Bounded like ``run_cas``, so that endless churn ends in RetriesExhaustedError."""
    for _ in range(MAX_RETRIES):
        try:
            return run()
        except moved:
            if refresh is not None:
                refresh()
    raise RetriesExhaustedError(
        f"Max retries hit - what this request was decided on kept changing ({what() if callable(what) else what}: "
        f"{MAX_RETRIES} times in a row)")
