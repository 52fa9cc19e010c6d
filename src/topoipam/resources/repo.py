"""Typed reads of the v3 resources, for the IPAM service and the CNI plugin.

Standard library, the store contract and ``model.storage`` only: this module is
on the CNI plugin's import path. Writes go through ``resources.service``.
"""

from __future__ import annotations

from topoipam.model.storage import from_storage
from topoipam.model.types import IPAMConfig, IPPool, IPReservation, Metadata, Node, Profile
from topoipam.resources.keys import resource_key, resource_prefix
from topoipam.store.base import Store

TYPE_CHECKING = False  # typing's own flag, without importing typing: this module is on the CNI plugin's path
if TYPE_CHECKING:
    from topoipam.store.decoded import Decoded


def _list(store: Store, kind: str, decoded: Decoded | None = None) -> list:
    records = store.list(resource_prefix(kind))
    if decoded is None:
        return [from_storage(kind, r.value, r.revision) for r in records]
    return [decoded.of(r, _decode, kind) for r in records]


def _decode(record, kind: str):
    return from_storage(kind, record.value, record.revision)


def _get(store: Store, kind: str, name: str):
    record = store.get(resource_key(kind, name))
    return None if record is None else from_storage(kind, record.value, record.revision)


def list_pools(store: Store) -> list[IPPool]:
    """All pools in name order (key order is name order)."""
    return _list(store, "IPPool")


def get_pool(store: Store, name: str) -> IPPool | None:
    return _get(store, "IPPool", name)


def list_nodes(store: Store, decoded: Decoded | None = None) -> list[Node]:
    """``decoded``: a ``store.decoded.Decoded`` of an earlier read of the same store (a dry run's)."""
    return _list(store, "Node", decoded)


def get_node(store: Store, name: str) -> Node | None:
    return _get(store, "Node", name)


def get_ipam_config(store: Store) -> IPAMConfig:
    """The ``default`` IPAMConfiguration, or Calico's defaults when none is stored (nothing is written)."""
    return _get(store, "IPAMConfiguration", "default") or IPAMConfig(Metadata(name="default"))


def list_reservations(store: Store) -> list[IPReservation]:
    return _list(store, "IPReservation")


def get_profile(store: Store, name: str) -> Profile | None:
    return _get(store, "Profile", name)


# Every Kubernetes namespace carries this label with its own name (since 1.21, set by the API server).
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"
NAMESPACE_PROFILE_PREFIX = "kns."  # Calico's profile per namespace: kns.<namespace>
CALICO_NAMESPACE_LABEL_PREFIX = "pcns."  # how Calico's Kubernetes datastore writes them into labelsToApply


def namespace_labels(store: Store, namespace: str) -> dict[str, str]:
    """The labels a pool's ``namespaceSelector`` is matched against for ``namespace``.

    ``spec.labelsToApply`` of the Profile ``kns.<namespace>`` (as in Calico's etcd mode; a key
    written in Calico's Kubernetes form, ``pcns.<key>``, counts as ``<key>``), and always
    ``kubernetes.io/metadata.name=<namespace>``, which no Profile can change (Kubernetes
    sets it on every namespace and refuses any other value)."""
    labels: dict[str, str] = {}
    profile = get_profile(store, NAMESPACE_PROFILE_PREFIX + namespace)
    if profile is not None:
        for key, value in profile.spec.labels_to_apply.items():
            labels[key.removeprefix(CALICO_NAMESPACE_LABEL_PREFIX)] = value
    labels[NAMESPACE_NAME_LABEL] = namespace
    return labels
