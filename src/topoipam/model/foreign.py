"""Documents from Calico's other API groups, read as the projectcalico.org/v3 resources they are.

For migrating from a Calico cluster on the Kubernetes datastore, where ``kubectl get`` shows
Calico's objects as CRDs and the nodes as Kubernetes Nodes::

    crd.projectcalico.org/v1 IPPool, IPAMConfig, IPReservation  -> the v3 kind (IPAMConfig ->
        IPAMConfiguration); the spec is the same schema. The annotation projectcalico.org/metadata
        (Calico's copy of the v3 metadata) is dropped.
    v1 Node (Kubernetes)  -> a v3 Node with the node's name and labels only (its spec and status
        are the kubelet's, not IPAM's)
    crd.projectcalico.org/v1 BlockAffinity, IPAMBlock, IPAMHandle  -> refused: Calico's IPAM state
        is not imported (topoipam claims its own blocks; docs/migration.md says how to move
        running workloads)

``to_v3(d)`` returns the v3 dict, or ``d`` itself when it is not one of these.
"""

from __future__ import annotations

from topoipam.errors import ValidationError
from topoipam.model.types import API_VERSION

CRD_API_VERSION = "crd.projectcalico.org/v1"
_CRD_KINDS = {"IPPool": "IPPool", "IPAMConfig": "IPAMConfiguration", "IPReservation": "IPReservation"}
_IPAM_STATE_KINDS = ("BlockAffinity", "IPAMBlock", "IPAMHandle")
_CALICO_METADATA_ANNOTATION = "projectcalico.org/metadata"


def to_v3(d: dict, where: str) -> dict:
    api_version, kind = d.get("apiVersion"), d.get("kind")
    if api_version == "v1" and kind == "Node":
        meta = d.get("metadata") if isinstance(d.get("metadata"), dict) else {}
        return {"apiVersion": API_VERSION, "kind": "Node",
                "metadata": {k: meta[k] for k in ("name", "labels") if k in meta}}
    if api_version != CRD_API_VERSION:
        return d
    if kind in _IPAM_STATE_KINDS:
        raise ValidationError(f"{where}: {CRD_API_VERSION} {kind} is Calico's IPAM state, which topoipam does not "
                              "import (it claims its own blocks): leave it out (see docs/migration.md)")
    if kind not in _CRD_KINDS:
        raise ValidationError(f"{where}: {CRD_API_VERSION} {kind} is not a resource topoipam reads "
                              f"(it reads {', '.join(_CRD_KINDS)})")
    out = {**d, "apiVersion": API_VERSION, "kind": _CRD_KINDS[kind]}
    meta = d.get("metadata")
    if isinstance(meta, dict) and isinstance(meta.get("annotations"), dict):
        annotations = {k: v for k, v in meta["annotations"].items() if k != _CALICO_METADATA_ANNOTATION}
        out["metadata"] = {**meta, "annotations": annotations} if annotations else \
            {k: v for k, v in meta.items() if k != "annotations"}
    return out
