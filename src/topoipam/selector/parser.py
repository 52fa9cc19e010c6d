"""Recursive-descent parser of the selector grammar (reference 2.2).

Precedence, lowest first: ``||``, ``&&``, then one operation with any number
of leading ``!`` (collapsed by parity, so ``!!has(a)`` is ``has(a)``). The
error texts are Calico's parser.go messages, including its token rendering
(``unexpected content at end of selector [TokRParen() TokEOF()]``).
"""

from __future__ import annotations

from topoipam.errors import SelectorError
from topoipam.selector import nodes
from topoipam.selector.tokenizer import (
    ALL, AND, COMMA, CONTAINS, ENDSWITH, EOF, EQ, GLOBAL, HAS, IN, LABEL, LBRACE,
    LPAREN, NE, NOT, NOTIN, OR, RBRACE, RPAREN, STARTSWITH, STRING, token_str, tokenize,
)

Token = tuple[int, str]

_COMPARE_OPS = {EQ: "==", NE: "!=", CONTAINS: "contains", STARTSWITH: "starts with", ENDSWITH: "ends with"}


class _TokenError(SelectorError):
    """A parser error at token ``index``; ``parse_tree`` turns it into a SelectorError at that token's offset."""

    def __init__(self, message: str, index: int) -> None:
        super().__init__(message)
        self.index = index


def parse_tree(text: str) -> nodes.Node:
    """The syntax tree of ``text``; an empty or blank selector is ``all()``. A SelectorError's
    ``position`` is the index in ``text`` of the token (or character) where parsing stopped."""
    offsets: list[int] = []
    tokens = tokenize(text, offsets)
    if tokens[0][0] == EOF:
        return nodes.All()
    try:
        node, pos = _or_expression(tokens, 0)
        if tokens[pos][0] != EOF:
            rest = " ".join(token_str(t) for t in tokens[pos:])
            raise _TokenError(f"unexpected content at end of selector [{rest}]", pos)
    except _TokenError as err:
        plain = SelectorError(err.message)
        plain.position = offsets[min(err.index, len(offsets) - 1)]
        raise plain from None
    return node


def _or_expression(tokens: list[Token], pos: int) -> tuple[nodes.Node, int]:
    node, pos = _and_expression(tokens, pos)
    operands = [node]
    while tokens[pos][0] == OR:
        node, pos = _and_expression(tokens, pos + 1)
        operands.append(node)
    return (operands[0] if len(operands) == 1 else nodes.Or(operands)), pos


def _and_expression(tokens: list[Token], pos: int) -> tuple[nodes.Node, int]:
    node, pos = _operation(tokens, pos)
    operands = [node]
    while tokens[pos][0] == AND:
        node, pos = _operation(tokens, pos + 1)
        operands.append(node)
    return (operands[0] if len(operands) == 1 else nodes.And(operands)), pos


def _operation(tokens: list[Token], pos: int) -> tuple[nodes.Node, int]:
    negated = False
    while tokens[pos][0] == NOT:
        negated = not negated
        pos += 1
    kind, value = tokens[pos]
    if kind == HAS:
        node, pos = nodes.Has(value), pos + 1
    elif kind == ALL:
        node, pos = nodes.All("all()"), pos + 1
    elif kind == GLOBAL:
        node, pos = nodes.All("global()"), pos + 1
    elif kind == LABEL:
        node, pos = _label_operation(tokens, pos)
    elif kind == LPAREN:
        node, pos = _or_expression(tokens, pos + 1)
        if tokens[pos][0] != RPAREN:
            raise _TokenError("expected )", pos)
        pos += 1
    else:
        raise _TokenError(f"unexpected token: {token_str(tokens[pos])}", pos)
    if not negated:
        return node, pos
    # "!(!x)" is x. Calico keeps both and prints "!!x", which re-parses to x
    # (leading "!" collapse by parity), so its text would not be a fixed
    # point; folding here makes str(parse(str(s))) == str(parse(s)) hold.
    return (node.operand if isinstance(node, nodes.Not) else nodes.Not(node)), pos


def _label_operation(tokens: list[Token], pos: int) -> tuple[nodes.Node, int]:
    """``label <op> "value"`` or ``label [not] in {...}``; ``pos`` is at the label."""
    if len(tokens) - pos < 3:
        # Calico counts the remaining tokens (EOF included) before looking at them.
        raise _TokenError("unexpected end of string looking for op", len(tokens) - 1)
    label = tokens[pos][1]
    op_kind = tokens[pos + 1][0]
    operand_kind, operand = tokens[pos + 2]
    if op_kind in _COMPARE_OPS:
        if operand_kind != STRING:
            raise _TokenError("expected string", pos + 2)
        return nodes.Compare(label, _COMPARE_OPS[op_kind], operand), pos + 3
    if op_kind == IN or op_kind == NOTIN:
        if operand_kind != LBRACE:
            raise _TokenError("expected set literal", pos + 2)
        values, pos = _set_literal(tokens, pos + 3)
        return nodes.InSet(label, op_kind == NOTIN, values), pos
    raise _TokenError(f"expected == or != not: {token_str(tokens[pos + 1])}", pos + 1)


def _set_literal(tokens: list[Token], pos: int) -> tuple[list[str], int]:
    """Strings separated by commas (trailing comma allowed) up to ``}``."""
    values = []
    while tokens[pos][0] == STRING:
        values.append(tokens[pos][1])
        pos += 1
        if tokens[pos][0] != COMMA:
            break
        pos += 1
    if tokens[pos][0] != RBRACE:
        raise _TokenError("expected }", pos)
    return values, pos + 1
