"""Property tests of the selector language over generated selectors.

A generated selector is a small tree rendered to text with random spacing,
quoting, operator spellings (``startswith``, ``not  in``), redundant
parentheses and ``!`` runs. Properties: the canonical form re-parses to an
equal selector and is a fixed point, and both the parsed selector and its
canonical form select exactly the label sets a direct interpretation of the
tree selects.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from topoipam.selector import parse

LABELS = ["a", "b", "in", "not", "contains", "has", "all", "k8s.io/x-y_1"]
VALUES = ["", "a", "b", "ab", "x'y", 'x"y', " sp ", "in"]
SPACE = st.sampled_from(["", " ", "  ", "\t"])
SOME_SPACE = st.sampled_from([" ", "  ", "\t", " \t "])


@st.composite
def quoted(draw, value):
    if '"' in value:
        return f"'{value}'"
    if "'" in value:
        return f'"{value}"'
    q = draw(st.sampled_from(["'", '"']))
    return f"{q}{value}{q}"


def _compare(op, value):
    return {
        "==": lambda v: v is not None and v == value,
        "!=": lambda v: v is None or v != value,
        "contains": lambda v: v is not None and value in v,
        "starts": lambda v: v is not None and v.startswith(value),
        "ends": lambda v: v is not None and v.endswith(value),
    }[op]


@st.composite
def atoms(draw):
    """(text, labels -> bool) of one operation without leading '!'."""
    kind = draw(st.sampled_from(["has", "all", "global", "cmp", "set"]))
    label = draw(st.sampled_from(LABELS))
    sp = draw(SPACE)
    if kind == "has":
        return f"has({sp}{label}{draw(SPACE)})", lambda labels: label in labels
    if kind in ("all", "global"):
        return f"{kind}({sp})", lambda labels: True
    if kind == "cmp":
        op = draw(st.sampled_from(["==", "!=", "contains", "starts", "ends"]))
        value = draw(st.sampled_from(VALUES))
        if op in ("==", "!="):
            spelled = f"{sp}{op}"
        elif op == "contains":
            spelled = f"{draw(SOME_SPACE)}contains"
        else:
            spelled = f"{draw(SOME_SPACE)}{op}{draw(SPACE)}with"
        test = _compare(op, value)
        return f"{label}{spelled}{draw(SPACE)}{draw(quoted(value))}", lambda labels: test(labels.get(label))
    negated = draw(st.booleans())
    values = draw(st.lists(st.sampled_from(VALUES), max_size=4))
    items = [draw(quoted(v)) for v in values]
    body = ("," + draw(SPACE)).join(items) + draw(st.sampled_from(["", ","] if items else [""]))
    op = f"not{draw(SPACE)}in" if negated else "in"
    text = f"{label}{draw(SOME_SPACE)}{op}{draw(SPACE)}{{{draw(SPACE)}{body}{draw(SPACE)}}}"
    members = set(values)
    if negated:
        return text, lambda labels: labels.get(label) not in members
    return text, lambda labels: labels.get(label) in members


def _parens(draw, text):
    for _ in range(draw(st.integers(0, 2))):
        text = f"({draw(SPACE)}{text}{draw(SPACE)})"
    return text


@st.composite
def operations(draw, inner):
    """An operation: '!'* applied to an atom or to a parenthesised expression."""
    if draw(st.booleans()):
        text, fn = draw(atoms())
    else:
        text, fn = draw(inner)
        text = f"({text})"
    text = _parens(draw, text)
    nots = draw(st.integers(0, 3))
    prefix = "".join("!" + draw(SPACE) for _ in range(nots))
    if nots % 2:
        return prefix + text, lambda labels: not fn(labels)
    return prefix + text, fn


@st.composite
def expressions(draw, depth=2):
    """An || of &&s of operations, i.e. text that relies on precedence."""
    inner = expressions(depth=depth - 1) if depth > 0 else atoms()
    disjuncts = []
    for _ in range(draw(st.integers(1, 3))):
        ops = [draw(operations(inner)) for _ in range(draw(st.integers(1, 3)))]
        disjuncts.append(ops)

    def join(parts, word):
        return f"{draw(SPACE)}{word}{draw(SPACE)}".join(parts)

    text = join([join([t for t, _ in ops], "&&") for ops in disjuncts], "||")

    def evaluate(labels):
        return any(all(fn(labels) for _, fn in ops) for ops in disjuncts)
    return text, evaluate


LABEL_SETS = st.dictionaries(st.sampled_from(LABELS), st.sampled_from(VALUES + ["xabx", "bb"]), max_size=5)


@settings(max_examples=300, deadline=None)
@given(expressions(), st.lists(LABEL_SETS, min_size=1, max_size=6), SPACE, SPACE)
def test_round_trip_and_semantics(generated, label_sets, lead, trail):
    text, reference = generated
    sel = parse(lead + text + trail)
    canonical = str(sel)
    again = parse(canonical)
    assert again == sel
    assert str(again) == canonical
    for labels in label_sets:
        expected = reference(labels)
        assert sel.evaluate(labels) is expected, (text, labels)
        assert again.evaluate(labels) is expected, (canonical, labels)


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet="ab =!&|(){},'\"\tinothasl", max_size=30))
def test_arbitrary_text_parses_or_raises_selector_error(text):
    from topoipam.errors import SelectorError

    try:
        sel = parse(text)
    except SelectorError as err:
        assert str(err)
        return
    assert parse(str(sel)) == sel
