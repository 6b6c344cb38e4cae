"""How far `specc plan`'s time and memory models are from published training runs.

Data: benchmarks/data/published_runs.json, a copy of the project's calibration set (183 runs:
MosaicML llm-foundry MPT benchmark tables, Megatron-LM SC21 Table 1, Korthikanti et al. 2022,
torchtitan Llama 3.1 benchmarks, MaxText TPU v5e/v4 tables; every row carries its source URL).

Throughput is compared as tokens/s per device, which no FLOP convention can bend. Where a source
publishes only TFLOP/s or MFU, its tokens/s are recovered with *that source's* FLOP formula
(SC21: 96·B·s·L·h²(1 + s/6h + V/16Lh) with recompute; Korthikanti MFU: 72·B·s·L·h²(1 + s/6h + V/12Lh);
MaxText: 6 x matmul weights incl. logits + non-causal attention 12·L·H·Q·s). The MFU that `specc plan`
itself prints is model FLOPs with *causal* attention (see specc.plan.plan.MFU_CONVENTION).

Calibration: the efficiency constants in specc/plan/timing.py named in FITTED below were fitted
(`--fit`, coordinate descent over a grid) on ALL sources, each source weighted equally (score: mean
over sources of median + p90/4 of |error|), so the default report shows in-sample figures. `--cv`
measures generalisation honestly: leave one source out, refit on the others, evaluate on the one left
out; its pooled median is the figure to quote for runs from a new source or accelerator.

Memory: every run ran, so each should be predicted to fit; the report counts those that are. The loss's
working set depends on the stack's cross-entropy (`--loss`): by default each source's own (`source`):
torchtitan upcasts the whole logits (`F.cross_entropy(pred.flatten(0, 1).float(), ...)`: specc's `full`);
llm-foundry (flash-attn's fused cross-entropy) and Megatron (fused vocab-parallel cross-entropy) never
hold the 14 B per logit of an unfused loss, and are planned with specc's `chunked` loss, the nearer of
specc's two (optimistic: their fused kernels still hold the 16-bit logits); MaxText's XLA fuses the loss
(`auto`). `--loss full` is the planner before `parallel.loss` existed. Throughput is always evaluated
without the chunked loss's head recompute, which none of these stacks runs. Rows whose layout names a
`stack` (Megatron-LM: SC21, Korthikanti; Megatron-Core + Transformer Engine: NeMo) are planned with that
stack's memory habits (`specc.plan.layout.Layout.stack`: 16-bit weights with fp32 masters in the
distributed optimizer, TE's fp8 weight caches and fp8 saved activations, Megatron's vocab-parallel
cross-entropy whatever `--loss` says), and `layout.grad_dtype` where the source's scripts set it. The
memory report gives, per source, the runs predicted to fit, the largest and median predicted /
capacity ratio ("does not fit by more than 10%" is a ratio above 1.10) and each run predicted not to
fit with its breakdown (`--rows`: every run); then the error against published allocator peaks by source
(torchtitan's max reserved, which adds the allocator's FSDP side-stream pools to the allocated peak).

Held out: benchmarks/data/held_out_runs.json holds runs from sources the calibration never saw (NVIDIA
NeMo / Megatron-Core with Transformer Engine, fp8, on H100, B200 and GB200, dense and MoE, up to 64k
tokens; DeepSeek-V3 on 2048 H800, with MLA, first-k-dense MoE, MTP and DualPipe), each with its source
URL; their `layout` states what each stack ran with the planned-only knobs (docs/formulas.md section 11),
and their `uncertain` list says what was assumed. No shipped constant is fitted on them; `--held-out`
reports them with the constants as shipped (fitted on the calibration rows only), by source, precision,
MoE vs dense and sequence length; `--breakdown` prints each one's predicted time by part.

Headline (`--cv`): leave-one-source-out over the union of calibration and held-out rows (each source
predicted with constants refitted on all the other sources), by source, precision, MoE vs dense and
sequence length; then leave-one-stack-out (NeMo's three sources left out together) and the calibration
set's own leave-one-source-out.

Fresh (`--fresh`): benchmarks/data/fresh_runs.json holds runs published in tables that nobody looked at while
the model was developed (Megatron-Bridge 25.09/25.11 on H100/B200/GB200 with FP8-CS, MXFP8 and bf16, dense and
MoE: DeepSeek-V3, Qwen3-30B-A3B/235B-A22B; NeMo AutoModel FSDP2 + TE on H100; Megatron-MoE-ModelZoo Qwen3-235B),
collected after the model was frozen: a blind test with the constants as shipped, by source, precision, MoE vs
dense, sequence length and fp8 recipe, every row, and the rows the spec cannot express with the reason.

Usage: python benchmarks/plan_vs_published.py [--fit] [--cv] [--held-out] [--fresh] [--breakdown] [--rows] [--loss source|auto|chunked|full]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from specc.catalog import load_catalog  # noqa: E402
from specc.plan import timing  # noqa: E402
from specc.plan.estimate import Workload, estimate_layout  # noqa: E402
from specc.plan.layout import Layout  # noqa: E402
from specc.plan.memory import GIB, GPU_CONTEXT_GIB  # noqa: E402
from specc.plan.params import flops_per_token, hardware_flops_per_token, recomputed_share  # noqa: E402
from specc.spec import parallel_dims  # noqa: E402
from specc.spec.model import ModelSpec  # noqa: E402
from specc.spec.parallel import ParallelSpec  # noqa: E402

DATA = Path(__file__).resolve().parent / "data" / "published_runs.json"
HELD_OUT = Path(__file__).resolve().parent / "data" / "held_out_runs.json"
FRESH = Path(__file__).resolve().parent / "data" / "fresh_runs.json"
"""Published runs collected after the planner was frozen (Megatron-Bridge 25.09/25.11, NeMo AutoModel,
Megatron-MoE-ModelZoo): a blind test, evaluated with the constants as shipped (`--fresh`), never fitted."""
"""Published runs from sources outside the calibration (NeMo/Megatron-Core on H100, B200, GB200: fp8, MoE,
long context): never fitted, evaluated with the constants as they are (`--held-out`)."""

HARDWARE = {"A100-SXM4-80GB": "a100-80gb", "A100-SXM4-40GB": "a100-40gb", "H100-SXM5-80GB": "h100-sxm",
            "H100-96GB-HBM2e(500W)": "h100-sxm", "TPU-v5e": "tpu-v5e", "TPU-v4": "tpu-v4", "B200": "b200",
            "GB200": "gb200", "H800": "h800"}


def accelerator_for(hardware_type: str):
    accelerator = load_catalog()[HARDWARE[hardware_type]]
    if hardware_type.startswith("H100-96GB"):
        # torchtitan's Grand Teton H100: 96 GB HBM2e at 2.4 TB/s, 500 W; peak "between SXM and NVL"
        # (torchtitan benchmark notes): the SXM figure is kept, as torchtitan's own MFU does.
        # Its power cap is modelled as a GEMM ceiling scaled by the mid-point of those peaks, 912/989.
        extra = dict(accelerator.extra, achievable_matmul_fraction=accelerator.extra["achievable_matmul_fraction"] * 912 / 989)
        # capacity: 96 GiB of HBM2e with the share the 80 GB part keeps back (79.65 of 80 GiB reported): uncertain
        extra["memory_gib"] = 96 * accelerator.extra["memory_gib"] / 80
        accelerator = dataclasses.replace(accelerator, memory_gb=96, memory_bw_tbps=2.4, extra=extra)
    return accelerator


def source_of(row: dict) -> str:
    if row["group"] == "llmfoundry":
        return f"llmfoundry {row['hardware']['type'][:9]}"
    return row["group"]


STACKS = {"nemo": ("nemo_h100_24.07", "nemo_b200_25.02", "nemo_gb200_25.04")}
"""Sources that share one software stack (NeMo / Megatron-Core with Transformer Engine): the
leave-one-stack-out line of --cv leaves them out together."""


def stack_of(row: dict) -> str:
    for stack, groups in STACKS.items():
        if row["group"] in groups:
            return stack
    return source_of(row)


def model_of(row: dict) -> ModelSpec:
    m = row["model"]
    group = row["group"]
    gpt_like = group in ("megatron_sc21_a100", "korthikanti_a100", "llmfoundry")
    ffn_type = m["ffn_type"]
    activation = "swiglu" if ffn_type.startswith("swiglu") else ("relu" if ffn_type.startswith("relu") else "gelu")
    # MoE rows run dropless (Megatron-Core): no capacity padding, the planner's capacity factor 1
    moe = {**m["moe"], "capacity_factor": 1.0} if m.get("moe") else None
    return ModelSpec(
        num_layers=m["layers"], hidden_size=m["hidden"], num_heads=m["heads"], num_kv_heads=m["kv_heads"],
        head_dim=m.get("head_dim"), ffn_hidden_size=m["ffn_hidden"], activation=activation,
        norm=m.get("norm") or ("layernorm" if gpt_like else "rmsnorm"),
        position=m.get("position") or ("learned" if gpt_like else "rope"),
        vocab_size=m["vocab"], max_seq_len=m["seq_len"], tie_embeddings=gpt_like, moe=moe,
        mla=m.get("mla"), mtp_depth=m.get("mtp_depth") or 0,  # DeepSeek-V3 (planned only, docs/formulas.md section 9)
        attention_kernel=row["layout"].get("attention_kernel") or "auto",
        # Megatron 2021-22 stored the attention scores (fused softmax, no flash) and used dropout 0.1.
        attention="eager" if group in ("megatron_sc21_a100", "korthikanti_a100") else "flash",
        dropout=0.1 if group in ("megatron_sc21_a100", "korthikanti_a100") else 0.0)


def precision_of(text: str) -> str:
    text = text.lower()
    if "fp8" in text or "float8" in text:
        return "fp8"
    return "fp16" if "fp16" in text else "bf16"


def fp8_recipe_of(text: str) -> str:
    """The `parallel.fp8_recipe` a row's precision names: torchtitan names its torchao recipe
    ("float8_rowwise"; unnamed is tensorwise); Transformer Engine rows name delayed or current scaling, or MXFP8."""
    text = text.lower()
    for recipe in ("mxfp8", "rowwise", "delayed", "current"):
        if recipe in text:
            return recipe
    return "tensorwise"


LOSS = "source"
"""The `parallel.loss` the rows are planned with (`--loss`; module docstring)."""

FULL_LOGITS_SOURCES = ("torchtitan",)
"""Sources whose loss upcasts the whole logits (`--loss source` plans them with `full`)."""


def loss_of(row: dict) -> str:
    if LOSS != "source":
        return LOSS
    if row["group"] == "maxtext":
        return "auto"
    return "full" if row["group"] in FULL_LOGITS_SOURCES else "chunked"


def layout_of(row: dict) -> Layout | None:
    lay = row["layout"]
    if not lay.get("global_batch"):
        return None
    cp = lay.get("cp") or 1
    # FSDP is data parallelism: MaxText rows list dp = DCN replicas and fsdp = ICI shards separately.
    dp = row["hardware"]["count"] // (lay["tp"] * lay["pp"] * cp)
    fsdp = bool(lay.get("fsdp")) or lay.get("zero_stage") == 3
    shard = lay["fsdp"] if type(lay.get("fsdp")) is int else dp * cp  # `fsdp: true`: over all dp x cp ranks
    micro = lay.get("micro_batch") or 1  # SC21 does not publish micro-batch sizes: 1 assumed
    if row["group"] == "maxtext":  # per-device batch x devices = global batch, no accumulation
        micro = lay["global_batch"] // dp
    recompute = lay["recompute"]
    # torchtitan's "selective(op)" keeps every other matmul output: specc's `alternate_matmuls` policy.
    policy = "alternate_matmuls" if recompute == "selective(op)" else "matmuls"
    recompute = "selective" if recompute.startswith("selective") else recompute
    vpp = lay.get("vpp") or 1
    # Megatron's distributed optimizer (NeMo rows) is ZeRO-1; the calibration rows are planned as before
    zero_stage = 1 if lay.get("zero_stage") == 1 and not fsdp else 0
    return Layout(dp=dp, tp=lay["tp"], pp=lay["pp"], cp=cp, ep=lay.get("ep") or 1, vpp=vpp, zero_stage=zero_stage,
                  fsdp=fsdp, hsdp_replicas=max(1, dp * cp // shard) if fsdp else 1,
                  sp=bool(lay.get("sequence_parallel")) or (row["group"] == "korthikanti_a100" and recompute == "selective"),
                  micro_batch=micro, grad_accum=max(1, lay["global_batch"] // (dp * micro)), recompute=recompute,
                  selective_policy=policy, pp_schedule=lay.get("pp_schedule") or ("interleaved" if vpp > 1 else "1f1b"),
                  precision=precision_of(lay["precision"]), fp8_recipe=fp8_recipe_of(lay["precision"]),
                  # what the stack overlaps beyond specc's runtime (planned-only knobs; rows say when assumed):
                  # torchtitan's async TP is torch's micro-pipelined TP, the same decomposition as TE's userbuffers
                  tp_comm_overlap=bool(lay.get("tp_comm_overlap") or lay.get("async_tp")),
                  pp_comm_overlap=bool(lay.get("pp_comm_overlap")),
                  compile=bool(lay.get("torch_compile")),
                  grad_sync="every",  # FSDP1/composer and torchtitan reduce every micro-batch
                  loss=loss_of(row), stack=lay.get("stack") or "specc", grad_bytes=GRAD_BYTES.get(lay.get("grad_dtype")))


GRAD_BYTES = {"bf16": 2.0, "fp16": 2.0, "fp32": 4.0}
"""A row's `layout.grad_dtype` (Megatron main gradients) as bytes; absent: the stack's default."""


def measured_tokens_per_device(row: dict, model: ModelSpec) -> float | None:
    """Published throughput as tokens/s per device, through the source's own FLOP convention."""
    m, lay, hw = row["measured"], row["layout"], row["hardware"]
    seq = row["model"]["seq_len"]
    if m.get("tokens_per_sec_per_gpu"):
        return float(m["tokens_per_sec_per_gpu"])
    if m.get("step_time_s") and lay.get("global_batch"):
        return lay["global_batch"] * seq / m["step_time_s"] / hw["count"]
    L, h, V = model.num_layers, model.hidden_size, model.vocab_size
    if row["group"] == "megatron_sc21_a100" and m.get("tflops_per_gpu"):
        per_token = 96 * L * h * h * (1 + seq / (6 * h) + V / (16 * L * h))  # SC21 eq. (3), per token
        return m["tflops_per_gpu"] * 1e12 / per_token
    if row["group"] == "maxtext" and m.get("tflops_per_gpu"):
        f = flops_per_token(model, seq, causal=False)
        return m["tflops_per_gpu"] * 1e12 / (f.matmul + f.attention)
    return None


@dataclasses.dataclass(frozen=True)
class Prepared:
    """What evaluating a row needs that no fitted constant changes: the workload, the layout timed
    (loss `full`), the hardware, the hardware FLOPs, and the memory half of the result. The fit only
    re-runs `timing.step_time` on it (`evaluate_row`), which keeps --cv's many refits fast."""

    work: Workload
    layout: Layout
    hardware: object
    hardware_flops: float
    result: dict


_PREPARED: dict[tuple, Prepared | None] = {}


def prepare_row(row: dict) -> Prepared | None:
    key = (row["id"], row["group"], LOSS)
    if key not in _PREPARED:
        _PREPARED[key] = _prepare(row)
    return _PREPARED[key]


def _prepare(row: dict) -> Prepared | None:
    model = model_of(row)
    layout = layout_of(row)
    measured = measured_tokens_per_device(row, model)
    if layout is None or measured is None:
        return None
    accelerator = accelerator_for(row["hardware"]["type"])
    work = Workload(model=model, seq_len=row["model"]["seq_len"], batch_sequences=row["layout"]["global_batch"],
                    accelerator=accelerator, devices=row["hardware"]["count"],
                    devices_per_node=accelerator.devices_per_node)
    estimate = estimate_layout(work, layout)
    # none of these stacks recomputes the head's forward as specc's chunked loss does (module docstring)
    timed_layout = dataclasses.replace(layout, loss="full")
    hardware = work.hardware(layout.precision)
    hw_flops = hardware_flops_per_token(work.flops, timed_layout.recompute, timed_layout.selective_policy,
                                        model.attention == "eager", False,
                                        recomputed_share(model.num_layers, layout.recompute, layout.recompute_every))
    memory = estimate.memory
    result = {"id": row["id"], "source": source_of(row), "stack": stack_of(row), "measured": measured,
              "fits": memory.fits, "memory_ratio": memory.total_gib / memory.capacity_gib,
              "memory_phase": f"{memory.stage}/{memory.phase}",
              "memory_parts": {name: getattr(memory, name) / GIB for name in MEMORY_PARTS},
              "precision": layout.precision, "moe": model.moe is not None, "seq_len": row["model"]["seq_len"]}
    peak = row["measured"].get("peak_memory_gib")
    if peak:
        # torch's max-reserved excludes the CUDA context the plan adds.
        predicted_gib = estimate.memory.total / GIB - (0 if work.accelerator.kind == "tpu" else GPU_CONTEXT_GIB)
        result.update(memory_measured=peak, memory_predicted=predicted_gib, memory_error=predicted_gib / peak - 1)
    return Prepared(work=work, layout=timed_layout, hardware=hardware, hardware_flops=hw_flops, result=result)


def row_step_time(row: dict) -> timing.StepTime | None:
    """The planner's step time for a row with the constants as they are now."""
    prepared = prepare_row(row)
    if prepared is None:
        return None
    work = prepared.work
    return timing.step_time(work.model, work.counts, work.flops, prepared.hardware_flops, prepared.layout,
                            prepared.hardware, work.seq_len, work.tokens_per_step)


def evaluate_row(row: dict) -> dict | None:
    time = row_step_time(row)
    if time is None:
        return None
    result = dict(prepare_row(row).result)
    predicted = time.tokens_per_s / prepared_devices(row)
    result.update(predicted=predicted, error=predicted / result["measured"] - 1)
    return result


def prepared_devices(row: dict) -> int:
    return prepare_row(row).layout.devices


MEMORY_PARTS = ("params", "grads", "optimizer", "activations", "logits", "fsdp_buffers", "reserve")
"""The plan's memory breakdown, as printed per row (`MemoryBreakdown` fields, GiB)."""


def report_memory(results: list[dict], title: str, show_rows: bool) -> None:
    """Memory against capacity, by source: runs predicted to fit (every one ran), the largest
    predicted / capacity ratio (the "does not fit by more than 10%" criterion is a ratio <= 1.10), each
    run predicted not to fit with its breakdown; then the error against published allocator peaks, by
    source (`--rows`: every run's ratio and breakdown)."""
    print(f"{title}\n  {'source':28} {'fit':>9} {'max pred/cap':>12} {'median':>7}")
    for source in sorted({r["source"] for r in results}):
        chosen = [r for r in results if r["source"] == source]
        ratios = [r["memory_ratio"] for r in chosen]
        print(f"  {source:28} {sum(r['fits'] for r in chosen):4d} of {len(chosen):<3d} {max(ratios):12.2f} "
              f"{statistics.median(ratios):7.2f}")
    over = sum(r["memory_ratio"] > 1.10 for r in results)
    print(f"  {'all rows':28} {sum(r['fits'] for r in results):4d} of {len(results):<3d} "
          f"{max(r['memory_ratio'] for r in results):12.2f}; predicted not to fit by more than 10%: {over}")
    shown = results if show_rows else [r for r in results if not r["fits"]]
    if shown:
        print("  " + ("every run" if show_rows else "predicted not to fit") + " (GiB: " + ", ".join(MEMORY_PARTS) + "):")
    for r in shown:
        parts = " ".join(f"{r['memory_parts'][name]:6.1f}" for name in MEMORY_PARTS)
        print(f"    {r['id']:52} {r['memory_ratio']:5.2f} x capacity  {parts}  ({r['memory_phase']})")
    memory = [r for r in results if "memory_error" in r]
    if not memory:
        return
    print("  peak memory vs published allocator peaks (|error| %, signed median; not fitted):")
    _print_sources(memory, "all", key="memory_error")
    for r in memory:
        print(f"    {r['id']:52} measured {r['memory_measured']:6.1f} GiB predicted {r['memory_predicted']:6.1f} GiB "
              f"({r['memory_error']:+.1%})")


def load_rows() -> list[dict]:
    return json.loads(DATA.read_text())


def load_held_out() -> list[dict]:
    return json.loads(HELD_OUT.read_text())


def _seq_bucket(seq: int) -> str:
    return "seq <= 4k" if seq <= 4096 else ("seq 8k" if seq <= 8192 else "seq > 8k (long context)")


SLICES = {"source": lambda r: r["source"], "precision": lambda r: r["precision"],
          "moe/dense": lambda r: "MoE" if r["moe"] else "dense", "sequence": lambda r: _seq_bucket(r["seq_len"])}
"""How `report_slices` cuts the rows: by source, compute precision, MoE vs dense and sequence length."""


def report_slices(results: list[dict], title: str, extra: tuple | None = None) -> None:
    """|error| % by source, precision, MoE vs dense and sequence length (and `extra`, a (name, key)
    slice), each with the share of rows within 10% and 20% and the median signed error (bias: negative
    = predicted slower than published), then the pooled rows."""
    print(title)
    slices = dict(SLICES, **({extra[0]: extra[1]} if extra else {}))
    for name, key in slices.items():
        print(f"  by {name}:")
        for value in sorted({key(r) for r in results}):
            chosen = [r for r in results if key(r) == value]
            med, mean, p90 = _summary([r["error"] for r in chosen])
            w10, w20 = _within(chosen)
            bias = statistics.median(r["error"] for r in chosen) * 100
            print(f"    {value:30} n={len(chosen):3d} median {med:5.1f} p90 {p90:5.1f} within 10% {w10:4.0%} "
                  f"20% {w20:4.0%} bias {bias:+6.1f}")
    med, mean, p90 = _summary([r["error"] for r in results])
    w10, w20 = _within(results)
    bias = statistics.median(r["error"] for r in results) * 100
    print(f"  all {len(results)} rows: median {med:.1f} mean {mean:.1f} p90 {p90:.1f}; within 10%: {w10:.0%}, "
          f"within 20%: {w20:.0%}; bias {bias:+.1f}; predicted to fit in memory: {sum(r['fits'] for r in results)} "
          f"of {len(results)}")


def _within(results: list[dict]) -> tuple[float, float]:
    """Shares of rows with |error| <= 10% and <= 20%."""
    return tuple(sum(abs(r["error"]) <= limit for r in results) / len(results) for limit in (0.10, 0.20))


def evaluate_all(rows: list[dict]) -> list[dict]:
    return [r for r in (evaluate_row(row) for row in rows) if r is not None]


def _summary(errors: list[float]) -> tuple[float, float, float]:
    absolute = sorted(abs(e) * 100 for e in errors)
    p90 = absolute[min(len(absolute) - 1, int(round(0.9 * (len(absolute) - 1))))]
    return statistics.median(absolute), statistics.fmean(absolute), p90


def _print_sources(results: list[dict], total_label: str, key: str = "error") -> None:
    """One line per source (median, mean, p90 of |`key`| %, median signed `key`), then the pooled rows."""
    print(f"{'source':28} {'n':>4} {'median':>7} {'mean':>7} {'p90':>7} {'bias':>7}")
    for source in sorted({r["source"] for r in results}):
        chosen = [r for r in results if r["source"] == source]
        med, mean, p90 = _summary([r[key] for r in chosen])
        bias = statistics.median(r[key] for r in chosen) * 100
        print(f"{source:28} {len(chosen):4d} {med:7.1f} {mean:7.1f} {p90:7.1f} {bias:+7.1f}")
    med, mean, p90 = _summary([r[key] for r in results])
    print(f"{total_label:28} {len(results):4d} {med:7.1f} {mean:7.1f} {p90:7.1f}")


def report(results: list[dict], show_rows: bool) -> None:
    print("throughput: predicted vs published tokens/s per device (|error| %). The ratio equals the TFLOP/s or MFU\n"
          "ratio in each source's own convention (same FLOPs on both sides); `specc plan` itself reports MFU as\n"
          "model FLOPs with causal attention, no recompute, over the dense peak of the compute precision.\n"
          "In-sample: the constants were fitted on all of these sources (see --cv for leave-one-source-out).\n")
    _print_sources(results, "all rows (in-sample)")
    print("\nworst rows:")
    for r in sorted(results, key=lambda r: -abs(r["error"]))[:8]:
        print(f"  {r['id']:60} measured {r['measured']:9.1f} predicted {r['predicted']:9.1f} ({r['error']:+.0%})")
    print()
    report_memory(results, f"memory: predicted per device vs capacity (every run ran), loss `{LOSS}`:", show_rows)
    if show_rows:
        for r in results:
            print(f"{r['id']:64} {r['measured']:10.1f} {r['predicted']:10.1f} {r['error']:+.1%}")


FITTED = {
    "MATMUL_EFFICIENCY.gpu": [0.75, 0.8, 0.85, 0.9, 0.95, 1.0],
    "MATMUL_EFFICIENCY.tpu": [0.75, 0.8, 0.85, 0.9, 0.95, 1.0],
    "GEMM_HALF_DIM": [32.0, 64.0, 128.0, 192.0, 256.0, 384.0, 512.0],
    "GEMM_HALF_TOKENS": [0.0, 128.0, 256.0, 512.0],
    "ATTENTION_EFFICIENCY": [0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0],
    "ATTENTION_HALF_SEQ": [0.0, 128.0, 256.0, 384.0, 512.0, 768.0, 1024.0, 2048.0],
    "ELEMENTWISE_PASSES": [2.0, 4.0, 6.0, 8.0, 10.0, 12.0],
    "RING_STEP_LATENCY_S": [0.0, 2e-6, 4e-6, 8e-6, 16e-6, 32e-6],
    "OVERLAP_COST": [0.0, 0.05, 0.1, 0.2, 0.3],
}
"""timing.py constants the fit may move, with their candidate values ("NAME.key" for a dict entry).
Everything else in timing.py (and the catalog) is a prior: stated with its source, never fitted."""


def _get(name: str) -> float:
    attr, _, key = name.partition(".")
    return getattr(timing, attr)[key] if key else getattr(timing, attr)


def _set(name: str, value: float) -> None:
    attr, _, key = name.partition(".")
    if key:
        getattr(timing, attr)[key] = value
    else:
        setattr(timing, attr, value)


def _score(results: list[dict]) -> float:
    """Each source weighs the same (llm-foundry's 119 rows must not drown MaxText's 30):
    mean over sources of median + p90/4 of |error| %."""
    scores = []
    for source in {r["source"] for r in results}:
        med, _, p90 = _summary([r["error"] for r in results if r["source"] == source])
        scores.append(med + 0.25 * p90)
    return statistics.fmean(scores)


UNIDENTIFIED = {"MATMUL_EFFICIENCY.tpu": "MATMUL_EFFICIENCY.gpu"}
"""A constant no fitted row responds to (the TPU efficiency in a fold without MaxText) takes the value of
its GPU counterpart: the prior a new accelerator kind would get, not a value learnt from the held-out rows."""


def fit(rows: list[dict], rounds: int = 6, starts: tuple[float, ...] = (0.25, 0.5, 0.75)) -> dict:
    """Coordinate descent over FITTED: each constant in turn takes the grid value that minimises `_score`
    on `rows`, until a round changes nothing; run from each start (every constant at that fraction of
    its grid, so the result depends on `rows` only), keeping the best. Leaves the constants set and
    returns them."""
    best = None
    for start in starts:
        for name, grid in FITTED.items():
            _set(name, grid[int(start * (len(grid) - 1) + 0.5)])
        score, responsive = _descend(rows, rounds)
        if best is None or score < best[0]:
            best = (score, {name: _get(name) for name in FITTED}, responsive)
    for name, value in best[1].items():
        _set(name, value)
    for name, prior in UNIDENTIFIED.items():
        if name not in best[2]:
            _set(name, _get(prior))
    return {name: _get(name) for name in FITTED}


def _descend(rows: list[dict], rounds: int) -> tuple[float, set]:
    """Coordinate descent from the current constants; returns the score and the constants it responds to."""
    best = _score(evaluate_all(rows))
    responsive = set()
    for _ in range(rounds):
        changed = False
        for name, grid in FITTED.items():
            current = _get(name)
            for value in grid:
                _set(name, value)
                score = _score(evaluate_all(rows))
                if abs(score - best) > 1e-9:
                    responsive.add(name)
                if score < best - 1e-9:
                    best, current, changed = score, value, True
            _set(name, current)
        if not changed:
            break
    return best, responsive


def cross_validate(rows: list[dict], fold_of=source_of, quiet: bool = False, only: list[dict] | None = None) -> list[dict]:
    """Leave one fold out (a source by default): refit on the other folds, evaluate on it, restore the
    constants; returns every row as predicted by the fit that did not see it (with `only`, just the
    folds of those rows).

    Only FITTED constants are refitted. The TPU priors in timing.py (TPU_MATMUL_FRACTION, no GEMM width
    loss, TPU_TP_EXPOSED) were chosen with the MaxText rows in view, so the MaxText fold flatters a
    little; the fp8 and latency priors saw every source."""
    saved = {name: _get(name) for name in FITTED}
    held_out = []
    for fold in sorted({fold_of(row) for row in (rows if only is None else only)}):
        train = [row for row in rows if fold_of(row) != fold]
        constants = fit(train)
        held_out += evaluate_all([row for row in rows if fold_of(row) == fold])
        for name, value in saved.items():
            _set(name, value)
        moved = {name: value for name, value in constants.items() if value != saved[name]}
        if not quiet:
            print(f"  fold {fold}: refitted on the others, moved {moved or 'nothing'}")
    return held_out


def report_cross_validation(calibration: list[dict], held_out: list[dict]) -> None:
    """The --cv report. Headline: leave-one-source-out over the union of the calibration and held-out
    rows (each source predicted with constants fitted on all the other sources), by source, precision,
    MoE vs dense and sequence length. Then leave-one-stack-out over the union (NeMo's three sources
    out together: no fit sees the stack it predicts), and the calibration set's own leave-one-source-out
    (the figure quoted before held-out rows existed). The never-fitted figure is --held-out's."""
    union = calibration + held_out
    print("leave-one-source-out over the union of calibration and held-out rows (each source predicted with "
          "constants fitted on the other sources; |error| %):")
    loso = cross_validate(union)
    report_slices(loso, "\nHEADLINE, leave-one-source-out over the union:")
    print("\nleave-one-stack-out over the union (a stack's sources left out together; the other rows as above):")
    stacked = [row for row in union if stack_of(row) != source_of(row)]
    stack = cross_validate(union, lambda row: stack_of(row) if row in stacked else "(others: fitted with all stacks)",
                           quiet=True, only=stacked)
    left_out = {r["id"] for r in stack}
    report_slices([r for r in loso if r["id"] not in left_out] + stack, "leave-one-stack-out over the union:",
                  ("stack", lambda r: r["stack"]))
    print("\ncalibration set alone, leave-one-source-out:")
    _print_sources(cross_validate(calibration, quiet=True), "all rows (held out)")


def report_breakdown(rows: list[dict]) -> None:
    """Each row's predicted step as fractions of its published step time: compute by part (matmul,
    attention, elementwise, fp8 casts, MoE permutation), bubble and the exposed communication."""
    print("time breakdown, as fractions of the published step time (sum = predicted / published):")
    captured = {}
    original = timing.compute_parts

    def capture(*args, **kwargs):
        captured["parts"] = original(*args, **kwargs)
        return captured["parts"]

    timing.compute_parts = capture
    try:
        for row in rows:
            time = row_step_time(row)
            if time is None:
                continue
            published = time.tokens_per_step / prepared_devices(row) / prepare_row(row).result["measured"]
            parts = {**captured["parts"], **{k: v for k, v in time.breakdown().items() if k != "compute"}}
            scale = time.compute / sum(captured["parts"].values())  # a cluster profile's compute_scale
            text = " ".join(f"{k} {v * (scale if k in captured['parts'] else 1) / published:.2f}"
                            for k, v in parts.items() if v > 1e-4 * published)
            print(f"  {row['id'][:44]:44} {time.step_s / published:5.2f}: {text}")
    finally:
        timing.compute_parts = original


def spec_layout_problems(row: dict) -> list[str]:
    """What the spec's own layout rules (specc/spec/parallel_dims.py) reject in a row's layout: tp over
    heads and FFN, pipeline chunks, experts over ep, ep inside the data shard, whole CP chunks, the
    batch over dp x micro-batch. `estimate_layout` plans any Layout it is given, so a fresh row is
    checked first: a layout the spec cannot write is not comparable, whatever the planner would say."""
    model, layout = model_of(row), layout_of(row)
    parallel = ParallelSpec(tp=layout.tp, pp=layout.pp, cp=layout.cp, ep=layout.ep, vpp=layout.vpp, dp=layout.dp,
                            fsdp=layout.fsdp, hsdp_replicas=layout.hsdp_replicas)
    problems = (parallel_dims.tp_problems(model, layout.tp) + parallel_dims.pipeline_problems(model, layout.pp, layout.vpp)
                + parallel_dims.expert_problems(model, layout.ep) + parallel_dims.expert_shard_problems(parallel, layout.dp)
                + parallel_dims.sequence_problems(row["model"]["seq_len"], layout.cp, True)
                + parallel_dims.batch_problems(row["layout"]["global_batch"], layout.dp, layout.micro_batch))
    return [problem.message for problem in problems if problem.severity == "error"]


def fresh_results(rows: list[dict]) -> tuple[list[dict], list[tuple[str, str]]]:
    """Evaluate the fresh rows with the constants as shipped: (results, not comparable as (id, reason)).
    A row is not comparable when its file says so (the spec lacks what it ran) or when planning it
    fails; the failure is reported with its message, never bent into a plannable layout."""
    results, skipped = [], []
    for row in rows:
        if row.get("not_comparable"):
            skipped.append((row["id"], row["not_comparable"]))
            continue
        problems = spec_layout_problems(row)
        if problems:
            skipped.append((row["id"], "the spec rejects the layout: " + "; ".join(problems)))
            continue
        try:
            result = evaluate_row(row)
        except (ValueError, KeyError, ZeroDivisionError) as error:
            skipped.append((row["id"], f"planning failed: {type(error).__name__}: {error}"))
            continue
        if result is None:
            skipped.append((row["id"], "no global batch or no measured throughput"))
        else:
            results.append(result)
    return results, skipped


def report_fresh(rows: list[dict]) -> None:
    """The --fresh report: rows published after the model was frozen, by source, precision, MoE vs
    dense and sequence length (and fp8 recipe), then every row, memory against capacity, and the rows
    not comparable."""
    results, skipped = fresh_results(rows)
    recipe = {row["id"]: fp8_recipe_of(row["layout"]["precision"]) if precision_of(row["layout"]["precision"]) == "fp8"
              else "-" for row in rows}
    report_slices(results, f"fresh rows, collected after the model was frozen ({len(results)} comparable of {len(rows)}; "
                           "constants as shipped, no refit):", ("fp8 recipe", lambda r: recipe[r["id"]]))
    for r in results:
        print(f"  {r['id']:52} measured {r['measured']:8.1f} predicted {r['predicted']:8.1f} ({r['error']:+.0%})"
              f"{'' if r['fits'] else '  predicted NOT to fit'}")
    print()
    report_memory(results, "fresh memory: predicted per device vs capacity (every run ran):", False)
    print(f"\nnot comparable ({len(skipped)}):")
    for row_id, reason in skipped:
        print(f"  {row_id}: {reason}")


def load_fresh() -> list[dict]:
    return json.loads(FRESH.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fit", action="store_true", help="refit the FITTED constants on all rows first, print them")
    parser.add_argument("--cv", action="store_true",
                        help="also report leave-one-source-out over calibration + held-out rows (headline), "
                             "leave-one-stack-out, and the calibration set's own leave-one-source-out")
    parser.add_argument("--rows", action="store_true", help="print every row")
    parser.add_argument("--held-out", action="store_true",
                        help="also evaluate benchmarks/data/held_out_runs.json (never fitted), by slice and row")
    parser.add_argument("--fresh", action="store_true",
                        help="also evaluate benchmarks/data/fresh_runs.json (collected after the model was frozen, never "
                             "fitted), by slice and row, and list the rows the spec cannot express")
    parser.add_argument("--breakdown", action="store_true", help="print each held-out row's predicted time by part")
    parser.add_argument("--loss", choices=("source", "auto", "chunked", "full"), default="source",
                        help="the parallel.loss rows are planned with (default: each source's own, see above)")
    args = parser.parse_args()
    global LOSS
    LOSS = args.loss
    rows = load_rows()
    if args.fit:
        print("fitted on all calibration sources:", fit(rows), "\n")
    results = evaluate_all(rows)
    print(f"{len(results)} of {len(rows)} published runs comparable (others lack a global batch)\n")
    report(results, args.rows)
    if args.cv:
        print()
        report_cross_validation(rows, load_held_out())
    if args.held_out:
        held = evaluate_all(load_held_out())
        print()
        report_slices(held, f"held-out sources, never fitted ({len(held)} runs, constants as fitted on the calibration rows only):")
        for r in held:
            print(f"  {r['id']:48} measured {r['measured']:8.1f} predicted {r['predicted']:8.1f} ({r['error']:+.0%})"
                  f"{'' if r['fits'] else '  predicted NOT to fit'}")
        print()
        report_memory(held, "held-out memory: predicted per device vs capacity (every run ran):", args.rows)
    if args.fresh:
        print()
        report_fresh(load_fresh())
    if args.breakdown:
        print()
        report_breakdown(load_held_out())


if __name__ == "__main__":
    main()
