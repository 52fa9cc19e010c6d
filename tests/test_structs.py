"""topoipam.structs behaves like the standard library's dataclasses for what topoipam uses."""

from __future__ import annotations

import subprocess
import sys
from typing import ClassVar

import pytest

from topoipam.structs import FrozenInstanceError, dataclass, field, fields, replace


@dataclass
class Point:
    x: int
    y: int = 0
    tags: list[str] = field(default_factory=list)
    note: str = field(default="", compare=False, repr=False)
    registry: ClassVar[dict] = {}


@dataclass(frozen=True, slots=True)
class Key:
    name: str
    revision: int = 0


@dataclass
class Point3(Point):
    z: int = 0


def test_init_defaults_and_factories_are_per_instance():
    a, b = Point(1), Point(2, 3)
    a.tags.append("x")
    assert (a.x, a.y, a.tags, b.x, b.y, b.tags) == (1, 0, ["x"], 2, 3, [])
    assert Point(1, tags=["t"]).tags == ["t"]
    with pytest.raises(TypeError):
        Point()


def test_eq_repr_and_compare_false():
    assert Point(1, 2) == Point(1, 2, note="different")
    assert Point(1, 2) != Point(1, 3)
    assert Point(1) != Point3(1)
    assert repr(Point(1, 2)) == "Point(x=1, y=2, tags=[])"
    with pytest.raises(TypeError):
        hash(Point(1))


def test_classvar_is_not_a_field():
    assert [f.name for f in fields(Point)] == ["x", "y", "tags", "note"]
    assert Point.registry == {}


def test_frozen_slots_hashable_and_immutable():
    k = Key("a", 3)
    assert {k: 1}[Key("a", 3)] == 1
    with pytest.raises(FrozenInstanceError):
        k.name = "b"
    with pytest.raises(AttributeError):
        k.other = 1  # slots: no instance dict
    assert Key.__slots__ == ("name", "revision")


def test_inheritance_and_replace():
    p = Point3(1, 2, z=5)
    assert [f.name for f in fields(p)] == ["x", "y", "tags", "note", "z"]
    q = replace(p, y=9)
    assert (q.x, q.y, q.z) == (1, 9, 5) and type(q) is Point3
    assert replace(Key("a"), revision=2) == Key("a", 2)


def test_importing_structs_imports_nothing_heavy():
    code = "import sys, topoipam.structs; print(' '.join(sorted(sys.modules)))"
    loaded = set(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split())
    assert not loaded & {"dataclasses", "inspect", "typing", "re"}
