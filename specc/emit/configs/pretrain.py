"""The `pretrain` (and `pretrain_tpu`) stage config, built from a validated Spec and a layout (torch-free).

The bundle emitter calls `build_pretrain_config(spec, layout, predicted)` and writes the result as
`config.json["params"]`; `specc.runtime.train.stage.run` re-validates every section.
"""

from __future__ import annotations

from collections.abc import Mapping

from specc.catalog import entry_of, load_catalog
from specc.spec import parallel_dims
from specc.spec.derived import total_devices
from specc.spec.parallel import ParallelSpec
from specc.spec.root import Spec

PREDICTED_KEYS = ("step_s", "peak_memory_gib", "flops_per_token", "peak_tflops")


def resolve_layout(spec: Spec, layout: ParallelSpec | Mapping | None) -> ParallelSpec:
    """An explicit ParallelSpec with an integer dp.

    `layout` may be a ParallelSpec, the plan's `layout` object (dp, tp, pp, cp, ep, vpp,
    zero_stage, micro_batch, recompute; keys ParallelSpec lacks, like grad_accum, are
    derived again by the runtime), or None to use the spec's explicit `parallel` section.
    Settings the plan does not choose (precision, fsdp, sp, pp_schedule, ...) come from the spec.
    """
    base = spec.parallel if isinstance(spec.parallel, ParallelSpec) else ParallelSpec()
    if isinstance(layout, ParallelSpec):
        base = layout
    elif layout is not None:
        chosen = {k: v for k, v in layout.items() if k in ParallelSpec.model_fields}
        base = ParallelSpec.model_validate({**base.model_dump(), **chosen})
        if base.vpp > 1 and "pp_schedule" not in chosen:
            base = base.model_copy(update={"pp_schedule": "interleaved"})
    dims = parallel_dims.resolve(base, total_devices(spec.cluster))
    return base.model_copy(update={"dp": dims.dp})


def build_pretrain_config(spec: Spec, layout: ParallelSpec | Mapping | None = None,
                    predicted: Mapping | None = None) -> dict:
    """JSON-ready config of the pretrain stage: only its own sections of the spec."""
    parallel = resolve_layout(spec, layout)
    config = {
        "model": spec.model.model_dump(mode="json"),
        "parallel": parallel.model_dump(mode="json"),
        "schedule": spec.schedule.model_dump(mode="json"),
        "devices": total_devices(spec.cluster),
        "accelerator": spec.cluster.accelerator,
        "predicted": ({k: float(predicted[k]) for k in PREDICTED_KEYS if predicted.get(k) is not None}
                      if predicted else None),
    }
    if spec.cluster.catalog:  # a user catalog's accelerator travels with the stage (`cluster.catalog`)
        config["accelerator_entry"] = entry_of(load_catalog()[spec.cluster.accelerator])
    return config
