"""How the torch runtime executes each compute precision, and the check that it can.

- `fp32`: no autocast; parameters, activations and gradients in fp32.
- `bf16`: bf16 compute: autocast on one process, FSDP2's `MixedPrecisionPolicy(param_dtype=bf16)`
  under data parallelism; fp32 master weights, gradient reduction and optimizer state.
- `fp16`: the same with float16, plus dynamic loss scaling (`LossScaler`): fp16's 5-bit
  exponent underflows small gradients unless the loss is scaled up first.
- `fp8`: bf16 as above, and every Linear of the transformer blocks swapped for torchao's
  `Float8Linear` (`apply_float8`), whose matmuls run as `torch._scaled_mm` on fp8 operands with
  dynamic scales; the output head, MoE routers, routed experts and attention stay bf16.

`check_precision_runs` refuses, before anything is built, a precision the runtime would not
execute as written on this accelerator (the capability table validate reads) or on the device
this process really has: no precision ever silently runs as another.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from specc.catalog import load_catalog
from specc.spec.capabilities import TORCH_FP8_RECIPES, capabilities_for, fp8_linear_converts

TORCHAO_VERSION = "0.18.0"
"""The torchao release `precision: fp8` is tested with (pinned in pyproject.toml)."""

UNCONVERTED_LINEARS = ("output", "router")
"""Linear layers that stay bf16 under fp8 (by module name): the output head and MoE routers."""


def compute_dtype(precision: str) -> torch.dtype | None:
    """The dtype activations and gathered weights are computed in; None for fp32 (no casting).
    fp8 runs everything outside its converted Linears in bf16."""
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16, "fp8": torch.bfloat16}[precision]


def check_precision_runs(precision: str, accelerator_id: str, device: torch.device) -> None:
    """Raise ValueError unless this runtime trains in `precision` on `accelerator_id` (the spec's
    `cluster.accelerator`, looked up in the capability table) and on `device` (the real one)."""
    accelerator = load_catalog().get(accelerator_id)
    if accelerator is None:
        raise ValueError(f"unknown accelerator {accelerator_id!r}: not in specc's catalog")
    capabilities = capabilities_for(accelerator)
    if precision not in capabilities.precisions:
        supported = ", ".join(sorted(capabilities.precisions))
        raise ValueError(f"precision {precision} does not run on {accelerator.name}: specc's {capabilities.runtime} "
                         f"runtime trains in {supported} there (`specc validate` reports this as R118)")
    problem = _device_problem(precision, device)
    if problem:
        raise ValueError(f"precision {precision} cannot run in this process: {problem}")


def _device_problem(precision: str, device: torch.device) -> str | None:
    """Why `device` cannot compute in `precision`, or None."""
    if precision == "fp8":
        if device.type != "cuda":
            return (f"fp8 training needs fp8 tensor cores (NVIDIA compute capability 8.9+, e.g. H100, or AMD "
                    f"MI300), and this process runs on {device.type}")
        name = torch.cuda.get_device_name(device)
        if torch.version.hip:
            arch = torch.cuda.get_device_properties(device).gcnArchName
            if not arch.startswith(("gfx942", "gfx950")):
                return f"{name} ({arch}) has no fp8 matmul units (MI300 gfx942 or MI350 gfx950 needed)"
        elif torch.cuda.get_device_capability(device) < (8, 9):
            major, minor = torch.cuda.get_device_capability(device)
            return f"{name} (compute capability {major}.{minor}) has no fp8 tensor cores (8.9+ needed: L4, H100, H200, B200)"
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported(including_emulation=False):
        return f"{torch.cuda.get_device_name(device)} has no bf16 support; use precision: fp16 or fp32"
    return None


# ---------------------------------------------------------------- fp8 (torchao float8)

def _import_torchao_float8():
    try:
        import torchao.float8 as float8
    except ImportError as error:
        raise ValueError(f"precision fp8 needs torchao {TORCHAO_VERSION} "
                         f"(pip install torchao=={TORCHAO_VERSION}): {error}") from error
    return float8


def float8_module_filter(tp: int):
    """torchao's `module_filter_fn`: the transformer blocks' Linear layers whose shapes the fp8
    GEMM accepts (`specc.spec.capabilities.fp8_linear_converts`, which the planner charges too)."""

    def keep(module: nn.Module, fqn: str) -> bool:
        if not isinstance(module, nn.Linear) or not fqn.startswith("layers."):
            return False
        if fqn.rsplit(".", 1)[-1] in UNCONVERTED_LINEARS:
            return False
        return fp8_linear_converts(module.in_features, module.out_features, tp)

    return keep


def apply_float8(model: nn.Module, recipe: str, tp: int, fsdp_float8_all_gather: bool) -> list[str]:
    """Swap the blocks' Linear layers for torchao `Float8Linear` (before TP, recompute, compile and
    FSDP, torchtitan's order); returns the converted module names.

    `fsdp_float8_all_gather` (tensorwise under FSDP only; torchao supports no other): each rank
    casts its weight shard to fp8 before the all-gather, halving the gathered bytes; the scales then
    come from `precompute_float8_scales` after every optimizer step (one all-reduce of all amaxes
    instead of one per weight).
    """
    from dataclasses import replace

    if recipe not in TORCH_FP8_RECIPES:  # validate's R299 says so first (`Capabilities.fp8_recipes`)
        raise ValueError(f"fp8_recipe: {recipe} is not run by specc's runtime (it runs {' or '.join(TORCH_FP8_RECIPES)})")
    float8 = _import_torchao_float8()
    config = float8.Float8LinearConfig.from_recipe_name(recipe)
    if fsdp_float8_all_gather:
        config = replace(config, enable_fsdp_float8_all_gather=True)
    keep = float8_module_filter(tp)
    converted = [fqn for fqn, module in model.named_modules() if keep(module, fqn)]
    float8.convert_to_float8_training(model, config=config, module_filter_fn=keep)
    return converted


def precompute_float8_scales(parts: list[nn.Module]) -> None:
    """After the optimizer step, under fp8 all-gather: the next forward's weight scales, from one
    all-reduce of every converted weight's amax (torchao `precompute_float8_dynamic_scale_for_fsdp`)."""
    float8 = _import_torchao_float8()
    for part in parts:
        float8.precompute_float8_dynamic_scale_for_fsdp(part)


def uses_float8_all_gather(precision: str, recipe: str, data_parallel_ranks: int) -> bool:
    """Tensorwise fp8 under FSDP (more than one data/context-parallel rank) gathers weights in fp8."""
    return precision == "fp8" and recipe == "tensorwise" and data_parallel_ranks > 1


# ---------------------------------------------------------------- fp16 loss scaling

@dataclass
class LossScaler:
    """Dynamic loss scaling for fp16 (Micikevicius et al. 2018, "Mixed Precision Training", sec. 3.2)
    with torch.amp.GradScaler's defaults: start at 2^16, halve the scale and skip the update when a
    gradient overflows, double it after 2000 overflow-free steps.

    Why not torch.amp.GradScaler itself: it looks for overflows per (device, dtype) group of
    gradients and, for DTensor gradients, reduces the flag over the first gradient's mesh only, so
    pipeline stages (no DTensor spans them) or FSDP and expert meshes in one group can disagree about
    skipping a step. The loop's gradient norm is already reduced over every rank and mesh
    (`loop.grad_norm_and_clip`): a non-finite norm is an overflow flag every rank agrees on.
    """

    scale: float = 2.0**16
    growth_factor: float = 2.0
    backoff_factor: float = 0.5
    growth_interval: int = 2000
    good_steps: int = 0
    skipped_steps: int = 0

    def update(self, grad_norm: float) -> bool:
        """Adjust the scale after a backward pass whose unscaled gradient norm is `grad_norm`;
        returns whether the optimizer may step (False: the gradients overflowed)."""
        if not math.isfinite(grad_norm):
            self.scale *= self.backoff_factor
            self.good_steps = 0
            self.skipped_steps += 1
            return False
        self.good_steps += 1
        if self.good_steps == self.growth_interval:
            self.scale *= self.growth_factor
            self.good_steps = 0
        return True

    def state_dict(self) -> dict:
        return {"scale": self.scale, "good_steps": self.good_steps, "skipped_steps": self.skipped_steps}

    def load_state_dict(self, state: dict) -> None:
        self.scale, self.good_steps = float(state["scale"]), int(state["good_steps"])
        self.skipped_steps = int(state["skipped_steps"])
