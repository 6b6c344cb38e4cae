"""The callable submitit runs inside each job: one stage of a bundle, via the bundle's own `run.sh`.

Why a subprocess running `run.sh` rather than importing the stage: the script is the
reviewed artifact (environment set-up, torchrun for multi-device training), and running
it keeps torch out of the submitting process.

Failure policy (what is retried and what is not):
- preemption and time limit: Slurm (or the local controller) sends USR2 ahead of the
  end; submitit calls `checkpoint()` here, which passes the signal on to the stage (the
  trainer saves a checkpoint and exits), then submitit requeues the job, which resumes
  from that checkpoint. At most `max_requeues` times.
- node failure, `scontrol requeue`, a preemption that requeues: Slurm sends SIGTERM and
  requeues a `--requeue` job itself; the stage checkpoints on SIGTERM and exits 75, and
  the job leaves without a result so that the requeued run resumes (if no requeue comes
  within REQUEUE_GRACE_S, the job asks for one). A node that dies outright is requeued by
  Slurm, and the stage resumes from its last periodic checkpoint. On the nodes that survive,
  the stage fails first (its collectives lose their peer): when its stderr says a peer went away
  and Slurm then reports one of the job's nodes down or not responding, that is the node failure,
  and the job leaves for the requeue too (Slurm places it on other nodes).
- anything else (a config error, out of memory, an exception at step 0, any non-zero
  exit): deterministic or unknown, so the job fails at once with the reason classified
  from the exit status and the end of stderr; dependants (afterok) never start.
"""

from __future__ import annotations

import collections
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from submitit import JobEnvironment
from submitit.helpers import Checkpointable, DelayedSubmission

from specc.launch.readback import load_stage_config
from specc.pipeline import output_dirname

EXIT_REQUEUE = 75
"""A stage's exit status after it saved a checkpoint on SIGTERM/SIGUSR2 (sysexits EX_TEMPFAIL,
`specc.runtime.lifecycle.EXIT_REQUEUE`): rerunning it resumes, so the job is requeued."""
STDERR_TAIL_LINES = 200
REQUEUE_GRACE_S = 30.0
"""After a stage checkpointed on SIGTERM, how long to leave the scheduler to kill and requeue
us itself before asking for the requeue."""
LOST_PEER = re.compile(r"Connection (closed|reset) by peer|Broken pipe|RendezvousConnectionError|"
                       r"RendezvousClosedError|remote process exited|Socket Timeout")
"""What a multi-node stage's stderr shows when another node's processes vanished (gloo, NCCL, torchrun)."""
NODE_CHECK_MARGIN_S = 15.0
"""How long past Slurm's SlurmdTimeout to wait for it to report a silent node down."""
CHECKPOINT_WAIT_S = 60.0
"""How long `checkpoint()` waits for the stage to save and exit after the signal
(well inside submitit's 90 s warning)."""


class StageFailed(Exception):
    """A stage exited unsuccessfully; the message is the classified reason."""


@dataclass(frozen=True)
class Failure:
    kind: str
    """`oom`, `config`, `exception`, `signal` or `exit`."""
    reason: str


_OOM = re.compile(r"OutOfMemoryError|CUDA out of memory|MemoryError|can't allocate memory|"
                  r"Cannot allocate memory|std::bad_alloc", re.IGNORECASE)
_CONFIG = re.compile(r"^specc\.runtime: |^specc [a-z-]+: error: |ValidationError|config(uration)? error",
                     re.MULTILINE)


def classify_failure(returncode: int, stderr_tail: str, step: int | None) -> Failure:
    """Why a stage failed, from its exit status, the end of its stderr and its last step.

    Examples: exit 1 with `MemoryError` in stderr -> `oom`; killed by SIGKILL ->
    `oom` (the kernel's OOM killer, the usual sender); `specc.runtime: cannot read
    config.json` or `specc data: error: no files match` -> `config`; a traceback ->
    `exception`, naming its last line and step.
    """
    where = f" (at step {step})" if step is not None else ""
    signum = -returncode if returncode < 0 else (returncode - 128 if returncode > 128 else 0)
    last = _last_error_line(stderr_tail)
    if signum == signal.SIGKILL:
        return Failure("oom", f"killed by SIGKILL, most often the out-of-memory killer{where}")
    if _OOM.search(stderr_tail):
        return Failure("oom", f"{_last_error_line(stderr_tail, _OOM)}{where}")
    if _CONFIG.search(stderr_tail):
        return Failure("config", f"{last}{where}")
    if "Traceback (most recent call last)" in stderr_tail:
        return Failure("exception", f"{last}{where}")
    if signum:
        return Failure("signal", f"killed by {signal.Signals(signum).name}{where}")
    return Failure("exit", f"exit status {returncode}: {last}{where}")


_ERROR_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Interrupt)\b.*")


def _last_error_line(text: str, pattern: re.Pattern | None = None) -> str:
    """The most telling line of a stage's stderr: the last one matching `pattern`, else the last
    `SomeError: message` line (a traceback's last line; torchrun prints its summary after it),
    else the last line that is not decoration."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for wanted in (pattern, _ERROR_LINE):
        if wanted is None:
            continue
        found = [line for line in lines if wanted.search(line)]
        if found:
            return found[-1]
    meaningful = [line for line in lines if line.strip("=-*#_ ")]
    return meaningful[-1] if meaningful else "(no output on stderr)"


def last_step(metrics: Path) -> int | None:
    """The last `step` recorded in a stage's metrics.jsonl, if any."""
    if not metrics.exists():
        return None
    step = None
    for line in metrics.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and isinstance(record.get("step"), int):
            step = record["step"]
    return step


def restart_count() -> int:
    """How many times the scheduler has restarted this job (Slurm's SLURM_RESTART_COUNT)."""
    return int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0)


def _slurm_output(*command: str) -> str:
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return ""


def lost_nodes() -> list[str]:
    """The nodes of this multi-node Slurm job that Slurm reports down or not responding, waiting
    up to its SlurmdTimeout (+ NODE_CHECK_MARGIN_S) for it to notice; [] for a one-node job or when
    every node answers (then the failure is the stage's own)."""
    nodelist = os.environ.get("SLURM_JOB_NODELIST", "")
    if int(os.environ.get("SLURM_JOB_NUM_NODES", "1") or 1) < 2 or not nodelist:
        return []
    found = re.search(r"SlurmdTimeout\s*=\s*(\d+)", _slurm_output("scontrol", "show", "config"))
    deadline = time.time() + (int(found.group(1)) if found else 300) + NODE_CHECK_MARGIN_S
    while True:
        states = [line.split() for line in _slurm_output("sinfo", "-h", "-N", "-n", nodelist, "-o", "%N %T").splitlines()]
        lost = sorted({name for name, state in (s for s in states if len(s) == 2)
                       if state.endswith("*") or state.startswith(("down", "fail"))})
        if lost or time.time() >= deadline:
            return lost
        time.sleep(2)


class StageTask(Checkpointable):
    """Run `stages/<NN-stage>/run.sh` of a bundle as one job."""

    def __init__(self, bundle_dir: str, stage_dir: str, max_requeues: int, python: str = sys.executable,
                 environment: dict[str, str] | None = None):
        self.bundle_dir = bundle_dir
        self.stage_dir = stage_dir
        self.max_requeues = max_requeues
        self.python = python
        self.environment = dict(environment or {})
        """Added to the stage's environment: a job that runs one phase of the stage (the data
        stage's bucket array: `SPECC_DATA_PHASE=buckets`)."""
        self._child: subprocess.Popen | None = None
        self._terminated = False

    def __call__(self) -> dict:
        bundle = Path(self.bundle_dir)
        config = load_stage_config(bundle / self.stage_dir / "config.json")
        if restart_count() > self.max_requeues:
            raise StageFailed(f"{config['stage']}: restarted {restart_count()} times, "
                              f"more than max_requeues={self.max_requeues}")
        started = time.time()
        self._watch_sigterm()
        returncode, tail = self._run(bundle)
        outputs = (bundle / config["run_dir"] / output_dirname(config["stage"])).resolve()
        if returncode == EXIT_REQUEUE or (returncode != 0 and self._terminated):
            # Stopped by the scheduler (preemption, `scontrol requeue`, node going down), not failed:
            # torchrun reports its workers' status 75 as a failure of its own, hence the flag.
            self._requeue_after_checkpoint(config["stage"])
        if returncode != 0 and LOST_PEER.search(tail):
            lost = lost_nodes()
            if lost:
                print(f"specc: node(s) {', '.join(lost)} of this job went down; requeueing to resume elsewhere",
                      file=sys.stderr, flush=True)
                self._requeue_after_checkpoint(config["stage"])
        if returncode != 0:
            failure = classify_failure(returncode, tail, last_step(outputs / "metrics.jsonl"))
            raise StageFailed(f"{config['stage']}: {failure.kind}: {failure.reason}")
        return {"stage": config["stage"], "seconds": round(time.time() - started, 3),
                "restarts": restart_count(), "outputs": str(outputs)}

    def _watch_sigterm(self) -> None:
        """Note a SIGTERM (the scheduler stopping the job), then let submitit's handler log it."""
        self._terminated = False
        previous = signal.getsignal(signal.SIGTERM)

        def handler(signum, frame):
            self._terminated = True
            if callable(previous):
                previous(signum, frame)

        signal.signal(signal.SIGTERM, handler)

    def _run(self, bundle: Path) -> tuple[int, str]:
        """Run the script, echoing its stderr while keeping the last lines for the failure reason."""
        environment = {**os.environ, **self.environment, "SPECC_PYTHON": self.python, "PYTHONUNBUFFERED": "1"}
        tail: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL_LINES)
        self._child = subprocess.Popen(["bash", str(bundle / self.stage_dir / "run.sh")], cwd=bundle,
                                       env=environment, stderr=subprocess.PIPE, text=True, errors="replace")
        reader = threading.Thread(target=_pump, args=(self._child.stderr, tail), daemon=True)
        reader.start()
        try:
            while self._child.poll() is None:  # poll, not wait(): checkpoint() may run in between
                time.sleep(0.2)
        finally:
            if self._child.poll() is None:
                self._child.kill()
        reader.join(timeout=5)
        return self._child.returncode, "".join(tail)

    def _requeue_after_checkpoint(self, stage: str) -> None:
        """The stage saved a checkpoint on a stop signal that did not come through submitit
        (SIGTERM of a Slurm preemption or `scontrol requeue`): requeue, unless the scheduler
        already is (then it kills us during the grace period)."""
        if restart_count() >= self.max_requeues:
            raise StageFailed(f"{stage}: stopped by a signal after {restart_count()} restarts "
                              f"(max_requeues={self.max_requeues}); not requeuing")
        time.sleep(REQUEUE_GRACE_S)
        try:
            JobEnvironment()._requeue(self.max_requeues - restart_count())
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as error:
            print(f"specc: requeue request failed ({error}); leaving it to the scheduler",
                  file=sys.stderr, flush=True)
        raise SystemExit(EXIT_REQUEUE)  # no result file: the job is not over

    def checkpoint(self, *args, **kwargs) -> DelayedSubmission | None:
        """Called by submitit on USR2 (preemption, time limit): let the stage save, then requeue."""
        child = self._child
        if child is not None and child.poll() is None:
            child.send_signal(signal.SIGUSR2)  # the local controller signals only us, not the stage
            deadline = time.time() + CHECKPOINT_WAIT_S
            while child.poll() is None and time.time() < deadline:
                time.sleep(0.2)
        if restart_count() >= self.max_requeues:
            print(f"specc: not requeuing: already restarted {restart_count()} times "
                  f"(max_requeues={self.max_requeues})", file=sys.stderr, flush=True)
            return None
        return DelayedSubmission(StageTask(self.bundle_dir, self.stage_dir, self.max_requeues, self.python,
                                           self.environment))

    def __getstate__(self) -> dict:
        return {key: value for key, value in self.__dict__.items() if key not in ("_child", "_terminated")}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._child, self._terminated = None, False


def _pump(stream, tail: collections.deque) -> None:
    for line in stream:
        sys.stderr.write(line)
        sys.stderr.flush()
        tail.append(line)
