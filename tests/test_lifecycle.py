"""The training lifecycle every loop shares (`specc.runtime.lifecycle`), without a model: a signal
checkpoints the step and exits 75, a NaN loss stops before anything is saved, the cadence saves
by interval and at the last step, records reach metrics.jsonl. The loops' own tests (tests/train,
tests/tpu, tests/align) run it with real training."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from specc.runtime.integrity import NonFiniteLossError
from specc.runtime.lifecycle import EXIT_REQUEUE, Cadence, Lifecycle, agree


@pytest.fixture
def restore_signals():
    """The lifecycle installs its own SIGTERM/SIGUSR2 handlers: give pytest its own back."""
    saved = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGUSR2)}
    yield
    for signum, handler in saved.items():
        signal.signal(signum, handler)


def lines(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_cadence_saves_every_interval_and_at_the_last_step(tmp_path, restore_signals):
    saved: list[int] = []
    with Lifecycle("test", tmp_path).start(0, 5, Cadence(2)) as life:
        for step in range(1, 6):
            life.end_of_step(step, {"step": step, "loss": 1.0 / step}, 1.0 / step, saved.append)
    assert saved == [2, 4, 5]
    assert [r["step"] for r in lines(tmp_path)] == [1, 2, 3, 4, 5]
    assert life.last_loss == pytest.approx(0.2)


def test_signal_checkpoints_the_step_then_exits_for_requeue(tmp_path, restore_signals, capsys):
    saved: list[int] = []
    with Lifecycle("test", tmp_path).start(0, 10, Cadence(100)) as life:
        life.end_of_step(1, {"step": 1, "loss": 2.0}, 2.0, saved.append)
        os.kill(os.getpid(), signal.SIGUSR2)
        with pytest.raises(SystemExit) as stopped:
            life.end_of_step(2, {"step": 2, "loss": 1.5}, 1.5, saved.append)
    assert stopped.value.code == EXIT_REQUEUE == 75
    assert saved == [2]
    assert f"test: signal {int(signal.SIGUSR2)} received; checkpointed step 2, exiting 75" in capsys.readouterr().out


def test_non_finite_loss_stops_before_saving(tmp_path, restore_signals):
    saved: list[int] = []
    with Lifecycle("test", tmp_path).start(0, 10, Cadence(1)) as life:
        life.end_of_step(1, {"step": 1, "loss": 2.0}, 2.0, saved.append)
        with pytest.raises(NonFiniteLossError, match="the loss is nan at step 2"):
            life.end_of_step(2, {"step": 2, "loss": float("nan")}, float("nan"), saved.append)
    assert saved == [1]
    assert lines(tmp_path)[-1]["event"] == "non_finite_loss"


def test_steps_without_a_loss_are_not_checked(tmp_path, restore_signals):
    """PPO reports no `loss`: nothing to check, the cadence still saves."""
    saved: list[int] = []
    with Lifecycle("test", tmp_path).start(0, 2, Cadence(1)) as life:
        for step in (1, 2):
            life.end_of_step(step, {"step": step, "reward": 0.5}, None, saved.append)
    assert saved == [1, 2]


def test_logged_and_evaluated_steps(tmp_path, restore_signals):
    with Lifecycle("test", tmp_path).start(4, 20, Cadence(100)) as life:
        assert [s for s in range(5, 21) if life.logs(s, 10)] == [5, 10, 20]  # first of this run, interval, last
        assert [s for s in range(5, 21) if life.evaluates(s, 8)] == [8, 16, 20]
        assert not any(life.evaluates(s, 0) for s in range(5, 21))


def test_one_process_agrees_with_itself():
    assert agree([0, 1]) == [0, 1]
