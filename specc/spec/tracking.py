"""Spec section `tracking`: where training, alignment and eval stages log their metrics for people.

Every stage always writes `metrics.jsonl` (what `specc status`, `specc launch`'s progress and
`specc report` read); this section adds experiment-tracker outputs next to it, written by the
same `MetricsWriter` call (`specc.runtime.tracking`), so no training loop knows about trackers.
"""

from __future__ import annotations

from specc.spec.base import SpecModel
from specc.spec.types import Identifier


class TrackingSpec(SpecModel):
    """Experiment tracking: TensorBoard event files by default (`tensorboard --logdir <run_dir>/tensorboard`)."""

    tensorboard: bool = True
    """Write TensorBoard event files under `<run_dir>/tensorboard/<stage>/` from every training, alignment
    and eval stage: loss, val loss, lr, grad norm, tokens/s, MFU, peak memory, eval scores; and the
    run name and resolved spec as text."""
    run_name: Identifier | None = None
    """Name of the run in the tracker; default: the spec's `name`."""
