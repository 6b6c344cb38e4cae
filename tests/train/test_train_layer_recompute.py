"""`recompute: full` with `recompute_every: n` (torchtitan's layer SAC): the runtime checkpoints exactly
the blocks the planner charges (`parallel_dims.is_recomputed_layer`), on a whole model and on each
pipeline stage, and those blocks, and only those, run forward again in backward; an MoE model whose
first blocks stay dense (`moe.first_k_dense`) is built with exactly the planner's MoE layers."""

from __future__ import annotations

import pytest
import torch

from train_helpers import VOCAB, tiny_model

from specc.runtime.train.model import build_model
from specc.runtime.train.parallelize import apply_ac, prune_to_stage
from specc.spec import parallel_dims as dims
from specc.spec.model import ModelSpec

TOKENS = torch.randint(0, VOCAB - 1, (2, 16), generator=torch.Generator().manual_seed(0))


def _forward_calls(model) -> dict[int, int]:
    """Forward calls per block over one forward + backward (a recomputed block runs twice)."""
    calls = {}
    for key, block in model.layers.items():
        inner = getattr(block, "_checkpoint_wrapped_module", block)
        calls[int(key)] = 0
        inner.register_forward_pre_hook(lambda module, args, key=int(key): calls.__setitem__(key, calls[key] + 1))
    model(TOKENS).float().square().mean().backward()
    return calls


@pytest.mark.parametrize("every", [1, 2, 3])
def test_runtime_recomputes_exactly_the_blocks_the_plan_charges(every):
    spec = ModelSpec.model_validate(tiny_model(num_layers=7))
    model = build_model(spec, seed=0)
    wrapped = apply_ac(model, "full", every=every)
    planned = [i for i in range(7) if dims.is_recomputed_layer(i, every)]
    assert wrapped == planned == list(range(every - 1, 7, every))
    assert dims.recomputed_layers_of_most_loaded_stage(spec, 1, 1, every) == (len(planned), 0)
    calls = _forward_calls(model)
    assert {i for i, n in calls.items() if n == 2} == set(planned)
    assert all(n == 1 for i, n in calls.items() if i not in planned)


def test_a_pipeline_stage_recomputes_its_share_by_model_wide_id():
    spec = ModelSpec.model_validate(tiny_model(num_layers=6))
    for rank in range(2):
        layers = dims.layers_of_rank(6, 2, 1, rank)
        stage = prune_to_stage(build_model(spec, seed=0), range(layers[0], layers[-1] + 1), rank == 0, rank == 1)
        assert apply_ac(stage, "full", every=2) == [i for i in layers if i % 2 == 1]


def test_first_k_dense_builds_the_planners_moe_layers():
    spec = ModelSpec.model_validate(tiny_model(num_layers=5, moe={"num_experts": 4, "top_k": 2, "first_k_dense": 2}))
    model = build_model(spec, seed=0)
    built = [int(key) for key, block in model.layers.items() if block.moe]
    assert built == dims.moe_layer_ids(spec) == [2, 3, 4]
