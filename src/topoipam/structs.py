"""A start-up-cheap stand-in for the part of ``dataclasses`` topoipam uses.

Why: ``topoipam-cni`` is exec'd once per pod. Importing ``dataclasses`` pulls in
``inspect`` (and ``ast``, ``dis``, ``tokenize``...), and ``@dataclass`` spends
about half a millisecond per class building its methods; with the ~30 value
classes on the plugin's import path that was a quarter of its start-up time.
This module builds the same ``__init__`` with one small ``exec`` per class, on
the class's first instantiation, and shares generic ``__eq__``/``__repr__``; it
imports nothing.

Supported: ``@dataclass`` and ``@dataclass(frozen=..., slots=...)``,
``field(default=..., default_factory=..., compare=..., repr=...)``,
``fields(obj_or_class)`` and ``replace(obj, **changes)``, with the same meaning
as in the standard library. Instances compare equal when they are of the same
class and their compared fields are equal; frozen classes are hashable.
Annotations are only read for their names, so ``from __future__ import
annotations`` modules work unchanged; a ``ClassVar[...]`` annotation is not a field.
"""

_MISSING = object()


class FrozenInstanceError(AttributeError):
    """Assigning to a field of a frozen instance."""


class Field:
    __slots__ = ("name", "default", "default_factory", "compare", "repr")

    def __init__(self, default=_MISSING, default_factory=_MISSING, compare=True, repr=True):
        self.name = ""
        self.default = default
        self.default_factory = default_factory
        self.compare = compare
        self.repr = repr


def field(*, default=_MISSING, default_factory=_MISSING, compare=True, repr=True):
    return Field(default, default_factory, compare, repr)


def fields(obj_or_class) -> tuple:
    return tuple(obj_or_class.__struct_fields__.values())


def replace(obj, **changes):
    values = {name: getattr(obj, name) for name in obj.__struct_fields__}
    values.update(changes)
    return type(obj)(**values)


def dataclass(cls=None, /, *, frozen=False, slots=False):
    def wrap(cls):
        return _build(cls, frozen, slots)

    return wrap if cls is None else wrap(cls)


def _collect_fields(cls) -> dict:
    found: dict = {}
    for base in reversed(cls.__mro__[1:]):
        found.update(getattr(base, "__struct_fields__", {}))
    for name, annotation in cls.__dict__.get("__annotations__", {}).items():
        if isinstance(annotation, str) and annotation.replace("typing.", "").startswith("ClassVar"):
            continue
        value = cls.__dict__.get(name, _MISSING)
        spec = value if isinstance(value, Field) else Field(default=value)
        spec.name = name
        found[name] = spec
    return found


def _init_source(found: dict, setter: str) -> tuple[str, dict]:
    params, lines, env = [], [], {"_MISSING": _MISSING, "_setattr": object.__setattr__}
    for name, spec in found.items():
        value = name
        if spec.default_factory is not _MISSING:
            env[f"_factory_{name}"] = spec.default_factory
            params.append(f"{name}=_MISSING")
            value = f"_factory_{name}() if {name} is _MISSING else {name}"
        elif spec.default is not _MISSING:
            env[f"_default_{name}"] = spec.default
            params.append(f"{name}=_default_{name}")
        else:
            params.append(name)
        lines.append(setter.format(name=name, value=value))
    body = "\n".join(f"    {line}" for line in lines) or "    pass"
    return f"def __init__(self, {', '.join(params)}):\n{body}\n", env


def _build(cls, frozen: bool, slots: bool):
    found = _collect_fields(cls)
    if slots:
        namespace = {k: v for k, v in cls.__dict__.items() if k not in found and k not in ("__dict__", "__weakref__")}
        namespace["__slots__"] = tuple(n for n in found if n not in _inherited_slots(cls))
        cls = type(cls)(cls.__name__, cls.__bases__, namespace)
    else:
        for name, spec in found.items():
            if name in cls.__dict__ and isinstance(cls.__dict__[name], Field):
                if spec.default is _MISSING:
                    delattr(cls, name)
                else:
                    setattr(cls, name, spec.default)
    cls.__init__ = _first_init(cls, "_setattr(self, {name!r}, {value})" if frozen else "self.{name} = {value}")
    cls.__struct_fields__ = found
    cls.__struct_compare__ = tuple(n for n, s in found.items() if s.compare)
    cls.__eq__ = _eq
    cls.__repr__ = _repr
    if frozen:
        cls.__setattr__ = _frozen_setattr
        cls.__delattr__ = _frozen_setattr
        cls.__hash__ = _hash
    else:
        cls.__hash__ = None
    return cls


def _first_init(cls, setter: str):
    """An ``__init__`` that builds the class's real one on first use, puts it in its place and calls it.

    Compiling each class's ``__init__`` at import was most of this module's cost
    on the CNI plugin's start-up (~35 classes on its path, few of them ever
    instantiated by one request)."""

    def __init__(self, *args, **kwargs):
        source, env = _init_source(cls.__struct_fields__, setter)
        exec(source, env)
        real = env["__init__"]
        real.__qualname__ = f"{cls.__qualname__}.__init__"
        cls.__init__ = real
        real(self, *args, **kwargs)

    __init__.__qualname__ = f"{cls.__qualname__}.__init__"
    return __init__


def _inherited_slots(cls) -> set:
    names: set = set()
    for base in cls.__mro__[1:]:
        names.update(getattr(base, "__slots__", ()))
    return names


def _key(obj) -> tuple:
    return tuple(getattr(obj, name) for name in obj.__struct_compare__)


def _eq(self, other):
    if other.__class__ is not self.__class__:
        return NotImplemented
    return _key(self) == _key(other)


def _hash(self):
    return hash(_key(self))


def _repr(self):
    shown = ", ".join(f"{n}={getattr(self, n)!r}" for n, s in self.__struct_fields__.items() if s.repr)
    return f"{self.__class__.__qualname__}({shown})"


def _frozen_setattr(self, name, *value):
    raise FrozenInstanceError(f"cannot assign to field {name!r} of frozen {self.__class__.__name__}")
