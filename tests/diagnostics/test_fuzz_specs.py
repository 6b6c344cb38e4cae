"""Mutated specs never crash the validator: any mutation of a valid spec (typos in
keys, wrong types, deleted keys, junk bytes) yields diagnostics and exit 0 or 1, never
a traceback or exit 2."""

from __future__ import annotations

import random

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import example_specs
from specc.cli import main

SOURCES = {path.name: path.read_text() for path in example_specs()}
JUNK_VALUES = [None, True, -1, 0, 1.5, "", "x", "7B", "1e-4", "4k", [], {}, [1, "a"], {"a": 1}, "é\x00", 10**30]


def _paths(node, prefix=()):
    if isinstance(node, dict):
        for key, value in node.items():
            yield prefix + (key,)
            yield from _paths(value, prefix + (key,))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield prefix + (index,)
            yield from _paths(value, prefix + (index,))


def _parent(data, path):
    node = data
    for part in path[:-1]:
        node = node[part]
    return node


def mutate_structure(text: str, rng: random.Random) -> str:
    data = yaml.safe_load(text)
    for _ in range(rng.randint(1, 4)):
        paths = list(_paths(data))
        if not paths:
            break
        path = rng.choice(paths)
        parent = _parent(data, path)
        key = path[-1]
        action = rng.choice(["delete", "retype", "rename", "wrap"])
        if action == "delete":
            del parent[key]
        elif action == "retype":
            parent[key] = rng.choice(JUNK_VALUES)
        elif action == "rename" and isinstance(parent, dict):
            value = parent.pop(key)
            typo = str(key)
            position = rng.randrange(len(typo) or 1)
            parent[typo[:position] + rng.choice("xz_") + typo[position + 1:]] = value
        elif action == "wrap":
            parent[key] = [parent[key]]
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


def mutate_bytes(text: str, rng: random.Random) -> bytes:
    raw = bytearray(text.encode())
    for _ in range(rng.randint(1, 6)):
        position = rng.randrange(len(raw) + 1)
        choice = rng.random()
        if choice < 0.4:
            raw[position:position] = bytes(rng.choice([b":", b"- ", b"\t", b"{", b"]", b"&a", b"*a", b"\xff", b"\n  ", b"#", b"'", b"!!python/object"]))
        elif choice < 0.7 and raw:
            del raw[position:position + rng.randint(1, 20)]
        else:
            raw[position:position] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 5)))
    return bytes(raw)


def _validate(tmp_path, content: bytes, capsys) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_bytes(content)
    code = main(["validate", str(spec)])
    output = capsys.readouterr()
    assert code in (0, 1), output.err
    assert "Traceback" not in output.out + output.err


@pytest.mark.slow  # hypothesis, ~4.6 s
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.sampled_from(sorted(SOURCES)), seed=st.integers(0, 2**32 - 1))
def test_structural_mutations_never_crash(tmp_path, capsys, name, seed):
    _validate(tmp_path, mutate_structure(SOURCES[name], random.Random(seed)).encode(), capsys)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.sampled_from(sorted(SOURCES)), seed=st.integers(0, 2**32 - 1))
def test_byte_mutations_never_crash(tmp_path, capsys, name, seed):
    _validate(tmp_path, mutate_bytes(SOURCES[name], random.Random(seed)), capsys)


@pytest.mark.slow  # hypothesis, ~3.1 s
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(override=st.text(min_size=0, max_size=40))
def test_arbitrary_overrides_never_crash(capsys, override):
    code = main(["validate", str(example_specs()[0]), "--set", override])
    output = capsys.readouterr()
    assert code in (0, 1), output.err
    assert "Traceback" not in output.out + output.err
