"""One launch at a time per bundle: a held lock refuses a second launch and starts nothing;
a stale lock (its pid gone on this host) is taken over."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

from launch_helpers import FAST_TRAINING, TINY, emit, specc

from specc.emit.bundle import STATE_DIR
from specc.launch.lock import LOCK_NAME, LockHeld, launch_lock


def test_held_lock_refuses_a_second_launch_naming_the_holder(tmp_path):
    bundle = emit(TINY, tmp_path / "out", FAST_TRAINING)
    state = bundle / STATE_DIR
    with launch_lock(state):
        before = sorted(p.name for p in state.iterdir())
        result = specc("launch", str(bundle), "--executor", "local")
        assert result.returncode == 1, result.stdout + result.stderr
        out = result.stdout + result.stderr
        assert f"pid {os.getpid()} on {socket.gethostname()}" in out and "Traceback" not in out
        assert sorted(p.name for p in state.iterdir()) == before  # no launch folder, nothing run


def test_stale_lock_of_a_dead_pid_is_taken_over(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": int(dead), "host": socket.gethostname(),
                                                  "started": "earlier"}))
    with launch_lock(tmp_path) as path:
        assert json.loads(path.read_text())["pid"] == os.getpid()
    assert not (tmp_path / LOCK_NAME).exists()


def test_live_lock_on_another_host_is_never_stolen(tmp_path):
    (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": 1, "host": "elsewhere", "started": "t"}))
    with pytest.raises(LockHeld, match="pid 1 on elsewhere"):
        with launch_lock(tmp_path):
            pass
