"""Stage skipping by content hash, on real bundles and success markers (no stage is run here)."""

from __future__ import annotations

import json

from launch_helpers import FAST_TRAINING, TINY, emit

from specc.launch.launcher import LAUNCH_MARKER, _prepare_outputs, read_stages, stages_to_run
from specc.io import mark_success


def _finish_all(bundle):
    """Mark every stage of `bundle` complete, as the stages themselves do when they succeed."""
    for stage in read_stages(bundle):
        outputs = stage.outputs(bundle)
        outputs.mkdir(parents=True, exist_ok=True)
        (outputs / "result.txt").write_text(stage.name)
        mark_success(outputs, stage.config)


def test_launch_skip_points_at_the_first_stage_whose_config_changed(tmp_path):
    base = emit(TINY, tmp_path, FAST_TRAINING)
    _finish_all(base)
    assert [s.name for s in read_stages(base)] == ["data", "tokenize", "pretrain", "eval"]
    assert stages_to_run(base, read_stages(base)) == 4  # all complete
    training = emit(TINY, tmp_path, [*FAST_TRAINING, "schedule.lr=1e-3"])
    assert stages_to_run(training, read_stages(training)) == 2  # pretrain only
    tokenizer = emit(TINY, tmp_path, [*FAST_TRAINING, "tokenizer.sample_documents=400"])
    assert stages_to_run(tokenizer, read_stages(tokenizer)) == 1  # tokenize, then pretrain
    data = emit(TINY, tmp_path, [*FAST_TRAINING, "dedup.exact=false"])
    assert stages_to_run(data, read_stages(data)) == 0


def test_launch_outputs_of_other_work_are_moved_aside_before_a_rerun(tmp_path):
    """Tokenizer changed: its old outputs (another config) and the trainer's (built on the old
    tokens, though its own config is unchanged) are moved aside; the data stage is untouched."""
    base = emit(TINY, tmp_path, FAST_TRAINING)
    _finish_all(base)
    changed = emit(TINY, tmp_path, [*FAST_TRAINING, "tokenizer.sample_documents=400"])
    stages = read_stages(changed)
    first = stages_to_run(changed, stages)
    messages = []
    for position, stage in enumerate(stages[first:]):
        _prepare_outputs(changed, stage, upstream_reruns=position > 0, echo=messages.append)
    run = stages[0].outputs(changed).parent
    assert (run / "data" / "result.txt").exists()
    for name in ("tokenize", "pretrain", "eval"):
        assert not (run / name / "result.txt").exists() and not (run / name / "_SUCCESS.json").exists()
        assert json.loads((run / name / LAUNCH_MARKER).read_text())["config_sha256"]
    assert sorted(p.name.split("-")[0] for p in (run / ".replaced").iterdir()) == ["eval", "pretrain", "tokenize"]
    assert len(messages) == 3 and "another config" in messages[0] and "regenerated" in messages[1]


def test_launch_interrupted_outputs_of_the_same_config_are_kept_for_resume(tmp_path):
    bundle = emit(TINY, tmp_path, FAST_TRAINING)
    stages = read_stages(bundle)
    _finish_all(bundle)
    training = stages[2]
    outputs = training.outputs(bundle)
    (outputs / "_SUCCESS.json").unlink()  # as if killed before finishing
    (outputs / "checkpoints").mkdir()
    _prepare_outputs(bundle, training, upstream_reruns=False, echo=lambda message: None)
    assert (outputs / "checkpoints").is_dir() and (outputs / "result.txt").exists()
    assert not (outputs.parent / ".replaced").exists()
