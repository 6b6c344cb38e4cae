"""Rules about the DeepSeek-style architecture fields, layer-wise recompute and MXFP8 (R295-R299).

What the runtime builds is `specc.spec.capabilities`' word (`planned_only_features`,
`Capabilities.fp8_recipes`); these rules only report it at the field that asks for it.
"""

from __future__ import annotations

from collections.abc import Iterator

from specc.catalog import load_catalog
from specc.diagnostics.rules.base import Finding
from specc.spec import parallel_dims as dims
from specc.spec.capabilities import (TRANSFORMER_ENGINE_FP8_RECIPES, capabilities_for, has_mx_tensor_cores,
                                     planned_only_features)
from specc.spec.root import Spec


def model_is_built_by_runtime(spec: Spec) -> Iterator[Finding]:
    """Multi-head latent attention and multi-token prediction are planned only: `specc plan` models
    them for published runs (benchmarks), but no specc runtime builds them, so a spec asking for them
    would not train as written.

    passes: `mtp_depth: 0` (default), no `mla`      fails: `mla: {kv_lora_rank: 512}` or `mtp_depth: 1`
    """
    for name, why in planned_only_features(spec.model):
        yield Finding(("model", name), f"{name} cannot run: {why}; it is planned only",
                      f"remove model.{name} to train with specc; the planner's model of it is used by "
                      "benchmarks/plan_vs_published.py")


def mla_replaces_kv_heads(spec: Spec) -> Iterator[Finding]:
    """With `mla`, keys and values come from the latent (`kv_lora_rank`) with per-head widths of its
    own (`qk_nope_head_dim`, `qk_rope_head_dim`, `v_head_dim`): `num_kv_heads` and `head_dim` mean nothing.

    passes: `mla: {kv_lora_rank: 512}, num_heads: 128`      fails: `mla: {...}, num_kv_heads: 8`
    """
    model = spec.model
    if model.mla is None:
        return
    for name in ("num_kv_heads", "head_dim"):
        if getattr(model, name) is not None:
            yield Finding(("model", name), f"{name} does not apply with mla (heads read the shared latent)",
                          f"remove {name}; set mla.qk_nope_head_dim, mla.qk_rope_head_dim and mla.v_head_dim")


def first_k_dense_leaves_moe_layers(spec: Spec) -> Iterator[Finding]:
    """`moe.first_k_dense` keeps the first k layers dense; at least one MoE layer must remain
    (`parallel_dims.moe_layer_ids`), else the `moe` section describes nothing.

    passes: `num_layers: 61, moe: {first_k_dense: 3}`      fails: `num_layers: 4, moe: {first_k_dense: 4}`
    """
    moe = spec.model.moe
    if moe is None or moe.first_k_dense == 0 or dims.moe_layer_ids(spec.model):
        return
    yield Finding(("model", "moe", "first_k_dense"),
                  f"first_k_dense ({moe.first_k_dense}) leaves no MoE layer among {spec.model.num_layers} layers "
                  f"(layer_frequency {moe.layer_frequency})",
                  f"use first_k_dense below {spec.model.num_layers - moe.layer_frequency + 1}, or remove the moe section")


def recompute_every_needs_full(spec: Spec) -> Iterator[Finding]:
    """`recompute_every: n` picks which blocks `recompute: full` recomputes (torchtitan's layer SAC);
    the runtime applies it only to full recompute, and n above num_layers recomputes nothing.

    passes: `recompute: full, recompute_every: 2`      fails: `recompute: selective, recompute_every: 2`
    """
    parallel = None if isinstance(spec.parallel, str) else spec.parallel
    if parallel is None or parallel.recompute_every == 1:
        return
    every = parallel.recompute_every
    if parallel.recompute != "full":
        yield Finding(("parallel", "recompute_every"),
                      f"recompute_every: {every} needs recompute: full (it is recompute: {parallel.recompute})",
                      "set recompute: full to recompute every n-th block, or remove recompute_every")
    elif every > spec.model.num_layers:
        yield Finding(("parallel", "recompute_every"),
                      f"recompute_every ({every}) exceeds num_layers ({spec.model.num_layers}): no block would be recomputed",
                      f"use recompute_every between 1 and {spec.model.num_layers}, or recompute: none")


def fp8_recipe_runs_on_target(spec: Spec) -> Iterator[Finding]:
    """The fp8 recipe must be one specc's runtime runs on the accelerator (`Capabilities.fp8_recipes`):
    tensorwise and rowwise on fp8 GPUs. MXFP8 needs MX tensor cores (Blackwell: b200, gb200) and even
    there is planned only (torchao 0.18 has no MX training Linear). No fp8 at all is R118's.

    Transformer Engine's `delayed` and `current` recipes are planned only everywhere.

    passes: `precision: fp8, fp8_recipe: rowwise` on h100-sxm      fails: `fp8_recipe: mxfp8` on h100-sxm or b200
    """
    parallel = None if isinstance(spec.parallel, str) else spec.parallel
    accelerator = load_catalog().get(spec.cluster.accelerator)
    if parallel is None or accelerator is None or parallel.precision != "fp8" or not accelerator.fp8:
        return
    capabilities = capabilities_for(accelerator)
    recipe = parallel.fp8_recipe
    if recipe in capabilities.fp8_recipes:
        return
    runs = " or ".join(capabilities.fp8_recipes) or "none"
    if recipe in TRANSFORMER_ENGINE_FP8_RECIPES:
        why = (f"it is Transformer Engine's recipe (NeMo, Megatron-Core); specc's {capabilities.runtime} runtime "
               "uses torchao, not Transformer Engine (planned only)")
    elif recipe == "mxfp8" and not has_mx_tensor_cores(accelerator):
        blackwell = ", ".join(a.id for a in load_catalog().values() if has_mx_tensor_cores(a))
        why = f"{accelerator.name} has no MX (block-scaled) tensor cores; MXFP8 needs Blackwell ({blackwell})"
    else:
        why = (f"specc's {capabilities.runtime} runtime does not run it: torchao 0.18 has no MX training Linear "
               "(planned only)")
    yield Finding(("parallel", "fp8_recipe"), f"fp8_recipe: {recipe} cannot run on {accelerator.name}: {why}",
                  f"use fp8_recipe: {runs}")


def comm_overlap_runs(spec: Spec) -> Iterator[Finding]:
    """`tp_comm_overlap` (Transformer Engine userbuffers) and `pp_comm_overlap` (Megatron's overlapped
    pipeline sends) are planned only: specc's runtime runs its collectives as written
    (`Capabilities.comm_overlaps` is empty), so a spec asking for them would not run as planned.

    passes: `tp: 4, sp: true` (no overlap)      fails: `tp: 4, tp_comm_overlap: true`
    """
    parallel = None if isinstance(spec.parallel, str) else spec.parallel
    accelerator = load_catalog().get(spec.cluster.accelerator)
    if parallel is None or accelerator is None:
        return
    capabilities = capabilities_for(accelerator)
    stacks = {"tp_comm_overlap": "Transformer Engine's userbuffers (NeMo, Megatron-Core)",
              "pp_comm_overlap": "Megatron-Core's overlap_p2p_comm"}
    for name, stack in stacks.items():
        if getattr(parallel, name) and name not in capabilities.comm_overlaps:
            yield Finding(("parallel", name), f"{name} cannot run: it is {stack}; specc's {capabilities.runtime} "
                          "runtime does not overlap these collectives (planned only)",
                          f"remove parallel.{name} to train with specc; the planner models it for comparing stacks")


def pp_schedule_runs(spec: Spec) -> Iterator[Finding]:
    """The pipeline schedule must be one the runtime executes (`Capabilities.pp_schedules`): DeepSeek's
    `dualpipe` is planned only (specc's runtime has torch's 1F1B, interleaved 1F1B and GPipe).

    passes: `pp: 4, pp_schedule: 1f1b`      fails: `pp: 16, pp_schedule: dualpipe`
    """
    parallel = None if isinstance(spec.parallel, str) else spec.parallel
    accelerator = load_catalog().get(spec.cluster.accelerator)
    if parallel is None or accelerator is None:
        return
    capabilities = capabilities_for(accelerator)
    if parallel.pp_schedule in capabilities.pp_schedules:
        return
    yield Finding(("parallel", "pp_schedule"),
                  f"pp_schedule: {parallel.pp_schedule} cannot run: specc's {capabilities.runtime} runtime has "
                  f"{', '.join(capabilities.pp_schedules)} (planned only)",
                  f"use pp_schedule: {' or '.join(capabilities.pp_schedules)}")
