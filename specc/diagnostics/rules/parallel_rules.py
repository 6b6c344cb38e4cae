"""Rules about the parallel layout against the model, batch and cluster.

Rules here skip `parallel: auto`: the planner's search only proposes layouts that pass.
"""

from __future__ import annotations

from collections.abc import Iterator

from specc.catalog import load_catalog
from specc.diagnostics.rules.base import Finding
from specc.spec import parallel_dims as dims
from specc.spec.capabilities import capabilities_for
from specc.spec.derived import devices_per_node, total_devices
from specc.spec.parallel import ParallelSpec
from specc.spec.parallel_dims import Problem, data_parallel_size
from specc.spec.root import Spec


def _explicit(spec: Spec):
    return None if isinstance(spec.parallel, str) else spec.parallel


def _findings(problems: list[Problem]) -> Iterator[Finding]:
    for problem in problems:
        yield Finding(problem.path, problem.message, problem.hint, problem.severity)


def _dp(spec: Spec, parallel: ParallelSpec) -> int | None:
    return data_parallel_size(parallel, total_devices(spec.cluster))


def heads_split_over_tp(spec: Spec) -> Iterator[Finding]:
    """Tensor parallelism splits attention heads, KV heads and the FFN width evenly across ranks
    (specc's runtime splits KV heads and never replicates them: num_kv_heads % tp == 0).

    passes: `num_heads: 64, num_kv_heads: 8, tp: 8`   fails: `num_heads: 32, num_kv_heads: 4, tp: 8`
    """
    parallel = _explicit(spec)
    if parallel is not None:
        yield from _findings(dims.tp_problems(spec.model, parallel.tp))


def layers_fill_pipeline(spec: Spec) -> Iterator[Finding]:
    """Each of the pp x vpp pipeline chunks holds whole layers; uneven splits are allowed
    (Llama 3 405B: 126 layers on 16 stages, first and last stage one layer short) but slower.
    Tied embeddings cannot be pipelined (embedding on the first stage, head on the last).

    passes: `num_layers: 32, pp: 4`     fails: `num_layers: 4, pp: 8`
    """
    parallel = _explicit(spec)
    if parallel is not None:
        yield from _findings(dims.pipeline_problems(spec.model, parallel.pp, parallel.vpp))


def pipeline_schedule_matches_vpp(spec: Spec) -> Iterator[Finding]:
    """Virtual stages need the interleaved schedule, and the interleaved schedule needs them.

    passes: `pp: 4, pp_schedule: interleaved, vpp: 2`    fails: `pp: 4, pp_schedule: 1f1b, vpp: 2`
    """
    parallel = _explicit(spec)
    if parallel is None:
        return
    if parallel.vpp > 1 and parallel.pp_schedule != "interleaved":
        yield Finding(("parallel", "vpp"), f"vpp ({parallel.vpp}) needs pp_schedule: interleaved (got {parallel.pp_schedule})",
                      "set pp_schedule: interleaved, or vpp: 1")
    if parallel.pp_schedule == "interleaved" and parallel.vpp == 1 and parallel.pp > 1:
        yield Finding(("parallel", "pp_schedule"), "the interleaved schedule needs vpp >= 2",
                      "set parallel.vpp: 2 (or more), or pp_schedule: 1f1b")
    if parallel.pp == 1 and parallel.vpp > 1:
        yield Finding(("parallel", "vpp"), f"vpp ({parallel.vpp}) has no effect without pipeline parallelism (pp: 1)",
                      "remove vpp or set pp > 1", "warning")


def degrees_match_devices(spec: Spec) -> Iterator[Finding]:
    """dp x tp x pp x cp must equal the number of devices; hsdp_replicas divides dp.

    passes: 64 devices with `dp: 8, tp: 8`     fails: 64 devices with `dp: 4, tp: 8, pp: 4` (128)
    """
    parallel = _explicit(spec)
    if parallel is not None:
        yield from _findings(dims.degree_problems(parallel, total_devices(spec.cluster)))


def experts_fit_ep(spec: Spec) -> Iterator[Finding]:
    """Expert parallelism splits experts evenly and is carved out of the FSDP shard axis
    (ep divides dp / hsdp_replicas).

    passes: `num_experts: 8, ep: 8` with dp = 8     fails: `num_experts: 8, ep: 3`
    """
    parallel = _explicit(spec)
    if parallel is None or parallel.ep == 1:
        return
    yield from _findings(dims.expert_problems(spec.model, parallel.ep))
    dp = _dp(spec, parallel)
    if dp is not None and spec.model.moe is not None:
        yield from _findings(dims.expert_shard_problems(parallel, dp))


def batch_divides_over_dp(spec: Spec) -> Iterator[Finding]:
    """The global batch splits into dp replicas x micro_batch x gradient-accumulation steps.

    passes: `global_batch_size: 512` with dp 64, micro_batch 2      fails: `global_batch_size: 100` with dp 64
    """
    parallel = _explicit(spec)
    sequences = spec.schedule.batch_sequences()
    if parallel is None or not sequences:
        return
    dp = _dp(spec, parallel)
    if dp is None:
        return
    key = ("schedule", "global_batch_size") if spec.schedule.global_batch_size else ("schedule", "global_batch_tokens")
    for problem in dims.batch_problems(sequences, dp, parallel.micro_batch):
        yield Finding(key, problem.message, problem.hint, problem.severity)


def sequence_splits_over_cp(spec: Spec) -> Iterator[Finding]:
    """Context parallelism splits each sequence into cp chunks (2 x cp for load-balanced causal ring attention).

    passes: `seq_len: 8192, cp: 4`     fails: `seq_len: 1000, cp: 16`
    """
    parallel = _explicit(spec)
    if parallel is not None:
        yield from _findings(dims.sequence_problems(spec.schedule.seq_len, parallel.cp, parallel.cp_load_balance))


def runtime_supports_layout(spec: Spec) -> Iterator[Finding]:
    """The target's runtime must run every parallel axis of the layout (the TPU runtime shards over
    data, fsdp and tensor axes only: no pp, cp or ep); a ZeRO stage that the runtime runs as a
    higher one is a warning that names the stage the plan charges.

    passes: `tp: 4` on tpu-v5p      fails: `pp: 2` on tpu-v5p
    """
    parallel = _explicit(spec)
    accelerator = load_catalog().get(spec.cluster.accelerator)
    if parallel is None or accelerator is None:
        return
    dp = _dp(spec, parallel)
    if dp is None:
        return
    shard_ranks = dp * parallel.cp // (parallel.hsdp_replicas if parallel.fsdp else 1)
    yield from _findings(dims.capability_problems(parallel, capabilities_for(accelerator), shard_ranks))


def sequence_parallel_needs_tp(spec: Spec) -> Iterator[Finding]:
    """Sequence parallelism shards the tensor-parallel region's norms; without tp it does nothing.

    passes: `tp: 4, sp: true`    fails (warning): `tp: 1, sp: true`
    """
    parallel = _explicit(spec)
    if parallel is not None and parallel.sp and parallel.tp == 1:
        yield Finding(("parallel", "sp"), "sp: true has no effect with tp: 1 and is ignored",
                      "remove sp or set tp > 1", "warning")


def selective_policy_needs_selective(spec: Spec) -> Iterator[Finding]:
    """`selective_policy` only chooses what `recompute: selective` keeps; with other modes it does nothing.

    passes: `recompute: selective, selective_policy: alternate_matmuls`
    fails (warning): `recompute: full, selective_policy: alternate_matmuls`
    """
    parallel = _explicit(spec)
    if parallel is not None and parallel.selective_policy != "matmuls" and parallel.recompute != "selective":
        yield Finding(("parallel", "selective_policy"),
                      f"selective_policy: {parallel.selective_policy} has no effect with recompute: {parallel.recompute}",
                      "set recompute: selective, or remove selective_policy", "warning")


def zero_or_fsdp(spec: Spec) -> Iterator[Finding]:
    """FSDP already shards like ZeRO-3; combining it with a zero_stage is contradictory.

    passes: `fsdp: true`     fails: `fsdp: true, zero_stage: 1`
    """
    parallel = _explicit(spec)
    if parallel is not None and parallel.fsdp and parallel.zero_stage:
        yield Finding(("parallel", "zero_stage"),
                      f"fsdp: true already shards parameters, gradients and optimizer state (ZeRO-3); zero_stage: {parallel.zero_stage} contradicts it",
                      "remove zero_stage, or set fsdp: false")


def tp_within_node(spec: Spec) -> Iterator[Finding]:
    """Tensor parallelism communicates every layer; across nodes it runs at network speed.

    passes: `tp: 8` on 8-GPU nodes    fails (warning): `tp: 16` on 8-GPU nodes
    """
    parallel = _explicit(spec)
    per_node = devices_per_node(spec.cluster)
    network = spec.cluster.network
    if network is not None and network.fast_domain_devices:  # NVLink across nodes (NVL72)
        per_node = max(per_node, network.fast_domain_devices)
    if parallel is not None and parallel.tp > per_node and spec.cluster.nodes > 1:
        yield Finding(("parallel", "tp"),
                      f"tp ({parallel.tp}) spans more than one node ({per_node} devices per node); its all-reduces cross the network",
                      f"keep tp <= {per_node} and scale with pp or dp instead", "warning")


def _peak_key(precision: str) -> str:
    """The catalog peak a precision computes at (fp32 training runs on tf32 tensor cores)."""
    return "tf32" if precision == "fp32" else precision


def precision_supported(spec: Spec) -> Iterator[Finding]:
    """specc's runtime must train in the compute precision on the cluster's accelerator
    (`specc.spec.capabilities`): V100s have no bf16; fp8 needs fp8 tensor cores (H100, H200,
    B200, MI300X; not A100, V100 or a CPU); the TPU runtime trains in bf16 or fp32 only.

    A user catalog entry must also give a peak for the precision (or one the planner falls back to).

    passes: `precision: fp8` on h100-sxm      fails: `precision: fp8` on a100-80gb; `precision: fp32` on
            a catalog entry with only `peak_tflops: {fp8: ...}`
    """
    from specc.plan.layout import compute_precision, peak_tflops  # the planner's own defaults and fallbacks
    from specc.spec.capabilities import capabilities_for

    parallel = _explicit(spec)
    catalog = load_catalog()
    accelerator = catalog.get(spec.cluster.accelerator)
    if accelerator is None:
        return
    capabilities = capabilities_for(accelerator)
    precision = compute_precision(spec.parallel, accelerator)
    if parallel is not None and precision not in capabilities.precisions:
        yield _unsupported_precision(accelerator, capabilities, precision, catalog)
        return
    if peak_tflops(accelerator, precision) <= 0:  # a user catalog entry (cluster.catalog) without one
        yield Finding(("parallel", "precision") if parallel is not None else ("cluster", "accelerator"),
                      f"the catalog entry {accelerator.id!r} gives no peak TFLOP/s the planner can use for "
                      f"precision: {precision} (it has {', '.join(sorted(accelerator.peak_tflops)) or 'none'})",
                      f"add `peak_tflops: {{{_peak_key(precision)}: ...}}` to the entry, or use a precision it gives")


def _unsupported_precision(accelerator, capabilities, precision: str, catalog) -> Finding:
    """R118 for a precision specc's runtime does not train in on this accelerator."""
    from specc.spec.capabilities import capabilities_for

    if precision == "bf16" and not accelerator.bf16:
        reason = f"{accelerator.name} has no bf16 support"
    elif precision == "fp8" and not accelerator.fp8:
        reason = f"{accelerator.name} has no fp8 matmul hardware"
    else:
        reason = f"specc's {capabilities.runtime} runtime does not train in {precision} on {accelerator.name}"
    supported = [p for p in ("bf16", "fp16", "fp8", "fp32") if p in capabilities.precisions]
    hint = "use precision: " + (f"{', '.join(supported[:-1])} or {supported[-1]}" if len(supported) > 1 else supported[0])
    if precision == "fp16" and "fp16" not in supported:
        hint += " (bf16 needs no loss scaling)"
    if precision == "fp8":
        fp8_targets = [a.id for a in catalog.values() if "fp8" in capabilities_for(a).precisions]
        hint += f"; fp8 training runs on {', '.join(fp8_targets)}"
    return Finding(("parallel", "precision"), reason, hint)


def loss_runs_on_target(spec: Spec) -> Iterator[Finding]:
    """`parallel.loss` must be one the target's runtime executes (`specc.spec.capabilities`): the chunked
    head + cross-entropy is torch's (CPU/GPU); the TPU runtime computes the full logits, which XLA fuses.

    passes: `loss: chunked` on h100-sxm, `loss: auto` on tpu-v5e      fails: `loss: chunked` on tpu-v5e
    """
    parallel = _explicit(spec)
    accelerator = load_catalog().get(spec.cluster.accelerator)
    if parallel is None or accelerator is None or parallel.loss == "auto":
        return
    capabilities = capabilities_for(accelerator)
    if parallel.loss not in capabilities.losses:
        runs = " or ".join(f"loss: {name}" for name in capabilities.losses)
        yield Finding(("parallel", "loss"),
                      f"loss: {parallel.loss} is not executed by specc's {capabilities.runtime} runtime on "
                      f"{accelerator.name}, which runs {runs}",
                      f"use loss: auto (runs loss: {capabilities.resolve_loss('auto')} here) or {runs}")


def loss_chunk_tokens_needs_chunked(spec: Spec) -> Iterator[Finding]:
    """`loss_chunk_tokens` sizes the chunks of the chunked loss; with the full logits it does nothing.

    passes: `loss: chunked, loss_chunk_tokens: 2048`      fails (warning): `loss: full, loss_chunk_tokens: 2048`
    """
    parallel = _explicit(spec)
    if parallel is not None and parallel.loss == "full" and "loss_chunk_tokens" in parallel.model_fields_set:
        yield Finding(("parallel", "loss_chunk_tokens"),
                      f"loss_chunk_tokens: {parallel.loss_chunk_tokens} has no effect with loss: full",
                      "set loss: chunked (or auto), or remove loss_chunk_tokens", "warning")


def fast_domain_covers_whole_nodes(spec: Spec) -> Iterator[Finding]:
    """`cluster.network.fast_domain_devices` counts devices joined by NVLink/ICI; a node's devices
    always share it, so the domain is a whole number of nodes (GB200 NVL72: 18 nodes of 4 = 72).

    passes: `fast_domain_devices: 72, devices_per_node: 4`      fails: `fast_domain_devices: 6, devices_per_node: 4`
    """
    network = spec.cluster.network
    if network is None or network.fast_domain_devices is None:
        return
    per_node = devices_per_node(spec.cluster)
    domain = network.fast_domain_devices
    if domain % per_node:
        fits = [per_node * k for k in (max(1, domain // per_node), domain // per_node + 1)]
        yield Finding(("cluster", "network", "fast_domain_devices"),
                      f"fast_domain_devices ({domain}) is not a whole number of nodes ({per_node} devices per node)",
                      f"use a multiple of {per_node}, e.g. {' or '.join(str(f) for f in dict.fromkeys(fits))}")


def profile_matches_accelerator(spec: Spec) -> Iterator[Finding]:
    """A calibration profile scales the planner for the accelerator its runs ran on; on another
    accelerator its scales and error bars mean nothing.

    passes: `accelerator: h100-sxm` with a profile of h100-sxm runs      fails: the same profile on a100-80gb
    """
    profile = spec.cluster.profile
    if profile is not None and profile.accelerator != spec.cluster.accelerator:
        yield Finding(("cluster", "profile", "accelerator"),
                      f"the profile `{profile.name}` was fitted on {profile.accelerator} runs, but this cluster is "
                      f"{spec.cluster.accelerator}",
                      f"calibrate on {spec.cluster.accelerator} runs (`specc calibrate`), or remove the profile")
