"""The change a write makes to the v3 resources, per resource: created, replaced or deleted, and the
fields (spec and labels) that differ. What ``--dry-run`` prints; it compares two datastore states
(before and after the write, made on a copy), so it shows what the write itself decided: defaults
filled in, validation's normal form, a patch merged."""

from __future__ import annotations

import json

from topoipam.model.storage import from_storage, resource_to_dict
from topoipam.resources.keys import PLURAL, resource_prefix
from topoipam.structs import dataclass, field

CREATED, REPLACED, DELETED = "created", "replaced", "deleted"


@dataclass
class FieldChange:
    path: str  # e.g. spec.nodeSelector, metadata.labels.rack
    old: object  # None: absent
    new: object


@dataclass
class ResourceChange:
    kind: str
    name: str
    action: str  # created, replaced or deleted
    fields: list[FieldChange] = field(default_factory=list)


def resource_state(store, decoded=None) -> dict[tuple[str, str], dict]:
    """(kind, name) -> the parts of each stored resource a change is shown in: labels and spec.
    ``decoded``: a ``store.decoded.Decoded`` of an earlier read of the same store (the dry run's before)."""
    out = {}
    for kind in PLURAL:
        for rec in store.list(resource_prefix(kind)):
            name, state = decoded.of(rec, _state, kind) if decoded is not None else _state(rec, kind)
            out[(kind, name)] = state
    return out


def _state(rec, kind: str) -> tuple[str, dict]:
    doc = resource_to_dict(from_storage(kind, rec.value, rec.revision))
    return doc["metadata"]["name"], {"metadata": {"labels": doc["metadata"].get("labels") or {}},
                                     "spec": doc["spec"]}


def changes(before: dict, after: dict) -> list[ResourceChange]:
    """Per resource that differs between two ``resource_state`` results, in kind then name order."""
    out = []
    for key in sorted(before.keys() | after.keys(), key=lambda k: (list(PLURAL).index(k[0]), k[1])):
        old, new = before.get(key), after.get(key)
        if old == new:
            continue  # an apply or replace with the stored content writes no change worth showing
        action = CREATED if old is None else DELETED if new is None else REPLACED
        out.append(ResourceChange(*key, action, _field_changes(old or {}, new or {}, "")))
    return out


def _field_changes(old: dict, new: dict, prefix: str) -> list[FieldChange]:
    """Leaf differences of two JSON documents; lists compare whole (a selector list, CIDRs)."""
    out = []
    for k in sorted(set(old) | set(new), key=str):
        path, a, b = f"{prefix}{k}", old.get(k), new.get(k)
        if a == b:
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            out += _field_changes(a, b, path + ".")
        else:
            out.append(FieldChange(path, a, b))
    return out


def describe_value(value) -> str:
    return "<absent>" if value is None else json.dumps(value)
