"""Pre-flight (issue 20, item 7): every local input a stage reads exists before anything is emitted
or submitted; `--no-path-checks` skips it for paths that live only on the cluster; validate
checks the paths relative to the spec and leaves absolute ones to launch. The bad-spec cases
are under tests/specs/invalid/preflight-*/ and input-is-a-url/."""

from __future__ import annotations

from pathlib import Path

import pytest
from launch_helpers import TINY, tiny_copy

from specc.cli import main
from specc.diagnostics.check import check_file
from specc.diagnostics.preflight import preflight


def _preflight(spec: Path, overrides: list[str] = (), check_absolute: bool = True) -> list:
    result = check_file(spec, list(overrides))
    assert result.valid, [d.to_text() for d in result.diagnostics]
    return preflight(result.spec, result.source_map, spec, check_absolute)


def _run(capsys, *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return code, captured.out + captured.err


def test_every_input_of_the_tiny_spec_is_found():
    assert _preflight(TINY) == []


def test_launch_refuses_a_missing_absolute_input_and_emits_nothing(tmp_path, capsys):
    """A missing alignment data file validated and failed only when its stage started."""
    out = tmp_path / "o"
    missing = str(tmp_path / "nowhere" / "sft.jsonl")
    code, text = _run(capsys, "launch", str(TINY), "--set", f"alignment.0.data={missing}", "--dry-run",
                      "--out", str(out))
    assert code == 1 and not out.exists()
    assert f"error[R203] alignment[0].data: data file '{missing}' does not exist (on this machine)" in text
    assert "pre-flight: input files the stages would read are missing here" in text
    code, text = _run(capsys, "validate", str(TINY), "--set", f"alignment.0.data={missing}")
    assert code == 0, text  # absolute: may exist only on the cluster; launch checks it
    code, text = _run(capsys, "launch", str(TINY), "--set", f"alignment.0.data={missing}", "--no-path-checks",
                      "--dry-run", "--out", str(out))
    assert code == 0 and out.exists(), text


def test_validate_checks_relative_inputs_unless_told_not_to(tmp_path, capsys):
    spec = tmp_path / "tiny.yaml"
    spec.write_text(TINY.read_text())  # without its data directory
    code, text = _run(capsys, "validate", str(spec))
    assert code == 1 and "error[R203] alignment[0].data: data file 'data/tiny/alignment/sft.jsonl' does not exist " \
                          "(relative to the spec's directory)" in text
    assert f"{spec}:80:11:" in text  # located at the value
    code, text = _run(capsys, "validate", str(spec), "--no-path-checks")
    assert code == 0, text
    tiny_copy(tmp_path)
    assert _run(capsys, "validate", str(spec))[0] == 0


@pytest.mark.parametrize("override, make, needle", [
    ("+tokenizer.path={dir}", None, "R202:tokenizer file '{dir}' is not a regular file"),
    ("+tokenizer.path={dir}/tok.json", "tok.json:<html>404</html>", "R202:tok.json' is not readable JSON"),
    ("alignment.0.chat_template={dir}/chat.jinja", "chat.jinja:{{% for m in messages %}}{{{{ m.content }}}}"
     "{{% endfor %}}", None),
    ("alignment.0.chat_template={dir}/chat.jinja", "chat.jinja:{{{{ messages", "R204:does not parse"),
    ("alignment.1.init_from={dir}/base", "base:", "R205:is not a directory"),
    ("alignment.1.init_from={dir}", None, None),
    ("corpus.sources.0={{type: files, name: dirs, path: '{dir}/*', weight: 0.5}}", "sub/", "R200:no file matches"),
    ("corpus.sources.0={{type: files, name: nested, path: '{dir}/**/*.txt', weight: 0.5}}", "sub/deep/a.txt:hello", None),
    ("eval.tasks.0.path={dir}/*.jsonl", None, "R206:no file matches"),
    ("deploy.targets.2.speculative.draft={dir}/draft", None, "R207:'{dir}/draft' is neither an earlier stage "
                                                             "nor an existing directory"),
], ids=["tokenizer-is-a-directory", "tokenizer-not-json", "template-parses", "template-syntax", "init-from-a-file", "init-from-a-directory",
        "glob-matches-only-directories", "recursive-glob", "eval-glob-empty", "absolute-draft-missing"])
def test_each_input_kind_is_resolved_as_its_stage_resolves_it(tmp_path, override, make, needle):
    if make:
        name, _, content = make.format(dir=tmp_path).partition(":")
        target = tmp_path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if name.endswith("/"):
            target.mkdir(exist_ok=True)
        else:
            target.write_text(content)
    found = _preflight(TINY, [override.format(dir=tmp_path)])
    if needle is None:
        assert found == [], [d.to_text() for d in found]
        return
    code, _, text = needle.format(dir=tmp_path).partition(":")
    assert [d.code for d in found] == [code] and text in found[0].message, [d.to_text() for d in found]


def test_a_corpus_symlink_that_loops_is_named_as_one(tmp_path):
    """`a.jsonl -> b.jsonl -> a.jsonl` (or a link to nothing) matched nothing and said so; it is a link."""
    (tmp_path / "a.jsonl").symlink_to(tmp_path / "b.jsonl")
    (tmp_path / "b.jsonl").symlink_to(tmp_path / "a.jsonl")
    found = _preflight(TINY, [f"corpus.sources.0={{type: files, name: loop, path: '{tmp_path}/a.jsonl', weight: 0.5}}"])
    assert [d.code for d in found] == ["R200"] and "is a symlink that leads to nothing" in found[0].message


def test_pre_flight_rules_are_documented_with_examples(capsys):
    from specc.diagnostics.rules import PATH_RULES

    assert [rule.code for rule in PATH_RULES] == [f"R20{n}" for n in range(8)] + ["R280", "R281", "R292", "R293", "R294",
                                                                  "R321", "R322", "R323", "R324"]
    for rule in PATH_RULES:
        assert main(["rules", rule.code]) == 0
        shown = capsys.readouterr().out
        assert "passes:" in shown and "fails:" in shown, shown
