"""Shell injection: hostile text in any string field of a spec either fails validation with a
located error or renders into scripts where it stays inert (the marker file never appears)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from launch_helpers import TINY

from specc.diagnostics.check import check_file
from specc.emit.render import Renderer, shell_quote


def _payload(marker: Path) -> str:
    return (f"x'; touch {marker}; echo '$(touch {marker})`touch {marker}`\"; touch {marker}\n"
            f"touch {marker} # ${{IFS}}$HOME\\")


def _rich_spec() -> dict:
    """The tiny spec plus every optional string field that could reach a script."""
    data = yaml.safe_load(TINY.read_text())
    data["corpus"]["sources"].append({"type": "files", "name": "web", "path": "data/*.jsonl",
                                      "text_field": "text", "id_field": "id", "weight": 0.1})
    data["cluster"].update({
        "setup": ["module load cuda/12.4", "export A=1"],
        "container": "nvcr.io/nvidia/pytorch:24.05-py3",
        "slurm": {"partition": "debug", "account": "acct", "qos": "normal", "constraint": "cpu",
                  "mail_user": "ops@example.org", "mail_type": ["FAIL"], "mem": "8G"},
    })
    return data


def _string_paths(value, prefix=()):
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _string_paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _string_paths(item, (*prefix, index))
    elif isinstance(value, str):
        yield prefix


def _set(data, path, value):
    for key in path[:-1]:
        data = data[key]
    data[path[-1]] = value


RICH = _rich_spec()
PATHS = [p for p in _string_paths(RICH) if p[-1] != "type"]  # `type` picks the model, not text


@pytest.mark.parametrize("path", PATHS, ids=lambda p: ".".join(map(str, p)))
def test_launch_hostile_strings_are_rejected_or_inert(tmp_path, path):
    from launch_helpers import emit

    marker = tmp_path / "marker"
    data = _rich_spec()
    _set(data, path, _payload(marker))
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(data, sort_keys=False))
    result = check_file(spec_file)
    if not result.valid:
        errors = result.errors
        assert errors, "invalid without an error diagnostic"
        for error in errors:
            assert error.position.file == str(spec_file) and error.position.line >= 1, error.to_text()
        return
    bundle = emit(spec_file, tmp_path / "out")
    scripts = [*bundle.glob("stages/*/run.sh"), *bundle.glob("stages/*/job.sbatch"), bundle / "submit.sh"]
    for script in scripts:
        parsed = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
        assert parsed.returncode == 0, f"{script}: {parsed.stderr}"
    for script in bundle.glob("stages/*/run.sh"):
        # Run it for real, with the stage's python replaced by `true`: the setup lines and every
        # rendered value execute, the stage itself does not.
        subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=60,
                       env={"PATH": "/usr/bin:/bin", "SPECC_PYTHON": "true", "HOME": str(tmp_path)})
    assert not marker.exists(), f"{'.'.join(map(str, path))}: the payload ran"


def test_launch_setup_lines_run_as_quoted_commands(tmp_path):
    """A setup line is a command with arguments: it runs, and its words stay literal."""
    from launch_helpers import emit

    marker = tmp_path / "marker"
    data = yaml.safe_load(TINY.read_text())
    data["cluster"]["setup"] = [f"echo 'hello world' $(touch {marker}) ;touch {marker}"]
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(data, sort_keys=False))
    bundle = emit(spec_file, tmp_path / "out")
    ran = subprocess.run(["bash", str(bundle / "stages" / "01-data" / "run.sh")], capture_output=True, text=True,
                         env={"PATH": "/usr/bin:/bin", "SPECC_PYTHON": "true"})
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout == f"hello world $(touch {marker}) ;touch {marker}\n"
    assert not marker.exists()


@settings(max_examples=60, deadline=None)
@given(st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=40))
def test_launch_quoted_values_reach_the_shell_verbatim(text):
    """Whatever a spec string holds, a rendered script sees exactly that one word."""
    script = Renderer("local").shell.from_string("printf '%s' {{ value }}").render(value=text)
    printed = subprocess.run(["bash", "-c", script], capture_output=True, timeout=10)
    assert printed.returncode == 0
    assert printed.stdout.decode("utf-8", errors="surrogateescape") == text


def test_launch_raw_marks_are_only_for_emitter_text():
    assert shell_quote("a b") == "'a b'"
    assert shell_quote(True) == "true" and shell_quote(3) == "3"
    with pytest.raises(Exception, match="None"):
        shell_quote(None)
