"""Calico's label selector language: parse, canonical text, evaluation.

    sel = parse('rack == "0"')      # cached; SelectorError carries Calico's text
    sel.evaluate({"rack": "0"})     # True
    str(sel)                        # canonical form, 'rack == "0"'; blank -> 'all()'

Selectors compare and hash by their canonical text, as Calico's UniqueID does.
Standard library only and cheap to import: the CNI plugin loads it.
"""

from __future__ import annotations

from functools import lru_cache
TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs milliseconds of import time on the CNI path
    from typing import Mapping

from topoipam.selector.parser import parse_tree
from topoipam.selector.tokenizer import MAX_LABEL_LENGTH, valid_label

__all__ = ["MAX_LABEL_LENGTH", "Selector", "parse", "valid_label", "validate"]


class Selector:
    """A parsed selector. Immutable; build it with ``parse``."""

    __slots__ = ("_text", "_predicate", "root")

    def __init__(self, root) -> None:
        out: list[str] = []
        root.render(out)
        self.root = root
        self._text = "".join(out)
        self._predicate = root.compile()

    def evaluate(self, labels: Mapping[str, str]) -> bool:
        """Whether ``labels`` (label name -> value) are selected."""
        return self._predicate(labels)

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
