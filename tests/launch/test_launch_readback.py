"""Tampered and damaged files specc reads back (issue 20, items 5 and 8): a hand-edited plan.json,
a truncated or wrong-shaped launch.json or manifest.json, a stray entry in `stages/`, flags
that do not apply to a bundle. Each is one line naming the file and the key, exit 1, no
traceback, and nothing emitted or submitted; a stray entry is ignored with a note."""

from __future__ import annotations

import json
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest
from launch_helpers import FAST_TRAINING, TINY, emit

from specc.cli import main
from specc.emit.bundle import STATE_DIR
from specc.launch.lock import launch_lock


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> tuple[Path, dict]:
    """A tiny bundle, emitted once, and the plan saved from the same spec."""
    root = tmp_path_factory.mktemp("pristine")
    bundle = emit(TINY, root / "out", FAST_TRAINING)
    return bundle, json.loads((bundle / "plan.json").read_text())


@pytest.fixture
def bundle(pristine, tmp_path) -> Path:
    """A private copy of the pristine bundle, free to damage."""
    copy = tmp_path / "out" / pristine[0].name
    shutil.copytree(pristine[0], copy)
    return copy


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err and "internal error" not in captured.err, captured.err
    return code, captured.out, captured.err


def _saved_plan(pristine, tmp_path, edit) -> Path:
    """The pristine plan with `edit(plan)` applied, saved standalone as plan.json."""
    plan = json.loads(json.dumps(pristine[1]))
    edit(plan)
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(plan))
    return path


def _launch_plan(capsys, plan: Path, tmp_path: Path) -> str:
    out = tmp_path / "o"
    code, _, err = _run(capsys, "launch", str(plan), "--spec", str(TINY), "--dry-run", "--out", str(out))
    assert code == 1, err
    assert not out.exists()  # nothing emitted
    return err


# --- plan.json -----------------------------------------------------------------------------


@pytest.mark.parametrize("edit, needle", [
    (lambda plan: plan.pop("layout"), "plan.json: layout: missing [B003]"),
    (lambda plan: plan["layout"].update(dp="1"), "plan.json: layout.dp: input should be a valid integer, got '1'"),
    (lambda plan: plan["layout"].update(micro_batch=True), "plan.json: layout.micro_batch: input should be a valid "
                                                           "integer, got True"),
    (lambda plan: plan["spec"].update(sha256=7), "plan.json: spec.sha256: input should be a valid string"),
    (lambda plan: plan.update(batch=[16]), "plan.json: batch: expected a JSON object, got an array"),
    (lambda plan: plan.update(schema_version=9), "plan.json: schema_version: 9 is not 1, the plan schema of this specc [B006]"),
    (lambda plan: plan["layout"].update(micro_batch=3), "plan.json: layout.micro_batch: dp x micro_batch x "
                                                        "grad_accum = 1 x 3 x 2 = 6, but the batch is 16 sequences"),
    (lambda plan: plan["layout"].update(tp=2), "plan.json: layout: dp x tp x pp x cp = 1 x 2 x 1 x 1 = 2, but "
                                               "hardware.count is 1 [B004]"),
], ids=["no-layout", "dp-string", "micro-batch-bool", "sha-number", "batch-list", "schema-version",
        "micro-batch-does-not-divide", "degrees-vs-devices"])
def test_hand_edited_plan_is_refused_naming_file_and_key(pristine, tmp_path, capsys, edit, needle):
    err = _launch_plan(capsys, _saved_plan(pristine, tmp_path, edit), tmp_path)
    assert needle in err and len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize("edit, needle", [
    (lambda plan: plan["layout"].update(ep=2), "plan.json: layout: ep (2) must divide the FSDP shard degree"),
    (lambda plan: plan["layout"].update(vpp=4), "plan.json: layout.pp: num_layers (2) is fewer than pp x vpp"),
    (lambda plan: plan["layout"].update(precision="fp7"), "plan.json: layout.precision: input should be"),
], ids=["ep-on-one-device", "more-chunks-than-layers", "unknown-precision"])
def test_saved_layout_that_breaks_the_rules_is_refused(pristine, tmp_path, capsys, edit, needle):
    """Consistent arithmetic, matching spec hash, but a layout the runtime could not build."""
    err = _launch_plan(capsys, _saved_plan(pristine, tmp_path, edit), tmp_path)
    assert needle in err and "[B005]" in err, err


@pytest.mark.parametrize("damage, needle", [
    (lambda text: text[: len(text) // 2], "not valid JSON at line"),
    (lambda text: "[1, 2]", "a plan is a JSON object, got list"),
    (lambda text: text.replace('"step_s": ', '"step_s": NaN, "was": ', 1), "non-finite number NaN"),
    (lambda text: "", "not valid JSON at line 1 column 1"),
], ids=["truncated", "array", "nan", "empty"])
def test_damaged_plan_file_is_one_line(pristine, tmp_path, capsys, damage, needle):
    path = tmp_path / "plan.json"
    path.write_text(damage(json.dumps(pristine[1], indent=1)))
    assert needle in _launch_plan(capsys, path, tmp_path)


def test_plan_inside_a_bundle_takes_no_spec_flags(bundle, capsys):
    """`launch BUNDLE/plan.json --spec other.yaml` and `--set` were silently ignored."""
    for flags in (["--spec", str(TINY)], ["--set", "schedule.steps=3"], ["--force"]):
        for target in (bundle / "plan.json", bundle):
            code, _, err = _run(capsys, "launch", str(target), *flags, "--dry-run")
            assert code == 1 and f"{flags[0]} cannot apply" in err, err
    code, _, err = _run(capsys, "launch", str(bundle / "plan.json"), "--executor", "slurm")
    assert code == 1 and "was emitted for the local executor" in err, err
    assert not (bundle / STATE_DIR).exists()  # nothing launched


def test_spec_flag_with_a_spec_target_is_an_error(tmp_path, capsys):
    code, _, err = _run(capsys, "launch", str(TINY), "--spec", str(TINY), "--dry-run", "--out", str(tmp_path / "o"))
    assert code == 1 and "--spec names the spec of a saved plan.json" in err
    assert not (tmp_path / "o").exists()


# --- launch.json ---------------------------------------------------------------------------


def _record(bundle: Path, text: str) -> None:
    (bundle / STATE_DIR).mkdir(exist_ok=True)
    (bundle / STATE_DIR / "launch.json").write_text(text)


def _good_record(bundle: Path) -> dict:
    dirnames = sorted(p.name for p in (bundle / "stages").iterdir())
    return {"bundle": bundle.name, "executor": "local", "folder": "jobs/0001",
            "stages": [{"stage": name[3:], "dirname": name, "state": "completed"} for name in dirnames]}


@pytest.mark.parametrize("text, needle", [
    (lambda record: json.dumps(record)[:40], "launch.json: not valid JSON at line 1"),
    (lambda record: "[]", "launch.json: (top level): expected a JSON object, got an array"),
    (lambda record: json.dumps({**record, "stages": None}), "launch.json: stages: expected a JSON array, got null"),
    (lambda record: json.dumps({**record, "executor": "ssh"}), "launch.json: executor: 'ssh' is not one of local, slurm"),
    (lambda record: json.dumps({**record, "stages": [{**record["stages"][0], "state": "submitted",
                                                     "job_id": "--all"}]}),
     "launch.json: stages[0].job_id: string should match pattern"),
    (lambda record: json.dumps({**record, "stages": [{"dirname": "01-data"}]}), "launch.json: stages[0].stage: missing"),
], ids=["truncated", "array", "stages-null", "unknown-executor", "job-id-injection", "entry-missing-key"])
def test_damaged_launch_record_is_one_line_for_status_and_cancel(bundle, capsys, text, needle):
    _record(bundle, text(_good_record(bundle)))
    for command in ("status", "cancel"):
        code, out, err = _run(capsys, command, str(bundle))
        assert code == 1 and needle in err and "[B00" in err, err
        assert out == ""  # nothing cancelled, nothing shown from a record that cannot be trusted


def test_intact_launch_record_still_shows(bundle, capsys):
    _record(bundle, json.dumps(_good_record(bundle)))
    code, out, _ = _run(capsys, "status", str(bundle))
    assert code == 0 and "01-data" in out


# --- the bundle: stray entries, manifest, stage configs ------------------------------------


def test_stray_entries_in_stages_are_ignored_with_a_note(bundle, capsys):
    """A stray file in `stages/` broke `status`; the manifest says what the stages are."""
    _record(bundle, json.dumps(_good_record(bundle)))
    stages = sorted(p.name for p in (bundle / "stages").iterdir())
    (bundle / "stages" / "notes.txt").write_text("mine")
    (bundle / "stages" / "99-copy").mkdir()
    (bundle / "stages" / f"{stages[0]}.bak").mkdir()
    for form in ("text", "json"):
        code, out, err = _run(capsys, "status", str(bundle), "--format", form)
        assert code == 0, err
        assert "stages/notes.txt is not a stage of this bundle" in err and "stages/99-copy" in err
        assert "99-copy" not in out and "notes" not in out
    shown = json.loads(out)["stages"]
    assert [row["stage"] for row in shown] == stages
    code, _, err = _run(capsys, "launch", str(bundle), "--dry-run")  # launch notes them too, and goes on
    assert code == 0 and "stages/notes.txt is not a stage" in err, err


@pytest.mark.parametrize("damage, needle", [
    (lambda manifest: "{", "manifest.json: not valid JSON"),
    (lambda manifest: json.dumps({**manifest, "files": {**manifest["files"], "../../etc/passwd": "0" * 64}}),
     "manifest.json: files['../../etc/passwd']: is not a plain relative path inside the bundle [B007]"),
    (lambda manifest: json.dumps({**manifest, "files": {"plan.json": "beef"}}),
     "manifest.json: files.plan.json: string should match pattern"),
    (lambda manifest: json.dumps({key: value for key, value in manifest.items() if key != "files"}),
     "manifest.json: files: missing"),
], ids=["truncated", "escapes-bundle", "bad-digest", "no-files"])
def test_damaged_manifest_is_one_line_for_launch_and_status(bundle, capsys, damage, needle):
    path = bundle / "manifest.json"
    path.write_text(damage(json.loads(path.read_text())))
    _record(bundle, json.dumps(_good_record(bundle)))
    for argv in (["launch", str(bundle), "--dry-run"], ["status", str(bundle)]):
        code, _, err = _run(capsys, *argv)
        assert code == 1 and needle in err, (argv, err)


@pytest.mark.parametrize("config, needle", [
    ("[]", "config.json: (top level): expected a JSON object, got an array"),
    ('{"stage": "pretrain", "run_dir": "../runs/tiny", "params": {}}', "config.json: stage: 'pretrain', but the "
                                                                      "directory is 01-data [B008]"),
    ('{"stage": "data", "run_dir": "../runs/tiny"}', "config.json: params: missing"),
], ids=["array", "other-stage", "no-params"])
def test_damaged_stage_config_is_one_line_for_status(bundle, capsys, config, needle):
    _record(bundle, json.dumps(_good_record(bundle)))
    (bundle / "stages" / "01-data" / "config.json").write_text(config)
    code, _, err = _run(capsys, "status", str(bundle))
    assert code == 1 and needle in err, err
    code, _, err = _run(capsys, "launch", str(bundle), "--dry-run")  # launch: the manifest's sha256 catches it first
    assert code == 1 and "01-data/config.json was modified after emit" in err, err


# --- waiting for the launch lock -----------------------------------------------------------


def test_waiting_launch_takes_the_lock_when_the_holder_finishes(tmp_path):
    told: list[str] = []
    first = launch_lock(tmp_path)
    first.__enter__()
    releaser = threading.Timer(0.6, first.__exit__, (None, None, None))
    releaser.start()
    started = time.monotonic()
    with launch_lock(tmp_path, wait_s=30, on_wait=told.append, poll_s=0.05):
        waited = time.monotonic() - started
    releaser.join()
    assert 0.5 < waited < 10
    assert len(told) == 1 and f"on {socket.gethostname()}" in told[0] and "pid" in told[0]


def test_wait_for_lock_gives_up_after_its_limit_naming_the_holder(bundle, capsys):
    with launch_lock(bundle / STATE_DIR):
        code, out, err = _run(capsys, "launch", str(bundle), "--wait-for-lock", "0.6")
    assert code == 1
    assert "waiting for the launch in progress (pid" in out
    assert f"on {socket.gethostname()}" in err and "(waited 0.6 s)" in err
    assert sorted(p.name for p in (bundle / STATE_DIR).iterdir()) == []  # nothing launched, lock released
    code, _, err = _run(capsys, "launch", str(bundle), "--wait-for-lock", "-1")
    assert code == 1 and "--wait-for-lock takes a number of seconds" in err


def test_a_bundle_file_overwritten_with_binary_is_one_line_for_launch(bundle, capsys):
    """verify_manifest hashed `read_text()`: a plan.json overwritten with non-UTF-8 bytes was a
    UnicodeDecodeError traceback; it is a located refusal and nothing runs."""
    (bundle / "plan.json").write_bytes(b"\x81\xff\x00not text")
    code, _, err = _run(capsys, "launch", str(bundle), "--dry-run")
    assert code == 1 and "plan.json cannot be read as the UTF-8 text specc wrote" in err and "Traceback" not in err, err


def test_a_bundle_file_replaced_by_a_device_link_is_named_as_such(bundle, capsys):
    config = bundle / "stages" / "01-data" / "config.json"
    config.unlink()
    config.symlink_to("/dev/null")
    code, _, err = _run(capsys, "launch", str(bundle), "--dry-run")
    assert code == 1 and "01-data/config.json is not a regular file" in err, err
