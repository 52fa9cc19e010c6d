"""Syntax tree of a parsed selector: canonical text and compiled evaluation.

Every node can ``render`` itself into Calico's canonical string form
(``Selector.String()`` in ast.go) and ``compile`` itself into a plain
function ``labels -> bool``. Compiling once per parsed selector keeps the
per-assignment cost to a few dictionary look-ups: no tree walk, no dispatch
on node types at evaluation time.

Semantics of an absent label (reference 2.3): ``==``, ``in``, ``contains``,
``starts with``, ``ends with`` and ``has`` are false; ``!=`` and ``not in``
are true. Label values are strings, so ``labels.get(name)`` returning None
never equals a value and is never in a set, which gives exactly that table.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs milliseconds of import time on the CNI path
    from typing import Callable, Mapping

    Labels = Mapping[str, str]
    Predicate = Callable[[Labels], bool]


def quote(value: str) -> str:
    """Calico's quoting: double quotes unless the value holds one."""
    return f"'{value}'" if '"' in value else f'"{value}"'


def _always_true(labels: Labels) -> bool:
    return True


class Node:
    __slots__ = ()

    def render(self, out: list[str]) -> None:
        raise NotImplementedError

    def compile(self) -> Predicate:
        raise NotImplementedError


class All(Node):
    __slots__ = ("word",)

    def __init__(self, word: str = "all()") -> None:
        self.word = word  # "all()" or "global()": same meaning, kept apart in the text

    def render(self, out: list[str]) -> None:
        out.append(self.word)

    def compile(self) -> Predicate:
        return _always_true


class Has(Node):
    __slots__ = ("label",)

    def __init__(self, label: str) -> None:
        self.label = label

    def render(self, out: list[str]) -> None:
        out.append(f"has({self.label})")

    def compile(self) -> Predicate:
        label = self.label
        return lambda labels: label in labels


class Compare(Node):
    """``label <op> "value"`` for the five string operators."""

    __slots__ = ("label", "op", "value")

    def __init__(self, label: str, op: str, value: str) -> None:
        self.label, self.op, self.value = label, op, value

    def render(self, out: list[str]) -> None:
        out.append(f"{self.label} {self.op} {quote(self.value)}")

    def compile(self) -> Predicate:
        label, value, op = self.label, self.value, self.op
        if op == "==":
            return lambda labels: labels.get(label) == value
        if op == "!=":
            return lambda labels: labels.get(label) != value
        if op == "contains":
            def contains(labels: Labels) -> bool:
                v = labels.get(label)
                return v is not None and value in v
            return contains
        if op == "starts with":
            def starts_with(labels: Labels) -> bool:
                v = labels.get(label)
                return v is not None and v.startswith(value)
            return starts_with
        if op == "ends with":
            def ends_with(labels: Labels) -> bool:
                v = labels.get(label)
                return v is not None and v.endswith(value)
            return ends_with
        raise AssertionError(f"unknown operator {op}")


class InSet(Node):
    """``label in {...}`` / ``label not in {...}``; values sorted and de-duplicated."""

    __slots__ = ("label", "negated", "values")

    def __init__(self, label: str, negated: bool, values: list[str]) -> None:
        self.label, self.negated = label, negated
        self.values = tuple(sorted(set(values)))  # code point order = Go's byte order

    def render(self, out: list[str]) -> None:
        items = ", ".join(quote(v) for v in self.values)
        out.append(f"{self.label} {'not in' if self.negated else 'in'} {{{items}}}")

    def compile(self) -> Predicate:
        label, members = self.label, frozenset(self.values)
        if self.negated:
            return lambda labels: labels.get(label) not in members
        return lambda labels: labels.get(label) in members


class Not(Node):
    __slots__ = ("operand",)

    def __init__(self, operand: Node) -> None:
        self.operand = operand

    def render(self, out: list[str]) -> None:
        out.append("!")
        self.operand.render(out)

    def compile(self) -> Predicate:
        if isinstance(self.operand, Has):  # "!has(x)" is common in pool selectors
            label = self.operand.label
            return lambda labels: label not in labels
        inner = self.operand.compile()
        return lambda labels: not inner(labels)


class _Junction(Node):
    """``&&`` or ``||`` of two or more operands; always parenthesised in text."""

    __slots__ = ("operands",)
    joiner = ""

    def __init__(self, operands: list[Node]) -> None:
        self.operands = operands

    def render(self, out: list[str]) -> None:
        out.append("(")
        for index, operand in enumerate(self.operands):
            if index:
                out.append(self.joiner)
            operand.render(out)
        out.append(")")


class And(_Junction):
    __slots__ = ()
    joiner = " && "

    def compile(self) -> Predicate:
        preds = tuple(op.compile() for op in self.operands)
        if len(preds) == 2:
            first, second = preds
            return lambda labels: first(labels) and second(labels)

        def conjunction(labels: Labels) -> bool:
            for pred in preds:
                if not pred(labels):
                    return False
            return True
        return conjunction


class Or(_Junction):
    __slots__ = ()
    joiner = " || "

    def compile(self) -> Predicate:
        preds = tuple(op.compile() for op in self.operands)
        if len(preds) == 2:
            first, second = preds
            return lambda labels: first(labels) or second(labels)

        def disjunction(labels: Labels) -> bool:
            for pred in preds:
                if pred(labels):
                    return True
            return False
        return disjunction
