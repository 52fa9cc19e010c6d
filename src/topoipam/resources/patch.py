"""Edits of resource documents that need no datastore: RFC 7386 JSON merge patch and label sets.

``resources.service`` plans its patch, label and IPAM-configuration writes with
these; they change copies and plain dicts, never a stored resource.
"""

from __future__ import annotations

import copy


def with_labels(resource, labels: dict):
    """A copy of ``resource`` whose labels are exactly ``labels``."""
    changed = copy.deepcopy(resource)
    changed.metadata.labels = labels
    return changed


def merge_patch(target, patch):
    """RFC 7386 JSON merge patch: objects merge recursively, ``null`` deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return patch
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out
