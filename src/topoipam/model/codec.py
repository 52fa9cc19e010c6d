"""Reading and writing resource files: YAML or JSON, several documents, ``...List`` kinds.

PyYAML is imported lazily (the CNI plugin never loads this module's YAML
path). Timestamps are read as plain strings, as Calico's JSON form has them.
"""

from __future__ import annotations

import json

from topoipam.errors import ValidationError
from topoipam.model.storage import describe, resource_from_dict
from topoipam.model.types import API_VERSION

_LIST_KINDS = {"IPPoolList": "IPPool", "NodeList": "Node",
               "IPAMConfigurationList": "IPAMConfiguration", "IPReservationList": "IPReservation",
               "ProfileList": "Profile",
               "List": None}  # kubectl's List (apiVersion v1): items of any kind, each naming its own
_LOADER = None
# Deepest nesting of lists/mappings a resource file may have (a v3 resource needs about 6). Deeper
# input is rejected before it can exhaust a stack (see _check_yaml_depth).
MAX_DEPTH = 64


def _loader():
    """A safe YAML loader (C-accelerated when available) that keeps timestamps as strings."""
    global _LOADER
    if _LOADER is None:
        import yaml

        base = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

        class Loader(base):  # type: ignore[misc, valid-type]
            def construct_mapping(self, node, deep=False):
                # go-yaml (and so calicoctl) rejects a key given twice; PyYAML would keep the last one.
                seen = set()
                for key_node, _value in node.value:
                    if not isinstance(key_node, yaml.ScalarNode):
                        continue  # a list or mapping as a key: super() reports it ("found unhashable key")
                    key = key_node.value
                    if key in seen:
                        raise yaml.constructor.ConstructorError(
                            None, None, f"mapping key {key!r} already defined", key_node.start_mark)
                    seen.add(key)
                return super().construct_mapping(node, deep)

        Loader.yaml_implicit_resolvers = {
            first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
            for first, resolvers in base.yaml_implicit_resolvers.items()
        }
        _LOADER = Loader
    return _LOADER


def _check_yaml_depth(yaml, text: str, source: str) -> None:
    """Reject nesting deeper than MAX_DEPTH from the event stream, before any node is composed.

    libyaml's composer recurses in C once per level: a document nested ~100,000 deep (200 KB of
    brackets) overflows the C stack and kills the process (a segfault, not an exception). The
    event parser is iterative; this pass costs about a third of the load.
    """
    depth = 0
    starts, ends = (yaml.MappingStartEvent, yaml.SequenceStartEvent), (yaml.MappingEndEvent, yaml.SequenceEndEvent)
    for event in yaml.parse(text, Loader=_loader()):
        kind = type(event)
        if kind in starts:
            depth += 1
            if depth > MAX_DEPTH:
                mark = event.start_mark
                raise ValidationError(f"{source}: cannot parse YAML at line {mark.line + 1}, column "
                                      f"{mark.column + 1}: nested more than {MAX_DEPTH} levels deep")
        elif kind in ends:
            depth -= 1


def _load_yaml(text: str, source: str) -> list:
    import yaml

    try:
        _check_yaml_depth(yaml, text, source)
        return list(yaml.load_all(text, Loader=_loader()))
    except ValueError as exc:  # a constructor's int() of a number over Python's 4300-digit limit
        if isinstance(exc, ValidationError):
            raise
        raise ValidationError(f"{source}: cannot parse YAML: {exc}") from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = exc.problem or exc.context or "malformed YAML"
        raise ValidationError(f"{source}: cannot parse YAML{where}: {problem}") from None
    except yaml.YAMLError as exc:
        raise ValidationError(f"{source}: cannot parse YAML: {exc}") from None


class _DuplicateKey(Exception):
    pass


def _unique_keys(pairs):
    out = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key)
        out[key] = value
    return out


def _load(text: str, source: str) -> list:
    stripped = text.lstrip()
    if stripped[:1] in ("{", "["):
        try:
            value = json.loads(text, object_pairs_hook=_unique_keys)
        except _DuplicateKey as exc:
            raise ValidationError(f"{source}: cannot parse JSON: key {exc.args[0]!r} given twice") from None
        except RecursionError:  # the C decoder's own guard (about 1000 levels), before ours below
            raise ValidationError(f"{source}: cannot parse JSON: nested more than {MAX_DEPTH} levels deep") from None
        except json.JSONDecodeError:
            pass  # flow-style YAML, or broken JSON: YAML gives the position of the problem
        except ValueError as exc:  # well-formed, but a number over Python's 4300-digit limit
            raise ValidationError(f"{source}: cannot parse JSON: {exc}") from None
        else:
            if _depth_over(value, MAX_DEPTH):
                raise ValidationError(f"{source}: cannot parse JSON: nested more than {MAX_DEPTH} levels deep")
            return value if isinstance(value, list) else [value]
    return _load_yaml(text, source)


def _depth_over(value, limit: int) -> bool:
    """Whether a decoded JSON value nests lists/objects more than ``limit`` deep (iterative: no recursion)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def _label(doc, index: int, source: str) -> str:
    """``document 2 (IPPool rack-1-ippool) of rack.yaml``: names the document in errors."""
    ident = ""
    if isinstance(doc, dict):
        kind = doc.get("kind")
        meta = doc.get("metadata")
        name = meta.get("name") if isinstance(meta, dict) else None
        if isinstance(kind, str) and isinstance(name, str):
            ident = f" ({kind} {name})"
        elif isinstance(kind, str):
            ident = f" ({kind})"
    return f"document {index}{ident} of {source}"


def _expand(doc, where: str) -> list:
    """A ``...List`` document becomes its items; anything else stays one document."""
    if not isinstance(doc, dict) or not isinstance(doc.get("kind"), str) or doc["kind"] not in _LIST_KINDS:
        return [(doc, where)]
    list_kind = doc["kind"]
    for key in doc:
        if key not in ("apiVersion", "kind", "metadata", "items"):
            raise ValidationError(f"{where}: {key}: unknown field (known fields: apiVersion, kind, metadata, items)")
    items = doc.get("items") or []
    if not isinstance(items, list):
        raise ValidationError(f"{where}: items: expected a list, got {describe(items)}")
    out = []
    for i, item in enumerate(items):
        if _LIST_KINDS[list_kind] is None:  # kubectl's List: each item is a whole document
            out.append((item, f"{where}, items[{i}]"))
            continue
        if isinstance(item, dict) and item.get("kind") not in (None, _LIST_KINDS[list_kind]):
            raise ValidationError(f"{where}: items[{i}].kind: a {list_kind} holds {_LIST_KINDS[list_kind]} items, "
                                  f"got {describe(item.get('kind'))}")
        if isinstance(item, dict):
            item = {"apiVersion": doc.get("apiVersion"), "kind": _LIST_KINDS[list_kind], **item}
        out.append((item, f"{where}, items[{i}]"))
    return out


def decode_documents(text: str, source: str) -> list:
    """Every resource in a YAML or JSON text, in file order; empty documents are skipped."""
    docs = [d for d in _load(text, source) if d is not None]
    resources = []
    for index, doc in enumerate(docs, start=1):
        for item, where in _expand(doc, _label(doc, index, source)):
            resources.append(resource_from_dict(item, where))
    if not resources:
        raise ValidationError("No resources specified")
    return resources


_DUMPER = None


def _dumper():
    """SafeDumper quoting the way go-yaml does: double quotes where quoting is needed ("12", "yes")."""
    global _DUMPER
    if _DUMPER is None:
        import yaml

        class Dumper(yaml.SafeDumper):
            def choose_scalar_style(self):
                style = super().choose_scalar_style()
                return '"' if style == "'" else style

        _DUMPER = Dumper
    return _DUMPER


def dumps_yaml(obj) -> str:
    """YAML the way sigs.k8s.io/yaml writes it: block style, keys sorted, 2-space indent."""
    import yaml

    return yaml.dump(obj, Dumper=_dumper(), default_flow_style=False, sort_keys=True,
                     allow_unicode=True, width=1 << 30)


def list_to_dict(kind: str, resources, resource_version: str = "") -> dict:
    """The ``<Kind>List`` form calicoctl prints for a listing: items in the order given."""
    from topoipam.model.storage import resource_to_dict

    metadata = {"resourceVersion": resource_version} if resource_version else {}
    return {"kind": f"{kind}List", "apiVersion": API_VERSION, "metadata": metadata,
            "items": [resource_to_dict(r) for r in resources]}


def dumps_json(obj) -> str:
    """JSON the way calicoctl writes it: 2-space indent, struct key order, no trailing newline."""
    return json.dumps(obj, indent=2, ensure_ascii=False)
