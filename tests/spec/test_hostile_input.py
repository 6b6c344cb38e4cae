"""Hostile spec inputs are refused before they are read: special files, oversized files, deep nesting.

Each case runs through the CLI and asserts exit 1, a located `Y…` code and no traceback.
The inputs are generated here (a FIFO, /dev/zero, a 5 MB file) rather than kept on disk.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from specc.cli import main
from specc.spec.loader import MAX_BYTES, MAX_DEPTH, parse_yaml


def _validate(capsys, *args) -> tuple[int, str]:
    code = main(["validate", *args])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_fifo_is_refused_without_blocking(tmp_path, capsys):
    fifo = tmp_path / "spec.yaml"
    os.mkfifo(fifo)
    code, out = _validate(capsys, str(fifo))
    assert code == 1 and "error[Y012]" in out and "not a regular file" in out
    assert "Traceback" not in out


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="needs /dev/zero")
def test_device_as_spec_and_as_extends_target(tmp_path, capsys):
    code, out = _validate(capsys, "/dev/zero")
    assert code == 1 and "error[Y012]" in out
    child = tmp_path / "child.yaml"
    child.write_text("extends: /dev/zero\nname: x\n")
    code, out = _validate(capsys, str(child))
    assert code == 1 and f"{child}:1:10: error[Y012] extends:" in out
    assert "Traceback" not in out


def test_directory_is_refused(tmp_path, capsys):
    code, out = _validate(capsys, str(tmp_path))
    assert code == 1 and "error[Y007]" in out and "is a directory" in out


def test_oversized_spec_is_refused_by_size(tmp_path, capsys):
    big = tmp_path / "big.yaml"
    with open(big, "w") as handle:
        handle.write("name: big\n")
        handle.truncate(MAX_BYTES + 1)
    code, out = _validate(capsys, str(big))
    assert code == 1 and "error[Y012]" in out and "MB" in out


def test_nesting_just_under_the_limit_parses_and_one_over_is_refused():
    ok = parse_yaml("a: " + "[" * (MAX_DEPTH - 1) + "]" * (MAX_DEPTH - 1), "f.yaml")
    assert ok.data is not None and not ok.diagnostics
    deep = parse_yaml("a: " + "[" * MAX_DEPTH + "]" * MAX_DEPTH, "f.yaml")
    assert deep.data is None and deep.diagnostics[0].code == "Y011"
    assert str(deep.diagnostics[0].position) == f"f.yaml:1:{4 + MAX_DEPTH - 1}"


def test_thousands_of_levels_do_not_recurse():
    deep = parse_yaml("a: " + "{b: " * 5000 + "1" + "}" * 5000, "f.yaml")
    assert deep.diagnostics[0].code == "Y011"
