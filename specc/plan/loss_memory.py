"""The loss's memory on the last pipeline stage: the logits' working set as `parallel.loss` runs it
(full, vocab-parallel, chunked, XLA-fused, Megatron's cross-entropy) and the logits' gradient.

Kept apart from `specc.plan.memory`, which adds these terms to the stage's peak; every constant
cites the measurement or code it comes from.
"""

from __future__ import annotations

from specc.plan.layout import Layout, compute_element_bytes
from specc.spec import parallel_dims as dims
from specc.spec.capabilities import TORCH_LOSSES, resolve_loss
from specc.spec.model import ModelSpec

XLA_LOGIT_BYTES = 8.0
"""Bytes per logit XLA keeps at the loss (TPU): the 16-bit logits, the fp32 log-softmax and the 16-bit
gradient; the fp32 copy and fp32 gradient of the eager path fuse away. Reasoned from the fusion, then
checked against libtpu's compiled peaks (benchmarks/tpu_memory_truth.py --stored)."""


FULL_LOGIT_BYTES = 12.0
"""Bytes per logit of the full loss as specc's loop runs it, `cross_entropy(logits.float())` with no
reference left to the logits (`next_token_loss`): during its backward the fp32 log-softmax kept for
backward, the NLL's fp32 gradient and log-softmax's fp32 gradient (4 + 4 + 4), in mixed precision and
fp32 training alike (FSDPMemTracker on specc's runtime, benchmarks/plan_vs_tracker.py: bf16 configs
within 1.5%; 14 B while the loop still held the 16-bit logits through backward)."""

PIPELINE_HELD_LOGITS = True
"""torch's pipeline schedules keep the last stage's outputs (`PipelineStage.output_chunks`) until the
step ends, so under pp > 1 the logits themselves (2 or 4 B each) stay beside FULL_LOGIT_BYTES
(reasoned from torch.distributed.pipelining, not traced)."""

LOSS_PARALLEL_LOGIT_BYTES = 16.0
"""Bytes per local logit under torch's `loss_parallel` (tensor parallelism, untied head): the fp32 copy
of the logits kept (4), and in backward its three fp32 temporaries (zeros, exp, their sum: 12),
measured with FSDPMemTracker on real tensors (tp 2 on a fake group, vocab 8k vs 16k differenced; fake
tensors over-count them). It was 18 while the loop also held the 16-bit logits."""


MEGATRON_LOGIT_BYTES = 6.0
"""Bytes per local logit of Megatron-Core's vocab-parallel cross-entropy (`stack: megatron`,
megatron/core/tensor_parallel/cross_entropy.py): it upcasts the 16-bit logits to fp32 and turns that copy
in place into the softmax it saves for backward (4 B beside the 16-bit logits, 2 B, in forward); backward
rewrites the saved softmax in place into the fp32 gradient, cast to 16 bits for the output layer's
matmuls (4 + 2). Reasoned from the code, not measured; the fused cross-entropy
(`cross_entropy_loss_fusion`) keeps no more."""


def loss_implementation(layout: Layout, xla: bool = False) -> str:
    """`parallel.loss` as the runtime runs it (`specc.spec.capabilities`): under XLA the full logits,
    which its compiler fuses; on specc's torch runtime `auto` is `chunked`."""
    return resolve_loss(layout.loss, ("full",) if xla else TORCH_LOSSES)


def logits_memory(model: ModelSpec, layout: Layout, seq_len: int, xla: bool = False) -> float:
    """The loss's working set on the last stage, as `parallel.loss` runs it: `chunked_loss_memory`, else
    the full logits below.

    Full logits, vocab-parallel /tp (Megatron; torchtitan's and specc's `loss_parallel`); a tied head is
    replicated over tp in specc's runtime, so its logits are whole. FULL_LOGIT_BYTES per logit without
    tensor parallelism, LOSS_PARALLEL_LOGIT_BYTES per local logit under `loss_parallel`, plus the logits
    themselves under pp (PIPELINE_HELD_LOGITS); under XLA, XLA_LOGIT_BYTES. Megatron's estimate
    4sbh(1 + V/h) keeps one fp32 copy (docs/formulas.md section 4); under `stack: megatron` its own
    cross-entropy's MEGATRON_LOGIT_BYTES, whatever `parallel.loss` says (specc's loss is not Megatron's)."""
    if layout.stack == "megatron":
        return MEGATRON_LOGIT_BYTES * local_logits(model, layout, seq_len) * (1 + model.mtp_depth)
    if loss_implementation(layout, xla) == "chunked":
        return chunked_loss_memory(model, layout, seq_len)
    if xla:
        per_element = XLA_LOGIT_BYTES
    else:
        per_element = LOSS_PARALLEL_LOGIT_BYTES if vocab_shards(model, layout) > 1 else FULL_LOGIT_BYTES
        if layout.pp > 1 and PIPELINE_HELD_LOGITS:
            per_element += compute_element_bytes(layout)
    # each MTP depth's loss keeps its own logits' working set for the one backward (DeepSeek-V3 eq. 25)
    return per_element * local_logits(model, layout, seq_len) * (1 + model.mtp_depth)


def vocab_shards(model: ModelSpec, layout: Layout) -> int:
    """tp, except a tied embedding in specc's runtime, which is replicated over tp (Megatron splits a
    tied embedding by vocabulary like an untied one: `VocabParallelEmbedding`)."""
    return 1 if model.tie_embeddings and layout.stack != "megatron" else layout.tp


def local_logits(model: ModelSpec, layout: Layout, seq_len: int) -> float:
    """Logits of one micro-batch on one device: s/cp x b x V/tp (a tied head's vocabulary is whole)."""
    return dims.local_seq_len(seq_len, layout.cp) * layout.micro_batch * model.vocab_size / vocab_shards(model, layout)


def logit_gradient_memory(model: ModelSpec, layout: Layout, seq_len: int) -> float:
    """The fp32 gradient of the full loss's logits, alive when FSDP's pre-backward hook re-gathers the
    root unit (the hook fires on the gradient of the module's output): 4 B per logit in fp32 training
    (the 16-bit copy under mixed precision is not traced: no re-gather moment there, see
    `root_regather_memory`). The chunked loss's output is one log-prob per token: nothing."""
    return 4.0 * local_logits(model, layout, seq_len)


CHUNKED_LOGIT_BYTES = 4.0
"""fp32 bytes per logit of the chunked loss's live chunk (specc/runtime/train/loss.py): the upcast
logits, exponentiated and turned into the gradient in place. Under mixed precision the 16-bit matmul
output (forward, as it is upcast) or the 16-bit gradient (backward, before its two matmuls) is
alive beside it: +2."""


def chunked_loss_memory(model: ModelSpec, layout: Layout, seq_len: int) -> float:
    """The chunked loss's working set at its peak, in its backward (specc/runtime/train/loss.py):
    one block of logits holding as many elements as a forward chunk, min(loss_chunk_tokens, sb) x V
    (V/tp for a vocab-sharded head), at CHUNKED_LOGIT_BYTES + 2 (16-bit) per logit; the hidden states'
    gradient accumulated in fp32 over the blocks plus one block's 16-bit product, sbh (4 + 2); under
    sequence parallelism the gathered hidden states, sbh x 2; per-token vectors (log-sum-exp, log-probs
    and their gradient: 12 B per token). The head's weight gradient, written block by block while the
    logits are alive, is FSDP's business (`chunked_loss_fsdp_memory`). FSDPMemTracker on specc's runtime
    (benchmarks/plan_vs_tracker.py `chunked-*`): the temporaries at the peak are this plus the head's
    gradient to within 1%."""
    tokens = dims.local_seq_len(seq_len, layout.cp) * layout.micro_batch
    vocab = model.vocab_size / (1 if model.tie_embeddings else layout.tp)
    e = compute_element_bytes(layout)
    per_logit = CHUNKED_LOGIT_BYTES + (e if e < 4 else 0.0)
    working = min(layout.loss_chunk_tokens, tokens) * vocab * per_logit
    hidden = tokens * model.hidden_size * (4.0 + e + (e if layout.sequence_parallel else 0.0))
    return working + hidden + 12.0 * tokens
