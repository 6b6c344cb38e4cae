"""The command line: exit codes, formats, and the no-torch guarantee of validate."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from specc.cli import main


def test_validate_valid_spec_exits_zero(capsys):
    assert main(["validate", "specs/tiny.yaml"]) == 0
    assert "specs/tiny.yaml: valid" in capsys.readouterr().out


def test_strict_turns_warnings_into_failure(capsys):
    assert main(["validate", "specs/llama3-70b-h100x64.yaml"]) == 0
    assert main(["validate", "--strict", "specs/llama3-70b-h100x64.yaml"]) == 1


def test_selective_policy_without_selective_recompute_warns(capsys):
    policy = "+parallel.selective_policy=alternate_matmuls"
    assert main(["validate", "--strict", "specs/tiny.yaml", "--set", policy]) == 1
    assert "warning[R119] parallel.selective_policy" in capsys.readouterr().out
    assert main(["validate", "--strict", "specs/tiny.yaml", "--set", policy, "--set", "+parallel.recompute=selective"]) == 0


def test_loss_chunk_tokens_with_full_loss_warns(capsys):
    chunk = "+parallel.loss_chunk_tokens=2k"
    assert main(["validate", "--strict", "specs/tiny.yaml", "--set", chunk, "--set", "+parallel.loss=full"]) == 1
    assert "warning[R186] parallel.loss_chunk_tokens: loss_chunk_tokens: 2048 has no effect" in capsys.readouterr().out
    assert main(["validate", "--strict", "specs/tiny.yaml", "--set", chunk]) == 0


def test_json_format(capsys):
    assert main(["validate", "--format", "json", "specs/tiny.yaml", "--set", "model.num_heads=3"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["valid"] is False
    codes = [d["code"] for d in report["files"][0]["diagnostics"]]
    assert "R102" in codes


def test_bad_flag_is_exit_one_without_traceback(capsys):
    assert main(["validate", "--no-such-flag", "specs/tiny.yaml"]) == 1
    assert main(["frobnicate"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and "specc: error:" in err


def test_rules_command_documents_every_rule(capsys):
    assert main(["rules"]) == 0
    out = capsys.readouterr().out
    from specc.diagnostics.rules import RULES

    for rule in RULES:
        assert rule.code in out
        assert "passes:" in rule.documentation and "fails" in rule.documentation


def test_validate_does_not_import_torch():
    code = ("import sys; from specc.cli import main; rc = main(['validate', 'specs/tiny.yaml']);"
            "assert 'torch' not in sys.modules, 'torch imported'; sys.exit(rc)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_console_script_runs():
    result = subprocess.run([sys.executable, "-m", "specc.cli", "validate", "specs/tiny.yaml"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_catalog_lists_every_accelerator(capsys):
    """The schema's field docs point users at `specc catalog` for accelerator ids."""
    from specc.catalog import accelerator_ids

    assert main(["catalog"]) == 0
    out = capsys.readouterr().out
    for accelerator in accelerator_ids():
        assert accelerator in out
    assert main(["catalog", "--format", "json"]) == 0
    rows = {row["id"]: row for row in json.loads(capsys.readouterr().out)["accelerators"]}
    assert list(rows) == accelerator_ids()
    h100 = rows["h100-sxm"]
    assert (h100["target"], h100["runtime"], h100["bf16_tflops"], h100["fp8_tflops"], h100["fp8"]) == \
        ("gpu", "pretrain", 989.5, 1979, True)
    assert round(h100["memory_gib"], 1) == 79.7  # 81559 MiB as the device reports it
    assert rows["tpu-v5p"]["runtime"] == "pretrain_tpu" and rows["v100-32gb"]["bf16_tflops"] is None


def test_catalog_does_not_import_torch():
    code = ("import sys; from specc.cli import main; rc = main(['catalog', '--format', 'json']);"
            "assert 'torch' not in sys.modules, 'torch imported'; sys.exit(rc)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_accelerator_suggestions_prefer_the_family():
    """`h100` used to suggest `h800` (one edit away) rather than the H100 entries."""
    from specc.catalog import closest_ids

    assert closest_ids("h100") == ["h100-sxm", "h100-pcie"]
    assert closest_ids("H100 SXM") == ["h100-sxm"]
    assert closest_ids("tpu-v5") == ["tpu-v5e", "tpu-v5p"]
    assert closest_ids("b300") == ["b200"]
    assert closest_ids("zzz") == []


@pytest.mark.parametrize("override, code", [
    ("schedule.lr=0.05", "R132"), ("+schedule.optimizer.betas=[0.95, 0.9]", "R132"),
    ("alignment.0.lr=0.5", "R152"), ("alignment.2.beta=5", "R152"),
])
def test_implausible_optimizer_values_warn(override, code, capsys):
    assert main(["validate", "specs/tiny.yaml", "--set", override]) == 0
    assert main(["validate", "--strict", "specs/tiny.yaml", "--set", override]) == 1
    assert f"warning[{code}]" in capsys.readouterr().out
