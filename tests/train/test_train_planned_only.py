"""The runtime refuses the planned-only parallel knobs at start-up, as validate does (R310, R311): it has
no userbuffers TP overlap, no overlapped pipeline sends and no DualPipe schedule, so a hand-edited config
asking for them fails instead of running something else."""

from __future__ import annotations

import pytest

from specc.catalog import load_catalog
from specc.runtime.train import parallelize as par
from specc.spec.capabilities import capabilities_for
from specc.spec.parallel import ParallelSpec

GPU = capabilities_for(load_catalog()["h100-sxm"])


@pytest.mark.parametrize("setting, named", [({"tp": 2, "tp_comm_overlap": True}, "tp_comm_overlap"),
                                            ({"pp": 2, "pp_comm_overlap": True}, "pp_comm_overlap"),
                                            ({"pp": 2, "pp_schedule": "dualpipe"}, "pp_schedule: dualpipe")])
def test_planned_only_knobs_are_refused(setting, named):
    with pytest.raises(ValueError, match=named):
        par.refuse_planned_only(ParallelSpec(**setting), GPU)


def test_what_the_runtime_runs_passes():
    par.refuse_planned_only(ParallelSpec(pp=2, pp_schedule="interleaved", vpp=2), GPU)
