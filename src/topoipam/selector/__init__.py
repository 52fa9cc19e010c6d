"""Calico's label selector language: parse, canonical text, evaluation.

    sel = parse('rack == "0"')      # cached; SelectorError carries Calico's text
    sel.evaluate({"rack": "0"})     # True: whether these labels are selected
    str(sel)                        # canonical form, 'rack == "0"'; blank -> 'all()'

Selectors compare and hash by their canonical text, as Calico's UniqueID does.
Standard library only and cheap to import: the CNI plugin loads it.
"""

from __future__ import annotations

from functools import lru_cache

from topoipam.selector.parser import parse_tree
from topoipam.selector.tokenizer import MAX_LABEL_LENGTH, valid_label

__all__ = ["MAX_LABEL_LENGTH", "Selector", "parse", "valid_label", "validate"]


class Selector:
    """A parsed selector. Immutable; build it with ``parse``."""

    # ``evaluate(labels) -> bool`` is the compiled predicate itself, stored
    # per instance: no method frame between the caller and the closures.
    __slots__ = ("_text", "evaluate", "root")

    def __init__(self, root) -> None:
        out: list[str] = []
        root.render(out)
        self.root = root
        self._text = "".join(out)
        self.evaluate = root.compile()

    def __str__(self) -> str:
        return self._text

    def __repr__(self) -> str:
        return f"Selector({self._text!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Selector):
            return NotImplemented
        return self._text == other._text

    def __hash__(self) -> int:
        return hash(self._text)


@lru_cache(maxsize=4096)
def parse(text: str) -> Selector:
    """Parse ``text``; raise SelectorError (message = Calico's text) when it is invalid."""
    return Selector(parse_tree(text))


def validate(text: str) -> str:
    """The canonical form of ``text``; raise SelectorError when it is invalid."""
    return parse(text)._text
