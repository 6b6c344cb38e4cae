"""Faults at launch time: stage outputs deleted or changed behind their `_SUCCESS.json`, and a
full disk while emitting the bundle (no stage is run here)."""

from __future__ import annotations

import errno

from launch_helpers import FAST_TRAINING, TINY, emit

from specc import cli
from specc.emit import bundle as bundle_module
from specc.launch.launcher import _prepare_outputs, read_stages, stages_to_run
from specc.io import mark_success


def _finish_all(bundle):
    """Mark every stage complete with one recorded output file, as the stages do when they succeed."""
    for stage in read_stages(bundle):
        outputs = stage.outputs(bundle)
        outputs.mkdir(parents=True, exist_ok=True)
        (outputs / "result.txt").write_text(stage.name)
        mark_success(outputs, stage.config, outputs=["result.txt"])


def test_deleted_outputs_make_their_stage_and_the_later_ones_run_again(tmp_path):
    """Before: the stage was skipped because its `_SUCCESS.json` remained, and the later stages
    ran without its outputs."""
    bundle = emit(TINY, tmp_path, FAST_TRAINING)
    _finish_all(bundle)
    stages = read_stages(bundle)
    assert stages_to_run(bundle, stages) == len(stages)
    tokenize = stages[1].outputs(bundle)
    (tokenize / "result.txt").unlink()
    first = stages_to_run(bundle, stages)
    assert stages[first].name == "tokenize"
    messages: list[str] = []
    for position, stage in enumerate(stages[first:]):
        _prepare_outputs(bundle, stage, upstream_reruns=position > 0, echo=messages.append)
    assert "previous outputs moved to" in messages[0]
    assert f"its outputs changed after it finished: {tokenize / 'result.txt'} is missing" in messages[0]
    assert not (tokenize / "_SUCCESS.json").exists()  # moved aside: the stage starts from scratch
    assert (stages[0].outputs(bundle) / "result.txt").exists()  # the data stage is untouched


def test_truncated_output_is_not_skipped(tmp_path):
    bundle = emit(TINY, tmp_path, FAST_TRAINING)
    _finish_all(bundle)
    stages = read_stages(bundle)
    (stages[2].outputs(bundle) / "result.txt").write_text("pre")  # shorter than "pretrain"
    assert stages[stages_to_run(bundle, stages)].name == "pretrain"


def test_full_disk_while_emitting_is_exit_1_naming_the_path_and_free_space(tmp_path, monkeypatch, capsys):
    """Before: an internal error with a traceback (exit 2)."""
    real_write = bundle_module._write_file
    written = []

    def write_file(path, text):
        if len(written) == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        written.append(path)
        real_write(path, text)

    monkeypatch.setattr(bundle_module, "_write_file", write_file)
    out = tmp_path / "out"
    assert cli.main(["launch", str(TINY), "--dry-run", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "specc launch: error: cannot write the bundle" in err and "No space left on device" in err
    assert " free on its filesystem" in err and "Traceback" not in err
    assert list(out.iterdir()) == []  # no half-written bundle, no temporary directory


def test_many_missing_outputs_are_summarised(tmp_path):
    from specc.io import completion_problem

    for index in range(5):
        (tmp_path / f"part-{index}.bin").write_text("x" * index)
    mark_success(tmp_path, {"a": 1}, outputs=[f"part-{index}.bin" for index in range(5)])
    for index in range(5):
        (tmp_path / f"part-{index}.bin").unlink()
    problem = completion_problem(tmp_path, {"a": 1})
    assert problem.count("is missing") == 3 and problem.endswith("; and 2 more")
