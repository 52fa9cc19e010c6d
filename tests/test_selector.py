"""Selector language: match cases, canonical form and errors of reference section 2.

The match rows are reference 2.4 (Calico's parser_test selectorTests), each
row with each label set; the invalid selectors are reference 2.5 with
Calico's error texts.
"""

from __future__ import annotations

import pytest

from topoipam.errors import SelectorError, ValidationError
from topoipam.selector import MAX_LABEL_LENGTH, Selector, parse, valid_label, validate

Q1, Q2 = "'", '"'

# (row, selector, labels, expected match)
MATCH_CASES = [
    (1, 'a == "b"', {"a": "b"}, True),
    (2, 'a == "b"', {"a": "b", "c": "d"}, True),
    (3, 'a == "b"', {}, False),
    (3, 'a == "b"', {"a": "c"}, False),
    (3, 'a == "b"', {"c": "d"}, False),
    (4, 'a == "b" && c == "d"', {"a": "b", "c": "d"}, True),
    (5, 'a == "b" && c == "d"', {"a": "b", "c": "e"}, False),
    (5, 'a == "b" && c == "d"', {"a": "b"}, False),
    (5, 'a == "b" && c == "d"', {"c": "d"}, False),
    (5, 'a == "b" && c == "d"', {"a": "c", "c": "d"}, False),
    (5, 'a == "b" && c == "d"', {}, False),
    (6, 'a == "b" || c == "d"', {"a": "b"}, True),
    (6, 'a == "b" || c == "d"', {"c": "d"}, True),
    (6, 'a == "b" || c == "d"', {"a": "b", "c": "d"}, True),
    (7, 'a == "b" || c == "d"', {"a": "e", "c": "e"}, False),
    (7, 'a == "b" || c == "d"', {}, False),
    (7, 'a == "b" || c == "d"', {"c": "e"}, False),
    (7, 'a == "b" || c == "d"', {"a": "e"}, False),
    (8, "a in {\"'\", '\"', \"c\"}", {"a": "c"}, True),
    (8, "a in {\"'\", '\"', \"c\"}", {"a": Q2}, True),
    (8, "a in {\"'\", '\"', \"c\"}", {"a": Q1}, True),
    (9, "a in {\"'\", '\"', \"c\"}", {}, False),
    (9, "a in {\"'\", '\"', \"c\"}", {"a": "e"}, False),
    (10, "a not in {\"'\", '\"', \"c\"}", {}, True),
    (10, "a not in {\"'\", '\"', \"c\"}", {"a": "e"}, True),
    (11, "a not in {\"'\", '\"', \"c\"}", {"a": "c"}, False),
    (11, "a not in {\"'\", '\"', \"c\"}", {"a": Q2}, False),
    (11, "a not in {\"'\", '\"', \"c\"}", {"a": Q1}, False),
    (12, 'a != "b"', {"a": "a"}, True),
    (13, 'a != "a"', {}, True),
    (14, 'a != "a"', {"a": "a"}, False),
    (14, "a != 'a'", {"a": "a"}, False),
    (15, 'a contains "a"', {"a": "bab"}, True),
    (15, 'a contains "a"', {"a": "aaa", "b": "c"}, True),
    (15, 'a contains "a"', {"a": "a"}, True),
    (16, 'a contains "a"', {"a": "b"}, False),
    (16, 'a contains "a"', {"b": "aaa"}, False),
    (16, 'a contains "a"', {}, False),
    (17, 'a starts with "a"', {"a": "abb"}, True),
    (17, 'a starts with "a"', {"a": "baa"}, False),
    (17, 'a starts with "a"', {"b": "aaa"}, False),
    (18, 'a ends with "a"', {"a": "bba"}, True),
    (18, 'a ends with "a"', {"a": "aab"}, False),
    (18, 'a ends with "a"', {"b": "aaa"}, False),
    (19, '!a in {"a"}', {"a": "b"}, True),
    (19, '!a in {"a"}', {"a": "a"}, False),
    (20, 'a in {"a", "b"}', {"a": "b"}, True),
    (20, 'a in {"a", "b"}', {"a": "a"}, True),
    (20, 'a in {"a", "b"}', {"a": "c"}, False),
    (21, 'a not in {"d", "e"}', {"a": "a"}, True),
    (21, 'a not in {"a"}', {"a": "a"}, False),
    (22, "has(a)", {"a": "b"}, True),
    (22, "has(b)", {"a": "b"}, False),
    (23, "!has(a)", {"b": "b"}, True),
    (23, "!has(a)", {"a": "b"}, False),
    (23, "! has(a)", {"a": "b"}, False),
    (24, "!!has(b)", {"a": "b"}, False),
    (24, "!!! has(a)", {"a": "b"}, False),
    (24, "!!!has(a)", {"a": "b"}, False),
    (24, "!! ! has(a)", {"a": "b"}, False),
    (24, "! !!has(a)", {"a": "b"}, False),
    (25, "", {}, True),
    (25, "", {"a": "b"}, True),
    (25, " ", {}, True),
    (25, " ", {"a": "b"}, True),
    (25, "all()", {}, True),
    (25, "all()", {"a": "b"}, True),
    (25, " all()", {}, True),
    (25, " all()", {"a": "b"}, True),
    (25, "global()", {}, True),
    (25, " global()", {}, True),
    (25, " global()", {"a": "b"}, True),
    (26, "a == 'a1' && b == 'b1'", {"a": "a1", "b": "b1"}, True),
    (26, "a == 'a1' && b != 'b1'", {"a": "a1", "b": "b1"}, False),
    (26, "a != 'a1' && b == 'b1'", {"a": "a1", "b": "b1"}, False),
    (26, "a != 'a1' && b != 'b1'", {"a": "a1", "b": "b1"}, False),
    (26, "a != 'a1' && !b == 'b1'", {"a": "a1", "b": "b1"}, False),
    (27, "!a == 'a1' && b == 'b1'", {"a": "a1", "b": "b1"}, False),
    (28, "has(a) && !has(b)", {"a": "a"}, True),
    (28, "!has(b) && has(a)", {"a": "a"}, True),
    (29, "!(!has(a) || has(b))", {"a": "a"}, True),
    (29, "!(has(b) || !has(a))", {"a": "a"}, True),
    (30, "a == 'a1' || b == 'b1'", {"a": "a1", "b": "b1"}, True),
    (30, "a == 'a1' || b != 'b1'", {"a": "a1", "b": "b1"}, True),
    (30, "a != 'a1' || b == 'b1'", {"a": "a1", "b": "b1"}, True),
    (31, "a != 'a1' || b != 'b1'", {"a": "a1", "b": "b1"}, False),
    (32, "! a == 'a1' || ! b == 'b1'", {"a": "a1", "b": "b1"}, False),
    # IPAM-relevant selectors (ipam_test.go).
    ("ipam", 'foo == "bar"', {"foo": "bar"}, True),
    ("ipam", 'foo != "bar"', {"foo": "bar"}, False),
    ("ipam", "name in {'node1', 'node2'}", {"name": "node1"}, True),
    # Three-way junctions take the general (non-pairwise) path.
    ("n-ary", 'has(a) && has(b) && c == "d"', {"a": "", "b": "", "c": "d"}, True),
    ("n-ary", 'has(a) && has(b) && c == "d"', {"a": "", "b": ""}, False),
    ("n-ary", "has(a) || has(b) || has(c)", {"c": "x"}, True),
    ("n-ary", "has(a) || has(b) || has(c)", {"d": "x"}, False),
    # Empty values and empty sets.
    ("empty", 'a == ""', {"a": ""}, True),
    ("empty", 'a == ""', {}, False),
    ("empty", 'a != ""', {}, True),
    ("empty", "a in {}", {"a": "x"}, False),
    ("empty", "a not in {}", {}, True),
    ("empty", 'a starts with ""', {"a": "x"}, True),
    ("empty", 'a ends with ""', {}, False),
]


@pytest.mark.parametrize(("row", "text", "labels", "expected"), MATCH_CASES,
                         ids=[f"{c[0]}-{c[1]!r}-{sorted(c[2].items())}" for c in MATCH_CASES])
def test_match_cases(row, text, labels, expected):
    sel = parse(text)
    assert sel.evaluate(labels) is expected
    # The canonical form selects exactly the same label sets.
    assert parse(str(sel)).evaluate(labels) is expected


CANONICAL = [
    ("", "all()"),
    ("   ", "all()"),
    ("\t", "all()"),
    (" all() ", "all()"),
    (" (all() )", "all()"),
    (" global() ", "global()"),
    ("! (has( b)||! has(a ))", "!(has(b) || !has(a))"),
    ('! (a == "b"&&! c != "d")', '!(a == "b" && !c != "d")'),
    ("a == \"'\"", "a == \"'\""),
    ("a == '\"'", "a == '\"'"),
    ("a == 'x'", 'a == "x"'),
    ("a contains '\"'", "a contains '\"'"),
    ("a contains \"'\"", "a contains \"'\""),
    ("a startswith '\"'", "a starts with '\"'"),
    ("a endswith \"'\"", "a ends with \"'\""),
    ("a starts   with 'x'", 'a starts with "x"'),
    ("a!='\"'", "a != '\"'"),
    ('a=="b"', 'a == "b"'),
    ('a in {"d"}', 'a in {"d"}'),
    ('a in {"a", "b"}', 'a in {"a", "b"}'),
    ('a in {"d", "a", "b"}', 'a in {"a", "b", "d"}'),
    ('a in {"z", "x", "y", "a"}', 'a in {"a", "x", "y", "z"}'),
    ('a in {"z", "z", "x", "y", "x", "a"}', 'a in {"a", "x", "y", "z"}'),
    ('a in {"B", "a", "_"}', 'a in {"B", "_", "a"}'),  # byte order, not case-folded
    ("a in {}", "a in {}"),
    ('a in {"x",}', 'a in {"x"}'),
    ("a in{'x','\"'}", "a in {'\"', \"x\"}"),
    ('a notin {"y", "x"}', 'a not in {"x", "y"}'),
    ('a not   in {"x"}', 'a not in {"x"}'),
    ('contains contains "contains"', 'contains contains "contains"'),
    ("contains contains 'contains'", 'contains contains "contains"'),
    ('label contains"value"', 'label contains "value"'),
    ('startswith starts with "value"', 'startswith starts with "value"'),
    ('endswith ends with "value"', 'endswith ends with "value"'),
    ('in in {"in"}', 'in in {"in"}'),
    ('not not in {"not"}', 'not not in {"not"}'),
    ('all == "x" && has == "y" && global != "z"', '(all == "x" && has == "y" && global != "z")'),
    ("has(calico/k8s_NS-.1/role)", "has(calico/k8s_NS-.1/role)"),
    ('calico/k8s_ns == "kube-system" && k8s-app == "kube-dns"',
     '(calico/k8s_ns == "kube-system" && k8s-app == "kube-dns")'),
    # Junctions are always parenthesised, nested ones too; && binds tighter than ||.
    ('a == "b" && c == "d"', '(a == "b" && c == "d")'),
    ('a == "b" || c == "d" && e == "f"', '(a == "b" || (c == "d" && e == "f"))'),
    ('(a == "b" || c == "d") && e == "f"', '((a == "b" || c == "d") && e == "f")'),
    ("((((has(a)))))", "has(a)"),
    ("(has(a) && has(b)) && has(c)", "((has(a) && has(b)) && has(c))"),
    ("!(!(k == 'v' && has(t) || all()) && (a in {'b', 'c'}))",
     '!(!((k == "v" && has(t)) || all()) && a in {"b", "c"})'),
    ("!(k == 'v')", '!k == "v"'),
    # "!" parity.
    ("!!has(a)", "has(a)"),
    ("! !! has(a)", "!has(a)"),
    ("! ! has(a)", "has(a)"),
    ("!!!has(a)", "!has(a)"),
    ("!!(has(a) || has(b))", "(has(a) || has(b))"),
    ("!all()", "!all()"),
]


@pytest.mark.parametrize(("text", "expected"), [c for c in CANONICAL if c[1] is not None])
def test_canonical_form(text, expected):
    sel = parse(text)
    assert str(sel) == expected
    assert validate(text) == expected
    again = parse(expected)
    assert str(again) == expected
    assert again == sel and hash(again) == hash(sel)


def test_selector_equality_and_repr():
    assert parse('a == "b"') == parse("a=='b'")
    assert parse('a == "b"') != parse('a == "c"')
    assert parse("") == parse("all()")
    assert parse("all()") != parse("global()")
    assert parse('a == "b"') != 'a == "b"'
    assert len({parse('a in {"x", "y"}'), parse("a in {'y','x','y'}")}) == 1
    assert repr(parse("has(a)")) == "Selector('has(a)')"
    assert isinstance(parse("has(a)"), Selector)


def test_parse_is_cached():
    assert parse('rack == "0"') is parse('rack == "0"')


# (selector, Calico's message)
INVALID = [
    ("b == b", "expected string"),
    ("b contains b", "expected string"),
    # Calico trims spaces after a multi-word operator and then needs a word
    # boundary, so these fail in its tokenizer rather than its parser.
    ("b starts with b", 'expected operator after label "b"'),
    ("b ends with b", 'expected operator after label "b"'),
    ('b starts with "b" && c ends with c', 'expected operator after label "c"'),
    ("b contains  b", "expected string"),
    ("'b1' == b", "unexpected token: TokStringLiteral(b1)"),
    ("b", "unexpected end of string looking for op"),
    ("a b", 'expected operator after label "a"'),
    ("!", "unexpected token: TokEOF()"),
    ('foo == "bar" &', "expected &&"),
    ('foo == "bar" |', "expected ||"),
    ("foo != ||", "expected string"),
    ('foo in {"", ||', "expected }"),
    ('foo in ""', "expected set literal"),
    ('"FOO', "unterminated string"),
    ("\"FOO'", "unterminated string"),
    ("'FOO", "unterminated string"),
    ("(", "unexpected token: TokEOF()"),
    ('(a == "foo"', "expected )"),
    (")", "unexpected token: TokRParen()"),
    ("()", "unexpected token: TokRParen()"),
    ("%", "expected identifier"),
    ('a == "b" && %', "expected identifier"),
    ('a == "b" || %', "expected identifier"),
    ("a ", "unexpected end of string looking for op"),
    ("has(foo) &&", "unexpected token: TokEOF()"),
    # tokenizer_test
    ('label == "value', "unterminated string"),
    ("label == 'value", "unterminated string"),
    ('label = "value"', "expected =="),
    ("all(", "no closing ')' after all("),
    ("global(", "no closing ')' after global("),
    ("has()", "expected identifier"),
    ("has(foo", "no closing ')' after has("),
    ("has( foo ", "no closing ')' after has("),
    ('a == "b" & has(foo)', "expected &&"),
    ('a == "b" | has(foo)', "expected ||"),
    ('label starts foo "value"', 'expected operator after label "label"'),
    ('label inf "value"', 'expected operator after label "label"'),
    ('label ends foo "value"', 'expected operator after label "label"'),
    ('label ends withs "value"', 'expected operator after label "label"'),
    ('label squiggles "value"', 'expected operator after label "label"'),
    ("a starts with xyz", 'expected operator after label "a"'),
    # validator (calicoctl field validation)
    ("thing=hello &", "expected =="),
    # further parser paths
    ('a notin"bar" || has(b)', "expected set literal"),
    ("a in xyz", "expected set literal"),
    ('a "b"', "expected == or != not: TokStringLiteral(b)"),
    ("a &&", "expected == or != not: TokAnd()"),
    ("a (", "expected == or != not: TokLParen()"),
    ("has (a)", "expected == or != not: TokLParen()"),
    ("a !has(b)", "expected == or != not: TokNot()"),
    ("a has(b)", 'expected operator after label "a"'),
    ('a == "b")', "unexpected content at end of selector [TokRParen() TokEOF()]"),
    ("has(a) has(b)", "unexpected content at end of selector [TokHas(b) TokEOF()]"),
    ('has(a) "x" ,', "unexpected content at end of selector [TokStringLiteral(x) TokComma() TokEOF()]"),
    ('a in {"x" "y"}', "expected }"),
    ("a in {,}", "expected }"),
    ('a in {"x",,}', "expected }"),
    ("!= 'x'", "unexpected token: TokNe()"),
    ('a == "b"\n', "expected identifier"),
    ("a\n== 'b'", 'expected operator after label "a"'),
    ("\nhas(a)", "expected identifier"),
    ("a == 'b' && ünï == 'c'", "expected identifier"),
    ("has(a) && (", "unexpected token: TokEOF()"),
    ("(has(a)", "expected )"),
]


@pytest.mark.parametrize(("text", "message"), INVALID, ids=[repr(c[0]) for c in INVALID])
def test_invalid_selectors(text, message):
    with pytest.raises(SelectorError) as info:
        parse(text)
    assert str(info.value) == message
    assert isinstance(info.value, ValidationError)
    with pytest.raises(SelectorError):
        validate(text)


def test_label_length_limit():
    ok = "a" * MAX_LABEL_LENGTH
    assert MAX_LABEL_LENGTH == 512
    assert str(parse(f'{ok} == "value"')) == f'{ok} == "value"'
    assert str(parse(f"has({ok})")) == f"has({ok})"
    assert valid_label(ok)
    long = "a" * (MAX_LABEL_LENGTH + 1)
    for text in (f'{long} == "value"', f"has({long})", f'x == "y" || {long} in {{}}'):
        with pytest.raises(SelectorError) as info:
            parse(text)
        assert str(info.value) == f"label too long: {long}"
    assert not valid_label(long)
    # String values have no length limit of their own.
    assert parse(f'a == "{long}"').evaluate({"a": long})


def test_valid_label():
    assert valid_label("calico/k8s_NS-.1/role")
    assert not valid_label("")
    assert not valid_label("a b")
    assert not valid_label("a=b")


def test_keywords_as_label_values_and_names():
    sel = parse('contains contains "contains"')
    assert sel.evaluate({"contains": "xcontainsx"})
    assert not sel.evaluate({"contains": "x"})
    sel = parse('in not in {"in"} && not in {"not"}')
    assert str(sel) == '(in not in {"in"} && not in {"not"})'
    assert sel.evaluate({"in": "x", "not": "not"})
    assert not sel.evaluate({"in": "in", "not": "not"})


def test_evaluate_accepts_any_mapping():
    from types import MappingProxyType

    sel = parse('a == "b" && has(c) && d not in {"x"} && e contains "q"')
    assert sel.evaluate(MappingProxyType({"a": "b", "c": "", "e": "aqa"}))
    assert not sel.evaluate(MappingProxyType({"a": "b", "c": "", "d": "x", "e": "q"}))


def test_double_negation_through_parentheses_folds():
    # Calico prints "!!has(a)" here, which is not a fixed point (see parser.py).
    assert str(parse("!(!has(a))")) == "has(a)"
    assert str(parse("!((!(has(a))))")) == "has(a)"
    assert str(parse("!(!(!has(a)))")) == "!has(a)"
    assert str(parse("!(!has(a) && has(b))")) == "!(!has(a) && has(b))"
    assert parse("!(!has(a))").evaluate({"a": "x"})
