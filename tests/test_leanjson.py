"""topoipam.leanjson gives exactly what the json module gives: values, text and errors."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from topoipam import leanjson

scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text()
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(), inner,
                                                                                             max_size=5), max_leaves=30)


@settings(max_examples=400, deadline=None)
@given(values, st.sampled_from([None, (",", ":"), (", ", ": ")]), st.booleans())
def test_dumps_writes_what_json_writes(value, separators, ensure_ascii):
    assert leanjson.dumps(value, separators=separators, ensure_ascii=ensure_ascii) == json.dumps(
        value, separators=separators, ensure_ascii=ensure_ascii)
    assert leanjson.dumps(value, indent=4, ensure_ascii=ensure_ascii) == json.dumps(
        value, indent=4, ensure_ascii=ensure_ascii)


@settings(max_examples=400, deadline=None)
@given(values, st.sampled_from(["", " ", "\n\t ", "\r\n"]), st.booleans())
def test_loads_reads_what_json_reads(value, pad, as_bytes):
    text = pad + json.dumps(value, indent=1 if pad else None) + pad
    assert leanjson.loads(text.encode() if as_bytes else text) == json.loads(text)


@pytest.mark.parametrize("bad", ["", " ", "{", '{"a": 1} x', '{"a": 1}{}', "[1,]", '"\x01"', "nul", "{'a': 1}",
                                 b"\xff\xfe{", "01", '{"a" 1}', "\ufeff{}"])
def test_errors_are_json_errors_with_json_messages(bad):
    with pytest.raises(ValueError) as expected:  # JSONDecodeError, or UnicodeDecodeError for bad bytes
        json.loads(bad)
    with pytest.raises(ValueError) as got:
        leanjson.loads(bad)
    assert (type(got.value), str(got.value)) == (type(expected.value), str(expected.value))


def test_what_json_accepts_beyond_the_fast_path():
    assert leanjson.loads('{"a": "x"}'.encode("utf-16")) == {"a": "x"}  # json detects UTF-16
    assert leanjson.loads(b"\xef\xbb\xbf[1]") == [1]  # a UTF-8 byte-order mark in bytes
    assert math.isnan(leanjson.loads("NaN")) and leanjson.loads("[-Infinity]") == [float("-inf")]
    assert leanjson.dumps({1: [True, None], None: 2.5}, indent=2) == json.dumps({1: [True, None], None: 2.5}, indent=2)
    assert leanjson.dumps(float("inf")) == "Infinity"


def test_unserialisable_and_circular_values_fail_as_in_json():
    with pytest.raises(TypeError, match="Object of type set is not JSON serializable"):
        leanjson.dumps({"a": {1}})
    loop: list = []
    loop.append(loop)
    with pytest.raises(ValueError, match="Circular reference"):
        leanjson.dumps(loop)


def test_errors_are_json_errors_in_a_process_that_never_imported_json():
    """As in the exec'd plugin: the C scanner needs json.decoder loaded to report an error."""
    code = ("import sys; sys.path[:0] = %r\nfrom topoipam import leanjson\n"
            "for bad in ('{not json', '[1,', '\"\\\\x\"', '{\"a\": tru}'):\n"
            "    assert 'json' not in sys.modules\n"
            "    try:\n        leanjson.loads(bad)\n    except ValueError as exc:\n"
            "        print(type(exc).__name__, exc)\n    del sys.modules['json'], sys.modules['json.decoder']\n"
            % [p for p in sys.path if p.endswith("src")])
    out = subprocess.run([sys.executable, "-IS", "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[0] == "JSONDecodeError Expecting property name enclosed in double quotes: " \
                                        "line 1 column 2 (char 1)"
    assert len(out.stdout.splitlines()) == 4 and all(line.startswith("JSONDecodeError") for line in
                                                     out.stdout.splitlines())
