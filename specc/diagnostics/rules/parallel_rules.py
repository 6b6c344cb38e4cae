"""Rules about the parallel layout against the model, batch and cluster.

Rules here skip `parallel: auto`: the planner's search only proposes layouts that pass.
"""

from __future__ import annotations

from collections.abc import Iterator

from specc.catalog import load_catalog
from specc.diagnostics.rules.base import Finding, divisors
from specc.spec.capabilities import capabilities_for
from specc.spec.derived import data_parallel_size, devices_per_node, model_parallel_size, total_devices
from specc.spec.root import Spec


def _explicit(spec: Spec):
    return None if isinstance(spec.parallel, str) else spec.parallel


def heads_split_over_tp(spec: Spec) -> Iterator[Finding]:
    """Tensor parallelism splits attention heads across ranks: num_heads % tp == 0, and
    kv heads either split (num_kv_heads % tp == 0) or are replicated (tp % num_kv_heads == 0).

    passes: `num_heads: 64, num_kv_heads: 8, tp: 8`   fails: `num_heads: 40, tp: 16`
    """
    parallel = _explicit(spec)
    if parallel is None or parallel.tp == 1:
        return
    model, tp = spec.model, parallel.tp
    if model.num_heads % tp:
        fitting = [d for d in divisors(model.num_heads) if d <= 16]
        yield Finding(("parallel", "tp"),
                      f"num_heads ({model.num_heads}) is not divisible by tp ({tp}): {model.num_heads} / {tp} = {model.num_heads / tp:.3g}",
                      f"tp must divide num_heads: one of {fitting}")
    kv = model.kv_heads
    if kv % tp and tp % kv:
        yield Finding(("parallel", "tp"),
                      f"num_kv_heads ({kv}) can neither be split over tp ({tp}) ({kv} % {tp} = {kv % tp}) nor replicated ({tp} % {kv} = {tp % kv})",
                      f"use tp in {[d for d in divisors(kv)] + [m for m in (2 * kv, 4 * kv, 8 * kv) if m <= 16]}")
    if model.ffn_hidden_size % tp:
        yield Finding(("parallel", "tp"),
                      f"ffn_hidden_size ({model.ffn_hidden_size}) is not divisible by tp ({tp})",
                      "choose a tp that divides the FFN width")


def layers_fill_pipeline(spec: Spec) -> Iterator[Finding]:
    """Each of the pp x vpp pipeline chunks holds whole layers; uneven splits are allowed
    (Llama 3 405B: 126 layers on 16 stages, first and last stage one layer short) but slower.

    passes: `num_layers: 32, pp: 4`     fails: `num_layers: 4, pp: 8`
    """
    parallel = _explicit(spec)
    if parallel is None:
        return
    chunks = parallel.pp * parallel.vpp
    layers = spec.model.num_layers
    if layers < chunks:
        yield Finding(("parallel", "pp"),
                      f"num_layers ({layers}) is fewer than pp x vpp = {parallel.pp} x {parallel.vpp} = {chunks} pipeline chunks",
                      f"use pp x vpp <= {layers}")
    elif layers % chunks:
        per = layers / chunks
        yield Finding(("parallel", "pp"),
                      f"num_layers ({layers}) does not split evenly over pp x vpp = {chunks} chunks ({per:.2f} per chunk); the slowest stage sets the pace",
                      f"pp x vpp in {[d for d in divisors(layers) if 1 < d <= 64]} divide it evenly", "warning")


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
    """dp x tp x pp x cp must equal the number of devices.

    passes: 64 devices with `dp: 8, tp: 8`     fails: 64 devices with `dp: 4, tp: 8, pp: 4` (128)
    """
    parallel = _explicit(spec)
    if parallel is None:
        return
    devices = total_devices(spec.cluster)
    replica = model_parallel_size(parallel)
    dp = data_parallel_size(parallel, devices)
    if dp is None:
        yield Finding(("parallel",),
                      f"devices ({devices}) are not divisible by tp x pp x cp = {parallel.tp} x {parallel.pp} x {parallel.cp} = {replica}",
                      f"choose tp x pp x cp among the divisors of {devices}: {divisors(devices)[:12]}")
        return
    product = dp * replica
    if product != devices:
        fit = devices // replica if devices % replica == 0 else None
        yield Finding(("parallel", "dp"),
                      f"dp x tp x pp x cp = {dp} x {parallel.tp} x {parallel.pp} x {parallel.cp} = {product}, but the cluster has {devices} devices",
                      f"set dp: {fit} (or `auto`)" if fit else f"tp x pp x cp ({replica}) must divide {devices}")
    if parallel.hsdp_replicas > 1:
        if not parallel.fsdp:
            yield Finding(("parallel", "hsdp_replicas"), "hsdp_replicas needs fsdp: true", "set fsdp: true")
        elif dp % parallel.hsdp_replicas:
            yield Finding(("parallel", "hsdp_replicas"),
                          f"dp ({dp}) is not divisible by hsdp_replicas ({parallel.hsdp_replicas})",
                          f"use one of {divisors(dp)}")


def experts_fit_ep(spec: Spec) -> Iterator[Finding]:
    """Expert parallelism splits experts evenly and lives inside dp x cp.

    passes: `num_experts: 8, ep: 8` with dp x cp = 8     fails: `num_experts: 8, ep: 3`
    """
    parallel = _explicit(spec)
    if parallel is None or parallel.ep == 1:
        return
    moe = spec.model.moe
    if moe is None:
        yield Finding(("parallel", "ep"), f"ep ({parallel.ep}) is set but the model has no `moe` section",
                      "remove ep or add model.moe")
        return
    if moe.num_experts % parallel.ep:
        yield Finding(("parallel", "ep"),
                      f"num_experts ({moe.num_experts}) is not divisible by ep ({parallel.ep})",
                      f"use ep in {divisors(moe.num_experts)}")
    dp = data_parallel_size(parallel, total_devices(spec.cluster))
    if dp is not None and (dp * parallel.cp) % parallel.ep:
        yield Finding(("parallel", "ep"),
                      f"ep ({parallel.ep}) must divide dp x cp = {dp} x {parallel.cp} = {dp * parallel.cp}",
                      f"use ep in {[d for d in divisors(dp * parallel.cp) if d in divisors(moe.num_experts)]}")


def batch_divides_over_dp(spec: Spec) -> Iterator[Finding]:
    """The global batch splits into dp replicas x micro_batch x gradient-accumulation steps.

    passes: `global_batch_size: 512` with dp 64, micro_batch 2      fails: `global_batch_size: 100` with dp 64
    """
    parallel = _explicit(spec)
    sequences = spec.schedule.batch_sequences()
    if parallel is None or not sequences:
        return
    dp = data_parallel_size(parallel, total_devices(spec.cluster))
    if dp is None:
        return
    step = dp * parallel.micro_batch
    if sequences % step:
        lower, upper = sequences // step * step, -(-sequences // step) * step
        choices = " or ".join(str(v) for v in (lower, upper) if v > 0)
        yield Finding(("schedule", "global_batch_size") if spec.schedule.global_batch_size else ("schedule", "global_batch_tokens"),
                      f"global batch ({sequences} sequences) is not divisible by dp x micro_batch = {dp} x {parallel.micro_batch} = {step}",
                      f"use a global batch of {choices} sequences, or change micro_batch")


def sequence_splits_over_cp(spec: Spec) -> Iterator[Finding]:
    """Context parallelism splits each sequence into cp chunks (2 x cp for load-balanced causal ring attention).

    passes: `seq_len: 8192, cp: 4`     fails: `seq_len: 1000, cp: 16`
    """
    parallel = _explicit(spec)
    if parallel is None or parallel.cp == 1:
        return
    seq_len = spec.schedule.seq_len
    chunks = 2 * parallel.cp if parallel.cp_load_balance else parallel.cp
    if seq_len % chunks:
        why = "2 x cp" if parallel.cp_load_balance else "cp"
        yield Finding(("schedule", "seq_len"),
                      f"seq_len ({seq_len}) is not divisible by {why} = {chunks}",
                      f"use seq_len {seq_len // chunks * chunks or chunks} or {-(-seq_len // chunks) * chunks}")


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
    if parallel is not None and parallel.tp > per_node and spec.cluster.nodes > 1:
        yield Finding(("parallel", "tp"),
                      f"tp ({parallel.tp}) spans more than one node ({per_node} devices per node); its all-reduces cross the network",
                      f"keep tp <= {per_node} and scale with pp or dp instead", "warning")


def precision_supported(spec: Spec) -> Iterator[Finding]:
    """The accelerator must support the compute precision (V100 has no bf16; fp8 needs Hopper or newer).

    passes: `precision: bf16` on h100-sxm      fails: `precision: bf16` on v100-32gb
    """
    parallel = _explicit(spec)
    accelerator = load_catalog().get(spec.cluster.accelerator)
    if parallel is None or accelerator is None:
        return
    if parallel.precision == "bf16" and not accelerator.bf16:
        yield Finding(("parallel", "precision"), f"{accelerator.name} has no bf16 support",
                      "use precision: fp16 (with loss scaling) or fp32")
    if parallel.precision == "fp8" and not accelerator.fp8:
        yield Finding(("parallel", "precision"), f"{accelerator.name} has no fp8 tensor cores",
                      "use precision: bf16, or an fp8-capable accelerator (h100-sxm, h200, b200, mi300x)")


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
