"""Rules about the architecture and its tokenizer."""

from __future__ import annotations

from collections.abc import Iterator

from specc.catalog import load_catalog
from specc.diagnostics.rules.base import Finding, divisors, nearest_multiple
from specc.spec.capabilities import capabilities_for
from specc.spec.root import Spec


def heads_divisible_by_kv_heads(spec: Spec) -> Iterator[Finding]:
    """Query heads are shared evenly among key/value heads (GQA groups).

    passes: `num_heads: 32, num_kv_heads: 8`    fails: `num_heads: 32, num_kv_heads: 6`
    """
    model = spec.model
    if model.num_heads % model.kv_heads:
        fitting = [d for d in divisors(model.num_heads)]
        yield Finding(("model", "num_kv_heads"),
                      f"num_heads ({model.num_heads}) is not divisible by num_kv_heads ({model.kv_heads}): "
                      f"{model.num_heads} / {model.kv_heads} = {model.num_heads / model.kv_heads:.3g}",
                      f"num_kv_heads must divide {model.num_heads}: one of {fitting}")
    if model.kv_heads > model.num_heads:
        yield Finding(("model", "num_kv_heads"),
                      f"num_kv_heads ({model.kv_heads}) exceeds num_heads ({model.num_heads})",
                      "use num_kv_heads = num_heads for multi-head attention")


def hidden_divisible_by_heads(spec: Spec) -> Iterator[Finding]:
    """Without an explicit head_dim, each head gets hidden_size / num_heads channels.

    passes: `hidden_size: 4096, num_heads: 32`   fails: `hidden_size: 4096, num_heads: 48`
    """
    model = spec.model
    if model.head_dim is None and model.hidden_size % model.num_heads:
        fitting = [d for d in divisors(model.hidden_size) if d <= 4 * model.num_heads][-4:]
        yield Finding(("model", "num_heads"),
                      f"hidden_size ({model.hidden_size}) is not divisible by num_heads ({model.num_heads}): "
                      f"{model.hidden_size} / {model.num_heads} = {model.hidden_size / model.num_heads:.4g}",
                      f"use num_heads in {fitting}, or set model.head_dim explicitly")


def positions_cover_sequence(spec: Spec) -> Iterator[Finding]:
    """Learned and sinusoidal position tables and the RoPE cos/sin cache have max_seq_len rows;
    training longer overflows them (the runtime fails at the first step). ALiBi has no table and
    extrapolates, so a longer training sequence there is only a warning.

    passes: `position: rope, max_seq_len: 2048` with `schedule.seq_len: 2048`
    fails:  `position: rope, max_seq_len: 1024` with `schedule.seq_len: 2048`
    """
    model, seq_len = spec.model, spec.schedule.seq_len
    if seq_len > model.max_seq_len:
        severity = "warning" if model.position == "alibi" else "error"
        yield Finding(("schedule", "seq_len"),
                      f"schedule.seq_len ({seq_len}) exceeds model.max_seq_len ({model.max_seq_len})"
                      + (f" for {model.position} positions" if severity == "error" else ""),
                      f"raise model.max_seq_len to at least {seq_len} or lower schedule.seq_len",
                      severity)


def tokenizer_fits_vocab(spec: Spec) -> Iterator[Finding]:
    """Token ids must index the embedding: tokenizer vocab <= model vocab; model vocab is
    best a multiple of 128 x tp (Megatron's `make-vocab-size-divisible-by`).

    passes: `tokenizer.vocab_size: 32000, model.vocab_size: 32000`
    fails:  `tokenizer.vocab_size: 50257, model.vocab_size: 32000`
    """
    tokens, rows = spec.tokenizer.vocab_size, spec.model.vocab_size
    if spec.tokenizer.path is None and tokens > rows:
        yield Finding(("tokenizer", "vocab_size"),
                      f"tokenizer.vocab_size ({tokens}) exceeds model.vocab_size ({rows}): ids {rows}..{tokens - 1} have no embedding",
                      f"set model.vocab_size to at least {tokens} (e.g. {nearest_multiple(tokens, 128)})")
    tp = spec.parallel.tp if not isinstance(spec.parallel, str) else 1
    step = 128 * tp
    if rows % step:
        yield Finding(("model", "vocab_size"),
                      f"model.vocab_size ({rows}) is not a multiple of 128 x tp = {step}; matmuls and vocab sharding run slower",
                      f"pad it to {nearest_multiple(rows, step)}", "warning")


def byte_bpe_has_room(spec: Spec) -> Iterator[Finding]:
    """A byte-level BPE needs the 256 byte tokens plus its special tokens plus merges.

    passes: `vocab_size: 2048, special_tokens: [<|endoftext|>]`
    fails:  `vocab_size: 257, special_tokens: [<|endoftext|>, <|pad|>]`
    """
    tokenizer = spec.tokenizer
    floor = 256 + len(tokenizer.special_tokens)
    if tokenizer.path is None and tokenizer.vocab_size <= floor:
        yield Finding(("tokenizer", "vocab_size"),
                      f"vocab_size ({tokenizer.vocab_size}) leaves no room for merges: 256 bytes + "
                      f"{len(tokenizer.special_tokens)} special tokens = {floor}",
                      f"use at least {floor + 1}; real tokenizers use 32k-256k")
    duplicates = sorted({t for t in tokenizer.special_tokens if tokenizer.special_tokens.count(t) > 1})
    if duplicates:
        yield Finding(("tokenizer", "special_tokens"), f"special tokens listed twice: {', '.join(duplicates)}")
    if not tokenizer.special_tokens:
        yield Finding(("tokenizer", "special_tokens"), "no special tokens: documents need an end-of-text token",
                      "add `<|endoftext|>` as the first special token")


def moe_routing_is_possible(spec: Spec) -> Iterator[Finding]:
    """Each token picks top_k distinct experts, so top_k <= num_experts.

    passes: `num_experts: 8, top_k: 2`    fails: `num_experts: 8, top_k: 9`
    """
    moe = spec.model.moe
    if moe and moe.top_k > moe.num_experts:
        yield Finding(("model", "moe", "top_k"),
                      f"top_k ({moe.top_k}) exceeds num_experts ({moe.num_experts})",
                      f"use top_k between 1 and {moe.num_experts}")
    if moe and moe.layer_frequency > spec.model.num_layers:
        yield Finding(("model", "moe", "layer_frequency"),
                      f"layer_frequency ({moe.layer_frequency}) exceeds num_layers ({spec.model.num_layers}): no layer would be MoE")


def sliding_window_within_context(spec: Spec) -> Iterator[Finding]:
    """A sliding window at least as long as the sequence is plain causal attention.

    passes: `sliding_window: 4096, max_seq_len: 32768`   fails: `sliding_window: 65536, max_seq_len: 32768`
    """
    model = spec.model
    if model.sliding_window and model.sliding_window >= model.max_seq_len:
        yield Finding(("model", "sliding_window"),
                      f"sliding_window ({model.sliding_window}) is not shorter than max_seq_len ({model.max_seq_len}); it has no effect",
                      "remove it or make it shorter", "warning")


def attention_kernel_runs_on_target(spec: Spec) -> Iterator[Finding]:
    """`model.attention_kernel` must be one specc's runtime can pin SDPA to on the target
    (`Capabilities.attention_kernels`): flash2 and cudnn on CUDA GPUs; flash3 nowhere (planned only).

    passes: `attention_kernel: cudnn` on h100-sxm      fails: `attention_kernel: flash3`, or `cudnn` on cpu
    """
    kernel = spec.model.attention_kernel
    accelerator = load_catalog().get(spec.cluster.accelerator)
    if kernel == "auto" or accelerator is None:
        return
    capabilities = capabilities_for(accelerator)
    if kernel not in capabilities.attention_kernels:
        runs = " or ".join(capabilities.attention_kernels) or "only auto"
        why = ("torch's FlashAttention-3 needs the flash-attn-3 kernels, which specc does not install"
               if kernel == "flash3" else f"specc's {capabilities.runtime} runtime on {accelerator.name} has no {kernel} backend")
        yield Finding(("model", "attention_kernel"),
                      f"attention_kernel: {kernel} cannot run here: {why}",
                      f"use attention_kernel: auto (FlashAttention-2 on GPUs); this target runs {runs}")


def attention_kernel_needs_sdpa(spec: Spec) -> Iterator[Finding]:
    """A kernel choice pins SDPA's backend; `attention: eager` does not call SDPA and `attention: flash`
    already pins FlashAttention-2, so another kernel there would be ignored.

    passes: `attention: sdpa, attention_kernel: cudnn`      fails: `attention: eager, attention_kernel: cudnn`
    """
    model = spec.model
    if model.attention_kernel == "auto" or model.attention == "sdpa":
        return
    if model.attention == "flash" and model.attention_kernel == "flash2":
        return
    yield Finding(("model", "attention_kernel"),
                  f"attention_kernel: {model.attention_kernel} has no effect with attention: {model.attention}",
                  "set attention: sdpa to choose the kernel, or remove attention_kernel")


def attention_kernel_is_pinned(spec: Spec) -> Iterator[Finding]:
    """A named `attention_kernel` must be one the runtime really pins: where it passes SDPA a mask (ALiBi,
    a sliding window, context parallelism) it leaves the kernel to SDPA (`Capabilities.
    attention_kernel_under_masks`), so the kernel asked for would not run (and the plan, which charges
    the named kernel, would be wrong).

    passes: `attention_kernel: cudnn, parallel: {cp: 1}`      fails: `attention_kernel: cudnn, parallel: {cp: 2}`
    """
    model = spec.model
    accelerator = load_catalog().get(spec.cluster.accelerator)
    if model.attention_kernel == "auto" or accelerator is None:
        return
    capabilities = capabilities_for(accelerator)
    if model.attention_kernel not in capabilities.attention_kernels or capabilities.attention_kernel_under_masks:
        return  # R250 reports a kernel the target lacks
    parallel = None if isinstance(spec.parallel, str) else spec.parallel
    masks = [why for why, used in (("position: alibi", model.position == "alibi"),
                                   (f"sliding_window: {model.sliding_window}", model.sliding_window is not None),
                                   (f"parallel.cp: {parallel.cp if parallel else 1}", parallel is not None and parallel.cp > 1))
             if used]
    if masks:
        yield Finding(("model", "attention_kernel"),
                      f"attention_kernel: {model.attention_kernel} would not run: with {', '.join(masks)} specc's "
                      f"{capabilities.runtime} runtime passes SDPA a mask and SDPA chooses the kernel",
                      "use attention_kernel: auto here")
