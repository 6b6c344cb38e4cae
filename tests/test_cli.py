"""The command line: exit codes, formats, and the no-torch guarantee of validate."""

from __future__ import annotations

import json
import subprocess
import sys

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
