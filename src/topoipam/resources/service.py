"""Writes of the v3 resources: create, apply, replace, delete, patch, label.

Resources live at ``resources.keys`` paths as ``model.storage`` JSON; the
record's revision is the resource's ``resourceVersion``. Every write is a
compare-and-swap on the revision that was read (DESIGN.md invariant 2).

Several resources are one request: each is validated (``model.validate``
plus the cross-resource rules: pool overlap with stored pools *and* with the
other new pools, blocks of another size), and only when all pass are they
written in ONE ``store.commit``. Any failure writes nothing and names the
failing document (``TopoipamError.document``). A commit that loses a race to
another writer is planned again from fresh reads, so a lost race ends either
in success or in the same error a sequential run would have given.

Pool delete follows Calico (reference 1.3): disable (CAS) so that no new
block is claimed, release the pool's block affinities, then delete (CAS on
the disabled version); if the release fails, the pool is enabled again
(CAS) before the error is raised, and the message says so. Node delete is
Calico's decommission: the node's addresses and affinities are released, then
the Node is deleted. The IPAM side of pool create and delete (blocks of another
size, affinity release) and of node delete is the
``pool_blocks`` object the caller passes in (``ipam.pool_blocks.PoolBlocks``):
resources/ does not import ipam/.
"""

from __future__ import annotations

import ipaddress
import json
from topoipam.structs import dataclass, field
from datetime import datetime, timezone
from typing import Callable, Iterable, Protocol, Sequence, TypeVar

from topoipam.core.affinity import AFFINITY_LABEL_ANNOTATION, affinity_label
from topoipam.errors import (
    AlreadyExistsError,
    ConflictError,
    NotFoundError,
    RetriesExhaustedError,
    TopoipamError,
    ValidationError,
)
from topoipam.model.storage import from_storage, resource_from_dict, resource_to_dict, to_storage
from topoipam.model.validate import field_error, overlap_error, validate, validation_error
from topoipam.resources.keys import POOL_GUARD_KEY, ROOT, TOPOLOGY_KEY, resource_key, resource_prefix
from topoipam.resources.patch import merge_patch, with_labels
from topoipam.store.base import Create, Delete, Op, Store, Update

T = TypeVar("T")

IPAM_CONFIG_NAME = "default"

CREATE, APPLY, REPLACE = "create", "apply", "replace"


def ident(kind: str, name: str) -> str:
    """Calico's resource identifier in messages: ``IPPool(rack-0-ippool)``."""
    return f"{kind}({name})"


def not_found(kind: str, name: str) -> NotFoundError:
    return NotFoundError(f"resource does not exist: {ident(kind, name)} with error: <nil>")


def tag_document(err: TopoipamError, index: int, resource) -> TopoipamError:
    """Record which input document (1-based) an error belongs to; the CLI words the message."""
    err.document = (index, resource.kind, resource.name)  # type: ignore[attr-defined]
    return err


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _cas(store: Store, attempt: Callable[[], tuple[list[Op], T]], what: str) -> T:
    """Plan with ``attempt()`` from fresh reads and commit its ops, again while the commit loses a race.

    The loop is the one CAS retry helper of the project (``store/retry.py``,
    same layer, imported lazily so that reads never load it).
    """
    from topoipam.store.retry import Plan, run_cas

    def one(_lost: int):
        ops, result = attempt()
        if any(op.key.startswith(ROOT) for op in ops):  # a resource write moves the topology generation
            ops = [*ops, topology_bump(store)]
        return Plan(ops=ops, result=result)

    return run_cas(store, one, what)


def guard_op(store: Store, key: str) -> Op:
    """The op moving a guard key (``resources.keys``) on by one write: Create if absent, else a CAS Update.
    Two commits that both carry it for the same key cannot both land."""
    record = store.get(key)
    if record is None:
        return Create(key, b"{}")
    return Update(key, record.value, record.revision)


def topology_bump(store: Store) -> Op:
    """The op moving the topology generation (``resources.keys.TOPOLOGY_KEY``) on by one write."""
    return guard_op(store, TOPOLOGY_KEY)


def stamp_new(resource):
    """Give a resource about to be created its identity: a fresh uid and creation time, no version."""
    import uuid  # costs ~3 ms of start-up: only when something is created

    resource.metadata.uid = str(uuid.uuid4())
    resource.metadata.creation_timestamp = _now()
    resource.metadata.resource_version = ""
    return resource


class PoolIpamSide(Protocol):
    """What pool create and delete need from IPAM (``ipam.pool_blocks.PoolBlocks`` implements it)."""

    def block_sizes_in(self, net) -> set[int]: ...

    def claims_fence(self, pool) -> list: ...

    def release_pool_affinities(self, pool) -> object: ...

    def release_node(self, name: str) -> object: ...


class StaleVersionError(ConflictError):
    """The resourceVersion the caller gave is older than the stored one (calicoctl's text)."""

    def __init__(self, kind: str, name: str) -> None:
        super().__init__(f"update conflict: {ident(kind, name)}")


@dataclass
class BatchResult:
    """What a create/apply/replace wrote: ``written`` in input order; ``skipped`` (create --skip-exists)."""

    written: list = field(default_factory=list)
    skipped: list = field(default_factory=list)

    @property
    def handled(self) -> int:
        return len(self.written) + len(self.skipped)


class ResourceService:
    """The v3 resources over one datastore."""

    def __init__(self, store: Store, pool_blocks: PoolIpamSide | None = None) -> None:
        self.store = store
        # The IPAM side of pool create/delete, given by the caller: resources/ does not import ipam/.
        self.pool_blocks = pool_blocks

    # ---------------------------------------------------------------- reads

    def _read(self, kind: str, name: str):
        """``(resource, revision)`` or ``(None, 0)``."""
        record = self.store.get(resource_key(kind, name))
        if record is None:
            return None, 0
        return from_storage(kind, record.value, record.revision), record.revision

    def list(self, kind: str) -> list:
        """Every resource of ``kind`` in name order."""
        return [from_storage(kind, r.value, r.revision) for r in self.store.list(resource_prefix(kind))]

    def get(self, kind: str, names: Sequence[str]) -> list:
        """One entry per name, in order: the resource, or None when it does not exist."""
        records = self.store.get_many(resource_key(kind, n) for n in names)
        out = []
        for name in names:
            record = records.get(resource_key(kind, name))
            out.append(None if record is None else from_storage(kind, record.value, record.revision))
        return out

    # ---------------------------------------------------------------- create / apply / replace

    def create(self, resources: Sequence, *, skip_exists: bool = False) -> BatchResult:
        """Create all of ``resources`` or none. ``skip_exists``: an existing one is left as it is."""
        return self._batch(resources, CREATE, skip_exists)

    def apply(self, resources: Sequence) -> BatchResult:
        """Create the absent ones and update the present ones, all or none."""
        return self._batch(resources, APPLY, False)

    def replace(self, resources: Sequence) -> BatchResult:
        """Update resources that must all exist, all or none."""
        return self._batch(resources, REPLACE, False)

    def _batch(self, resources: Sequence, mode: str, skip_exists: bool) -> BatchResult:
        if not resources:
            raise ValidationError("No resources specified")
        self._check_unique(resources)

        def attempt():
            result, ops = self._plan(resources, mode, skip_exists)
            return ops, result

        # A Create that finds its key, or an Update whose revision moved, lost a race to another
        # writer: the next plan reads again and then succeeds or reports what a sequential run would.
        return _cas(self.store, attempt, f"{mode} of {len(resources)} resource(s)")

    @staticmethod
    def _check_unique(resources: Sequence) -> None:
        seen: dict[tuple[str, str], int] = {}
        for index, res in enumerate(resources, start=1):
            key = (res.kind, res.name)
            if key in seen:
                err = ValidationError(f"{ident(*key)} is given twice in the input (documents {seen[key]} and {index})")
                raise tag_document(err, index, res)
            seen[key] = index

    def _plan(self, resources: Sequence, mode: str, skip_exists: bool) -> tuple[BatchResult, list[Op]]:
        """Validate every resource against fresh reads; the ops that write them all."""
        result, ops, planned_keys = BatchResult(), [], set()
        # The guard is read BEFORE the pools: a create committed after this read moves the guard,
        # so our commit fails and re-plans with that pool in view.
        guard = self._pool_guard_op() if mode != REPLACE and any(r.kind == "IPPool" for r in resources) else None
        pools = None  # stored pools, read once when a pool is created
        new_pools: list = []
        for index, res in enumerate(resources, start=1):
            try:
                current, revision = self._read(res.kind, res.name)
                if current is None and res.kind == "IPPool" and mode != REPLACE and pools is None:
                    pools = self.list("IPPool")
                planned, stored = self._plan_one(res, mode, current, revision, (pools or []) + new_pools)
            except TopoipamError as err:
                raise tag_document(err, index, res)
            if planned is None:
                if not skip_exists:
                    raise tag_document(AlreadyExistsError(f"resource already exists: {ident(res.kind, res.name)}"),
                                       index, res)
                result.skipped.append(current)
                continue
            if isinstance(planned[0], Create) and res.kind == "IPPool":
                new_pools.append(stored)
            for op in planned:
                if op.key not in planned_keys:  # two pools' label changes may share a summary fence
                    planned_keys.add(op.key)
                    ops.append(op)
            result.written.append(stored)
        if new_pools:
            ops.append(guard)
        return result, ops

    def _pool_guard_op(self) -> Op:
        """CAS on the pool guard: concurrent pool creates serialise, so the overlap check cannot be raced."""
        return guard_op(self.store, POOL_GUARD_KEY)

    def _plan_one(self, res, mode: str, current, revision: int, other_pools: list):
        """``([ops], resource as stored)``; ``(None, None)`` when a create finds it present."""
        if res.kind == "IPAMConfiguration" and res.name != IPAM_CONFIG_NAME:
            raise ValidationError('Cannot create an IPAMConfiguration resource with a name other than "default"')
        if current is None:
            if mode == REPLACE:
                raise not_found(res.kind, res.name)
            op, stored = self._plan_create(res, other_pools)
            return [op], stored
        if mode == CREATE:
            return None, None
        wanted = res.metadata.resource_version
        if wanted and wanted != str(revision):
            # The user's copy is stale: someone changed the resource since it was read.
            raise StaleVersionError(res.kind, res.name)
        return self._plan_update(current, res, revision)

    def _plan_create(self, res, other_pools: list):
        stored = validate(res)
        if stored.kind == "IPPool":
            self._check_new_pool(stored, other_pools)
        stamp_new(stored)
        return Create(resource_key(res.kind, res.name), to_storage(stored)), stored

    def _check_new_pool(self, pool, other_pools: list) -> None:
        """Create-only rules of reference 1.2 that need other objects: overlap, blocks of another size."""
        fields = overlap_error(pool, other_pools)
        if fields:
            raise validation_error(fields)
        sizes = self._pool_blocks("create").block_sizes_in(pool.network)
        if any(size != pool.spec.block_size for size in sizes):
            raise validation_error([field_error(
                "IPPool.Spec.BlockSize", pool.spec.block_size,
                "IPPool blocksSize conflicts with existing allocations that use a different blockSize")])

    # ---------------------------------------------------------------- delete

    def delete(self, items: Iterable) -> list[tuple[str, str, TopoipamError | None]]:
        """Delete each item (a resource, or a ``(kind, name)`` pair); one ``(kind, name, error)`` per item.

        Unlike create, deletes are independent (calicoctl's behaviour): a
        missing resource does not stop the others. A resource that carries a
        resourceVersion is deleted only if it is still at that version.
        """
        out = []
        for item in items:
            kind, name = (item.kind, item.name) if hasattr(item, "kind") else item
            wanted = item.metadata.resource_version if hasattr(item, "metadata") else ""
            try:
                if kind == "IPPool":
                    self._delete_pool(name, wanted)
                elif kind == "Node":
                    self._delete_node(name, wanted)
                else:
                    _cas(self.store, lambda: self._plan_delete(kind, name, wanted), f"delete of {ident(kind, name)}")
                out.append((kind, name, None))
            except TopoipamError as err:
                out.append((kind, name, err))
        return out

    def _plan_delete(self, kind: str, name: str, wanted: str = ""):
        record = self.store.get(resource_key(kind, name))
        if record is None:
            raise not_found(kind, name)
        if wanted and wanted != str(record.revision):
            raise StaleVersionError(kind, name)
        return [Delete(record.key, record.revision)], None

    def _delete_node(self, name: str, wanted: str = "") -> None:
        """Calico's node decommission: release what the node holds in IPAM, then delete the Node.

        The Node goes last: a release failing half way leaves it registered, so that running the
        delete again finds what remains and completes it."""
        self._plan_delete("Node", name, wanted)  # absent or stale: fail before anything is released
        self._pool_blocks("delete").release_node(name)
        _cas(self.store, lambda: self._plan_delete("Node", name, wanted), f"delete of {ident('Node', name)}")

    def _delete_pool(self, name: str, wanted: str = "") -> None:
        """Reference 1.3: disable, release the pool's block affinities, delete."""
        key = resource_key("IPPool", name)

        def disable():
            pool, revision = self._read("IPPool", name)
            if pool is None:
                raise not_found("IPPool", name)
            if wanted and wanted != str(revision):
                raise StaleVersionError("IPPool", name)
            if pool.spec.disabled:
                return [], (pool, True)
            # From here on no allocator picks this pool for a new block.
            pool.spec.disabled = True
            return [Update(key, to_storage(pool), revision)], (pool, False)

        pool_blocks = self._pool_blocks("delete")
        pool, was_disabled = _cas(self.store, disable, f"disable of {ident('IPPool', name)}")
        try:
            pool_blocks.release_pool_affinities(pool)
        except TopoipamError as err:
            # Invariant 5: a failed delete leaves no partial state, so the disable is undone.
            err.message = f"{err.message}; {self._undo_disable(name, was_disabled)}"
            raise

        def remove():
            pool, revision = self._read("IPPool", name)
            if pool is None:
                return [], None  # deleted by someone else meanwhile: the outcome asked for
            if not pool.spec.disabled:
                # Re-enabled meanwhile, so blocks may have been claimed after the release above.
                raise ConflictError(f"update conflict: {ident('IPPool', name)} was enabled again while "
                                    "being deleted; it was not deleted")
            return [Delete(key, revision)], None

        _cas(self.store, remove, f"delete of {ident('IPPool', name)}")

    def _undo_disable(self, name: str, was_disabled: bool) -> str:
        """Enable the pool again (CAS) after a failed delete; says what became of it."""
        what = ident("IPPool", name)
        if was_disabled:
            return f"{what} was not deleted (it stays disabled, as it was before)"

        def enable():
            pool, revision = self._read("IPPool", name)
            if pool is None or not pool.spec.disabled:
                return [], None
            pool.spec.disabled = False
            return [Update(resource_key("IPPool", name), to_storage(pool), revision)], None

        try:
            _cas(self.store, enable, f"enable of {what}")
        except TopoipamError as err:
            return f"{what} was not deleted and could not be enabled again ({err.message}): it is disabled"
        return f"{what} was not deleted and was enabled again"

    def _pool_blocks(self, what: str) -> PoolIpamSide:
        if self.pool_blocks is None:
            raise TopoipamError(f"cannot {what} an IPPool or a Node: this ResourceService was built without the IPAM "
                                "side (ResourceService(store, topoipam.ipam.pool_blocks.PoolBlocks(store)))")
        return self.pool_blocks

    # ---------------------------------------------------------------- patch / label

    def patch(self, kind: str, name: str, patch_text: str):
        """Apply a JSON merge patch (RFC 7386) to the stored resource; returns it as stored."""
        try:
            patch = json.loads(patch_text)
        except ValueError as exc:
            raise ValidationError(f"patch is not valid JSON: {exc}") from None
        if not isinstance(patch, dict):
            raise ValidationError("patch must be a JSON object, e.g. '{\"spec\":{\"disabled\":true}}'")

        def attempt():
            current, revision = self._read(kind, name)
            if current is None:
                raise not_found(kind, name)
            meta = patch.get("metadata")
            wanted = meta.get("resourceVersion") if isinstance(meta, dict) else None
            if wanted and str(wanted) != str(revision):
                raise StaleVersionError(kind, name)
            merged = merge_patch(resource_to_dict(current), patch)
            if isinstance(merged.get("metadata"), dict):
                merged["metadata"].pop("resourceVersion", None)
            patched = resource_from_dict(merged, f"patched {ident(kind, name)}")
            if (patched.kind, patched.name) != (kind, name):
                raise ValidationError(f"a patch cannot change the kind or name of {ident(kind, name)}")
            return self._plan_update(current, patched, revision)

        return _cas(self.store, attempt, f"patch of {ident(kind, name)}")

    def _plan_update(self, current, changed, revision: int):
        stored = validate(changed, old=current)
        fence = []
        if stored.kind == "IPPool" and affinity_label(stored) != affinity_label(current):
            fence = self._check_affinity_label_change(current)
        stored.metadata.uid = current.metadata.uid
        stored.metadata.creation_timestamp = current.metadata.creation_timestamp
        stored.metadata.resource_version = ""
        return [Update(resource_key(stored.kind, stored.name), to_storage(stored), revision), *fence], stored

    def _check_affinity_label_change(self, pool) -> list:
        """The affinity label says to whom the pool's blocks are affine (core.affinity): changing it
        under existing blocks would orphan their affinities, so it is fixed while the pool has any.
        Returns the Checks that make the change fail if a block is claimed meanwhile."""
        pool_blocks = self._pool_blocks("change the affinity label of")
        fence = pool_blocks.claims_fence(pool)  # read before the blocks: a claim after it moves a Check
        if pool_blocks.block_sizes_in(pool.network):
            raise ValidationError(
                f"IPPool {pool.name}: the annotation {AFFINITY_LABEL_ANNOTATION} cannot be changed while the pool "
                f"has blocks in {pool.spec.cidr}; release its blocks first (topoipam ipam show --show-blocks)")
        return fence

    def label(self, kind: str, name: str, key: str, value: str, *, overwrite: bool = False,
              typed_kind: str | None = None) -> str:
        """Set label ``key=value``; returns ``"set"`` or ``"updated"``. Messages are calicoctl's (7.3)."""
        what = f"{typed_kind or kind} {name}"

        def attempt():
            current, revision = self._read(kind, name)
            if current is None:
                raise NotFoundError(f"{what} not found")
            labels = current.metadata.labels
            if key in labels and labels[key] != value and not overwrite:
                raise AlreadyExistsError(f"failed to update label of {what}, key {key} is already present. "
                                         "please use '--overwrite' to set a new value")
            outcome = "updated" if key in labels else "set"
            ops, _ = self._plan_update(current, with_labels(current, {**labels, key: value}), revision)
            return ops, outcome

        return self._label_cas(attempt, what)

    def unlabel(self, kind: str, name: str, key: str, *, typed_kind: str | None = None) -> None:
        """Remove label ``key``; calicoctl's messages (7.3)."""
        what = f"{typed_kind or kind} {name}"

        def attempt():
            current, revision = self._read(kind, name)
            if current is None:
                raise NotFoundError(f"{what} not found")
            labels = dict(current.metadata.labels)
            if key not in labels:
                raise NotFoundError(f"cannot remove label of {what}, key {key} does not exist")
            del labels[key]
            return self._plan_update(current, with_labels(current, labels), revision)

        self._label_cas(attempt, what)

    def _label_cas(self, attempt, what: str):
        try:
            return _cas(self.store, attempt, f"label of {what}")
        except ValidationError as err:
            err.message = f"failed to update {what}, label not changed: {err.message}"
            raise
        except RetriesExhaustedError:
            raise RetriesExhaustedError(f"failed to update {what}, label not changed") from None

    def merge_ipam_config(self, spec: dict):
        """Merge ``spec`` into the ``default`` IPAMConfiguration, creating it (Calico's defaults plus
        ``spec``) when absent; returns it as stored. One CAS loop: a concurrent create, update or
        delete between our read and our commit re-plans Create-or-Update from a fresh read."""
        def attempt():
            current, revision = self._read("IPAMConfiguration", IPAM_CONFIG_NAME)
            if current is None:
                doc = {"apiVersion": "projectcalico.org/v3", "kind": "IPAMConfiguration",
                       "metadata": {"name": IPAM_CONFIG_NAME}, "spec": spec}
                op, stored = self._plan_create(resource_from_dict(doc, "IPAMConfiguration(default)"), [])
                return [op], stored
            merged = merge_patch(resource_to_dict(current), {"spec": spec})
            merged["metadata"].pop("resourceVersion", None)
            return self._plan_update(current, resource_from_dict(merged, "IPAMConfiguration(default)"), revision)

        return _cas(self.store, attempt, "update of IPAMConfiguration(default)")

    # ---------------------------------------------------------------- init

    def ensure_pools(self, pools: Sequence) -> list[tuple[object, str]]:
        """Create each pool unless a pool of its IP version exists (reference 1.4); idempotent.

        Returns ``(pool, outcome)`` with outcome ``"created"`` or the reason it was not.
        """
        out = []
        for pool in pools:
            version = ipaddress.ip_network(pool.spec.cidr, strict=False).version
            existing = [p for p in self.list("IPPool") if p.version == version]
            if existing:
                out.append((pool, f"an IPv{version} pool exists already ({existing[0].name})"))
                continue
            try:
                self.create([pool])
            except AlreadyExistsError:  # a concurrent init won: the outcome asked for
                out.append((pool, "created by someone else meanwhile"))
                continue
            except TopoipamError as err:
                raise tag_document(err, 1, pool) from None
            out.append((pool, "created"))
        return out
