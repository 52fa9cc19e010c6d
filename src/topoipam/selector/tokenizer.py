"""Lexer of the Calico selector language (reference 2.1).

Owns the token kinds, the identifier alphabet, the 512-character label limit
and the tokenizer's error texts, which are Calico's word for word (they reach
operators through calicoctl-compatible messages).

Tokens are ``(kind, value)`` tuples; ``value`` is ``""`` for kinds without one.
The list always ends with an EOF token, so the parser may look one token past
any non-EOF token without a bounds check.
"""

from __future__ import annotations

from topoipam.errors import SelectorError

MAX_LABEL_LENGTH = 512

# Kind numbers and names follow Calico's tokenizer.Kind, because the names
# appear in parser error messages ("unexpected token: TokEOF()").
(
    NONE, LABEL, STRING, LBRACE, RBRACE, COMMA, EQ, NE, IN, NOT, NOTIN, CONTAINS,
    STARTSWITH, ENDSWITH, ALL, HAS, LPAREN, RPAREN, AND, OR, GLOBAL, EOF,
) = range(22)

KIND_NAMES = (
    "TokNone", "TokLabel", "TokStringLiteral", "TokLBrace", "TokRBrace", "TokComma",
    "TokEq", "TokNe", "TokIn", "TokNot", "TokNotIn", "TokContains", "TokStartsWith",
    "TokEndsWith", "TokAll", "TokHas", "TokLParen", "TokRParen", "TokAnd", "TokOr",
    "TokGlobal", "TokEOF",
)

IDENT_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_./-")
_SPACE = (" ", "\t")  # newline is deliberately not whitespace: Calico rejects it
_SINGLE = {"(": LPAREN, ")": RPAREN, "{": LBRACE, "}": RBRACE, ",": COMMA}
_DOUBLE = {"=": ("==", EQ, "expected =="), "&": ("&&", AND, "expected &&"), "|": ("||", OR, "expected ||")}
# Word operators, tried in this order after a label (so "not in" wins over "in").
_WORD_OPS = ((("contains",), CONTAINS), (("starts", "with"), STARTSWITH),
             (("ends", "with"), ENDSWITH), (("not", "in"), NOTIN), (("in",), IN))
# Function forms, recognised only where an operand may start.
_FUNCS = (("all(", ALL), ("global(", GLOBAL))


def token_str(token: tuple[int, str]) -> str:
    """Calico's rendering of a token in messages: ``Kind(Value)``."""
    return f"{KIND_NAMES[token[0]]}({token[1]})"


def valid_label(text: str) -> bool:
    """True when ``text`` is exactly one label the selector language accepts."""
    return 0 < len(text) <= MAX_LABEL_LENGTH and all(c in IDENT_CHARS for c in text)


def _skip_space(text: str, i: int) -> int:
    n = len(text)
    while i < n and text[i] in _SPACE:
        i += 1
    return i


def _cut_identifier(text: str, i: int) -> tuple[str, int]:
    """The identifier starting at ``i`` and the index after it."""
    j, n = i, len(text)
    while j < n and text[j] in IDENT_CHARS:
        j += 1
    ident = text[i:j]
    if len(ident) > MAX_LABEL_LENGTH:
        raise SelectorError(f"label too long: {ident}")
    if not ident:
        raise SelectorError("expected identifier")
    return ident, j


def _at_word_boundary(text: str, i: int) -> bool:
    return i >= len(text) or text[i] not in IDENT_CHARS


def _cut_word_op(text: str, i: int, words: tuple[str, ...]) -> int:
    """Index after the word operator at ``i``, or -1.

    In multi-word operators whitespace (any amount, also none) is skipped
    after every word, so ``startswith`` and ``not   in`` both match; only the
    end of the operator must be a word boundary (``inf`` is not ``in``).
    """
    for word in words:
        if not text.startswith(word, i):
            return -1
        i += len(word)
        if len(words) > 1:
            # Calico trims after the last word too, but not after a one-word
            # operator: "a in xyz" tokenizes (then fails in the parser) while
            # "a starts with xyz" is a tokenizer error.
            i = _skip_space(text, i)
    return i if _at_word_boundary(text, i) else -1


def _operator_after_label(text: str, i: int, label: str) -> tuple[tuple[int, str], int]:
    for words, kind in _WORD_OPS:
        j = _cut_word_op(text, i, words)
        if j >= 0:
            return (kind, ""), j
    raise SelectorError(f'expected operator after label "{label}"')


def _function_form(text: str, i: int) -> tuple[tuple[int, str], int] | None:
    """``has(label)``, ``all()`` or ``global()`` starting at ``i``, else None."""
    if text.startswith("has(", i):
        ident, i = _cut_identifier(text, _skip_space(text, i + 4))
        i = _skip_space(text, i)
        if not text.startswith(")", i):
            raise SelectorError("no closing ')' after has(")
        return (HAS, ident), i + 1
    for prefix, kind in _FUNCS:
        if text.startswith(prefix, i):
            i = _skip_space(text, i + len(prefix))
            if not text.startswith(")", i):
                raise SelectorError(f"no closing ')' after {prefix}")
            return (kind, ""), i + 1
    return None


def tokenize(text: str, offsets: list[int] | None = None) -> list[tuple[int, str]]:
    """Split ``text`` into tokens; raise SelectorError with Calico's text on bad input, its ``position``
    at the start of the token that failed. ``offsets``, if given, gets each token's start index."""
    tokens: list[tuple[int, str]] = []
    i = 0
    while True:
        i = _skip_space(text, i)
        if offsets is not None:
            offsets.append(i)
        try:
            i = _next_token(text, i, tokens)
        except SelectorError as err:
            err.position = i
            raise
        if tokens[-1][0] == EOF:
            return tokens


def _next_token(text: str, i: int, tokens: list[tuple[int, str]]) -> int:
    """Append the token starting at ``i`` (after spaces) to ``tokens``; the index after it."""
    n = len(text)
    if i >= n:
        tokens.append((EOF, ""))
        return i
    c = text[i]
    if c in _SINGLE:
        tokens.append((_SINGLE[c], ""))
        i += 1
    elif c == '"' or c == "'":
        # No escapes: the literal ends at the next quote of the same kind.
        end = text.find(c, i + 1)
        if end < 0:
            raise SelectorError("unterminated string")
        tokens.append((STRING, text[i + 1:end]))
        i = end + 1
    elif c in _DOUBLE:
        pair, kind, message = _DOUBLE[c]
        if not text.startswith(pair, i):
            raise SelectorError(message)
        tokens.append((kind, ""))
        i += 2
    elif c == "!":
        if text.startswith("!=", i):
            tokens.append((NE, ""))
            i += 2
        else:
            tokens.append((NOT, ""))
            i += 1
    elif tokens and tokens[-1][0] == LABEL:
        # Keywords are keywords only here, so "contains contains 'x'" is valid.
        token, i = _operator_after_label(text, i, tokens[-1][1])
        tokens.append(token)
    else:
        found = _function_form(text, i)
        if found is None:
            ident, i = _cut_identifier(text, i)
            found = (LABEL, ident), i
        tokens.append(found[0])
        i = found[1]
    return i
