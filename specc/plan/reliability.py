"""The failure budget of a training run: interruptions, checkpoints, restarts and goodput.

A synchronous job on N devices stops whenever any one of them fails, so its mean time between
interruptions is M = 1 / (rate x N). Each interruption costs a restart (requeue delay plus
reading the checkpoint back, R) and the work since the last checkpoint; each checkpoint costs
its write time delta (the runtime saves synchronously). Daly's model (docs/formulas.md section 8)
gives the expected wall time of T_s seconds of training for a checkpoint interval tau,

    T_w(tau) = M e^(R/M) (e^((tau + delta)/M) - 1) T_s / tau,

its optimum (Young 1974 to first order, Daly 2006 to higher order) and the goodput T_s / T_w.
On Slurm a job also stops at its time limit: that planned restart costs a checkpoint, a requeue
and a read, and counts against `max_requeues` like an interruption does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from specc.plan.layout import Layout
from specc.plan.memory import state_bytes
from specc.spec.cluster import SlurmSpec
from specc.spec.reliability import ReliabilitySpec
from specc.spec.schedule import ScheduleSpec

GOODPUT_LOSS_WARNING = 0.01
"""P210 when the spec's interval loses at least this much goodput against the optimum..."""
LOST_HOURS_WARNING = 1.0
"""...and at least this many hours of wall time (a short run is not worth retuning)..."""
INTERVAL_RATIO_WARNING = 2.0
"""...and is more than this factor away from it (the curve is flat near the optimum)."""
GOODPUT_WARNING = 0.8
"""P212 when even the optimal interval leaves less goodput than this."""
DAY_S = 86400.0


def checkpoint_bytes(params: float, layout: Layout) -> float:
    """Bytes of one checkpoint: what the runtime saves of `memory.state_bytes`, the fp32 weights and
    Adam's two moments (12 B/param; gradients are not saved), for every parameter once."""
    weights, _gradients, optimizer = state_bytes(layout)
    return (weights + optimizer) * params


def young_interval(write_s: float, mtbf_s: float) -> float:
    """Young (1974): tau = sqrt(2 delta M), to first order in delta / M."""
    return math.sqrt(2 * write_s * mtbf_s)


def daly_interval(write_s: float, mtbf_s: float) -> float:
    """Daly (2006), the higher-order optimum: tau = sqrt(2 delta M) [1 + sqrt(delta/2M)/3 + (delta/2M)/9] - delta for
    delta < 2M, else M."""
    if math.isinf(mtbf_s):
        return math.inf
    if write_s >= 2 * mtbf_s:
        return mtbf_s
    x = write_s / (2 * mtbf_s)
    return young_interval(write_s, mtbf_s) * (1 + math.sqrt(x) / 3 + x / 9) - write_s


def expected_wall_s(solve_s: float, interval_s: float, write_s: float, restart_s: float, mtbf_s: float) -> float:
    """Daly (2006), the complete model: expected wall time of `solve_s` of work checkpointed every `interval_s`
    under exponentially distributed interruptions with mean `mtbf_s` (infinite: no failures)."""
    if solve_s <= 0:
        return 0.0
    if math.isinf(mtbf_s):
        return solve_s * (1 + write_s / interval_s)
    try:
        return mtbf_s * math.exp(restart_s / mtbf_s) * math.expm1((interval_s + write_s) / mtbf_s) * solve_s / interval_s
    except OverflowError:
        return math.inf


@dataclass(frozen=True)
class FailureBudget:
    """The failure budget of one training plan (all times in seconds)."""

    devices: int
    interruptions_per_device_day: float
    mtbf_s: float
    checkpoint_bytes: float
    storage_bytes_per_s: float
    write_s: float
    restore_s: float
    requeue_s: float
    solve_s: float
    step_s: float
    interval_s: float
    time_limit_s: float | None
    max_requeues: int | None

    @property
    def restart_s(self) -> float:
        """R of Daly's model: requeue, then read the checkpoint back."""
        return self.requeue_s + self.restore_s

    @property
    def optimal_interval_s(self) -> float:
        """Daly's optimum, at most the usable time limit (each job checkpoints at its end anyway)."""
        return min(daly_interval(self.write_s, self.mtbf_s), self.time_limit_s or math.inf)

    def wall_s(self, interval_s: float) -> float:
        """Expected wall time at this interval, the time-limit restarts included."""
        return self._wall(interval_s)[1]

    def _wall(self, interval_s: float) -> tuple[int, float]:
        """(requeues at the Slurm time limit, expected wall time): Daly's wall time, cut into
        segments of the usable time limit, each but the last ending in a checkpoint and a restart."""
        wall = expected_wall_s(self.solve_s, interval_s, self.write_s, self.restart_s, self.mtbf_s)
        if self.time_limit_s is None or not math.isfinite(wall):
            return 0, wall
        planned = max(0, math.ceil(wall / self.time_limit_s) - 1)
        return planned, wall + planned * (self.write_s + self.restart_s)

    def goodput(self, interval_s: float) -> float:
        """Training time over expected wall time."""
        wall = self.wall_s(interval_s)
        return self.solve_s / wall if wall and math.isfinite(wall) else 0.0

    def contract(self) -> dict:
        """The plan's `reliability` object."""
        planned, wall = self._wall(self.interval_s)
        optimal = self.optimal_interval_s
        interruptions = wall / self.mtbf_s if math.isfinite(self.mtbf_s) and math.isfinite(wall) else 0.0
        return {
            "devices": self.devices,
            "interruptions_per_device_day": _sig(self.interruptions_per_device_day),
            "mtbf_h": _sig(self.mtbf_s / 3600) if math.isfinite(self.mtbf_s) else None,
            "checkpoint_gib": _sig(self.checkpoint_bytes / 2**30),
            "storage_gbps": _sig(self.storage_bytes_per_s / 1e9),
            "checkpoint_write_s": _sig(self.write_s),
            "restore_s": _sig(self.restore_s),
            "requeue_s": _sig(self.requeue_s),
            "interval_s": _sig(self.interval_s),
            "interval_steps": _steps(self.interval_s, self.step_s),
            "young_interval_s": _sig(young_interval(self.write_s, self.mtbf_s)) if math.isfinite(self.mtbf_s) else None,
            "optimal_interval_s": _sig(optimal) if math.isfinite(optimal) else None,
            "optimal_interval_steps": _steps(optimal, self.step_s) if math.isfinite(optimal) else None,
            "goodput": round(self.goodput(self.interval_s), 4),
            "goodput_at_optimum": round(self.goodput(optimal), 4) if math.isfinite(optimal) else None,
            "wall_days": _sig(wall / DAY_S) if math.isfinite(wall) else None,
            "expected_interruptions": _sig(interruptions),
            "time_limit_restarts": planned,
            "expected_restarts": _sig(planned + interruptions),
            "max_requeues": self.max_requeues,
        }

    def findings(self) -> list[dict]:
        """P210 (interval far from the optimum), P211 (max_requeues too low), P212 (low goodput)."""
        data = self.contract()
        found = []
        optimal = self.optimal_interval_s
        if math.isfinite(optimal) and optimal > 0 and self.interval_s > 0:
            ratio = self.interval_s / optimal
            loss = data["goodput_at_optimum"] - data["goodput"]
            lost_h = (self.wall_s(self.interval_s) - self.wall_s(optimal)) / 3600
            if (loss >= GOODPUT_LOSS_WARNING and lost_h >= LOST_HOURS_WARNING
                    and not 1 / INTERVAL_RATIO_WARNING <= ratio <= INTERVAL_RATIO_WARNING):
                found.append({"code": "P210", "message": (
                    f"checkpoints every {_duration(self.interval_s)} ({data['interval_steps']} steps) are {ratio:.3g}x "
                    f"the optimal interval {_duration(optimal)} (Daly 2006: a {_duration(self.write_s)} write, one "
                    f"interruption every {_duration(self.mtbf_s)}): expected goodput {data['goodput']:.1%} vs "
                    f"{data['goodput_at_optimum']:.1%} ({lost_h:,.0f} h of wall time); set checkpoint_interval: "
                    f"{data['optimal_interval_steps']}")})
        if self.max_requeues is not None and data["expected_restarts"] > self.max_requeues:
            interruptions = data["expected_interruptions"]
            wanted = math.ceil(data["time_limit_restarts"] + interruptions + 3 * math.sqrt(interruptions))
            covered = (self.max_requeues + 1) * self.time_limit_s / DAY_S
            found.append({"code": "P211", "message": (
                f"max_requeues ({self.max_requeues}) cannot cover the run: {_days(data['wall_days'])} of expected "
                f"wall time need {data['time_limit_restarts']} requeues at the {_duration(self.time_limit_s)} time "
                f"limit plus ~{interruptions:.3g} after interruptions, but (max_requeues + 1) x time limit is "
                f"{covered:.3g} days; set max_requeues >= {wanted} (mean + 3 sigma of the interruptions) or a "
                f"longer time limit")})
        if data["goodput_at_optimum"] is not None and data["goodput_at_optimum"] < GOODPUT_WARNING:
            found.append({"code": "P212", "message": (
                f"expected goodput is {data['goodput_at_optimum']:.1%} even at the optimal checkpoint interval: "
                f"one interruption every {_duration(self.mtbf_s)} on {self.devices} devices, each costing "
                f"{_duration(self.restart_s)} to restart ({_duration(self.requeue_s)} requeue + "
                f"{_duration(self.restore_s)} read) and a {_duration(self.write_s)} write per checkpoint; "
                f"faster checkpoint storage or a shorter requeue delay would recover most of it")})
        return found


def failure_budget(reliability: ReliabilitySpec, slurm: SlurmSpec | None, schedule: ScheduleSpec, *, devices: int,
                   nodes: int, params: float, layout: Layout, step_s: float, steps: int) -> FailureBudget | None:
    """The failure budget of a training plan; None when there is nothing to train. `slurm` is None
    off Slurm (no time limit, no requeue count)."""
    if steps <= 0 or step_s <= 0:
        return None
    rate = reliability.interruptions_per_device_day
    mtbf_s = DAY_S / (rate * devices) if rate > 0 else math.inf
    bandwidth = nodes * reliability.storage_gbps_per_node
    if reliability.storage_gbps is not None:
        bandwidth = min(bandwidth, reliability.storage_gbps)
    size = checkpoint_bytes(params, layout)
    seconds = size / (bandwidth * 1e9)
    interval = schedule.checkpoint_interval * step_s
    if schedule.checkpoint_every is not None:
        interval = min(interval, schedule.checkpoint_every * 60)
    limit = None if slurm is None else max(1.0, slurm.training_time() * 60 - slurm.signal_seconds)
    return FailureBudget(devices=devices, interruptions_per_device_day=rate, mtbf_s=mtbf_s, checkpoint_bytes=size,
                         storage_bytes_per_s=bandwidth * 1e9, write_s=seconds, restore_s=seconds,
                         requeue_s=reliability.requeue_delay * 60, solve_s=steps * step_s, step_s=step_s,
                         interval_s=interval, time_limit_s=limit,
                         max_requeues=None if slurm is None or not slurm.requeue else slurm.max_requeues)


def _sig(value: float, digits: int = 6) -> float:
    return float(f"{value:.{digits}g}") if value and math.isfinite(value) else 0.0


def _days(days: float | None) -> str:
    """`wall_days` for a message; None when the wall time overflowed (a degenerate step time)."""
    return f"{days:.3g} days" if days is not None else "a too-long-to-compute number of days"


def _steps(seconds: float, step_s: float) -> int:
    return max(1, round(seconds / step_s))


def _duration(seconds: float) -> str:
    """`42 s`, `7.5 min`, `3.09 h`, `2.1 days`."""
    if not math.isfinite(seconds):
        return "never"
    if seconds < 120:
        return f"{seconds:.3g} s"
    if seconds < 7200:
        return f"{seconds / 60:.3g} min"
    if seconds < 2 * DAY_S:
        return f"{seconds / 3600:.3g} h"
    return f"{seconds / DAY_S:.3g} days"
