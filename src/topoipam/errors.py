"""The one exception tree of topoipam.

Every error topoipam raises on purpose is a ``TopoipamError``. The edges map
them to the outside world in exactly one place each: the CLI to an exit code
(``exit_code``), the CNI plugin to a CNI error code (``cni_code``).

    TopoipamError                       exit 1   cni 100
    +-- ValidationError (ValueError)    exit 2   cni 7    bad input: file, flag, field, selector
    |   +-- SelectorError                                 selector syntax (message = Calico's text)
    |   +-- NotInPoolError                                an address given explicitly is in no enabled pool
    +-- NotFoundError (LookupError)     exit 1   cni 100  a named resource, handle or address is absent
    +-- AlreadyExistsError              exit 1   cni 100  create of something that exists
    +-- ConflictError                   exit 1   cni 11   compare-and-swap lost a race (store level;
    |                                                     the IPAM service retries it, it never escapes there)
    +-- AllocationError                 exit 1   cni 100+ could not hand out an address
    |   +-- NoQualifiedPoolError                 cni 101  no enabled pool qualifies for the node/use/namespace
    |   +-- BlockLimitError                      cni 102  per-host block limit reached
    |   +-- ExhaustedError                       cni 103  the qualifying pools have no free address
    +-- DatastoreUnavailableError       exit 3   cni 11   backend unreachable, busy or timed out
    +-- RetriesExhaustedError           exit 1   cni 11   too many lost compare-and-swap races in a row
    +-- MissingExtraError               exit 1   cni 7    a feature needs an optional extra that is not installed

``ipam check`` finding problems is not an exception: the CLI returns exit 4.
Messages are complete sentences meant for an operator: they say what was wrong
and where (document, field, value), never a Python repr.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3
EXIT_CHECK_PROBLEMS = 4

# CNI spec error codes (https://www.cni.dev/docs/spec/#error) and topoipam's own (100+).
CNI_INCOMPATIBLE_VERSION = 1
CNI_UNSUPPORTED_FIELD = 2
CNI_UNKNOWN_CONTAINER = 3
CNI_INVALID_ENV = 4
CNI_IO_FAILURE = 5
CNI_DECODE_FAILURE = 6
CNI_INVALID_NETCONF = 7
CNI_TRY_AGAIN_LATER = 11
CNI_TOPOIPAM_ERROR = 100
CNI_NO_QUALIFIED_POOL = 101
CNI_BLOCK_LIMIT = 102
CNI_EXHAUSTED = 103


class TopoipamError(Exception):
    """Root of every error topoipam raises deliberately."""

    exit_code = EXIT_FAILED
    cni_code = CNI_TOPOIPAM_ERROR

    def __init__(self, message: str, *, details: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def __str__(self) -> str:
        return self.message


class ValidationError(TopoipamError, ValueError):
    """Input is malformed or breaks a rule. Nothing was changed."""

    exit_code = EXIT_USAGE
    cni_code = CNI_INVALID_NETCONF


class SelectorError(ValidationError):
    """A selector does not parse; the message is Calico's parser text. ``position``: the 0-based index in
    the selector text where parsing stopped (None when not known)."""

    position: int | None = None


class NotInPoolError(ValidationError):
    """An address named explicitly (``ipam assign --ip``, CNI_ARGS ``IP=``) lies outside every enabled pool."""


class UnusableAddressError(ValidationError):
    """An address named explicitly that the request's L2 segment cannot give a workload (its block's
    network, broadcast or gateway address; core.block.L2Segment)."""


class NotFoundError(TopoipamError, LookupError):
    """A named resource, handle, block or address does not exist."""


class AlreadyExistsError(TopoipamError):
    """A create found the key already present."""


class ConflictError(TopoipamError):
    """A compare-and-swap found a different revision than the one it read."""

    cni_code = CNI_TRY_AGAIN_LATER


class AllocationError(TopoipamError):
    """No address could be handed out; the message says which pools were tried and why."""


class NoQualifiedPoolError(AllocationError):
    cni_code = CNI_NO_QUALIFIED_POOL


class BlockLimitError(AllocationError):
    cni_code = CNI_BLOCK_LIMIT


class ExhaustedError(AllocationError):
    cni_code = CNI_EXHAUSTED


class DatastoreUnavailableError(TopoipamError):
    """The backend could not be reached, was busy, or timed out. Try again later."""

    exit_code = EXIT_UNAVAILABLE
    cni_code = CNI_TRY_AGAIN_LATER


class DamagedRecordError(TopoipamError):
    """A stored record does not decode, or contradicts itself (a block's ordinals not accounted for
    exactly once): the operation that needed it fails (exit 1); ``ipam check`` names it and its repair.
    ``key`` and ``revision`` say which record."""

    def __init__(self, key: str, revision: int, why: str) -> None:
        super().__init__(f"record {key} is damaged: {why}",
                         details="run 'topoipam ipam check' for how to repair it")
        self.key, self.revision, self.why = key, revision, why


class DatastoreMissingError(DatastoreUnavailableError):
    """The named SQLite datastore lies in a directory that does not exist: a configuration error
    that waiting does not heal (CNI 7, not 11; the CLI keeps exit 3)."""

    cni_code = CNI_INVALID_NETCONF


class HandleInUseError(TopoipamError):
    """An assignment that asked for a new handle (``AssignRequest.exclusive``) found it, or one of the
    handles it named, already in the datastore. Raised before this request wrote anything."""


class RetriesExhaustedError(TopoipamError):
    """Too many compare-and-swap conflicts in a row (heavy contention)."""

    cni_code = CNI_TRY_AGAIN_LATER


class MissingExtraError(TopoipamError):
    """A feature needs an optional dependency (``topoipam[etcd]``, ``topoipam[metrics]``) that is not installed."""

    cni_code = CNI_INVALID_NETCONF
