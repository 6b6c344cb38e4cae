"""The output head fused with the next-token log-probabilities, chunked so that the whole
(tokens x vocab) logits never exist at once (`parallel.loss: chunked`, the torch runtime's default).

`head_logprobs(hidden, weight, targets, chunk_tokens)` returns log p(target) for every position, in
fp32, from the final hidden states and the head's weight:

forward   tokens in chunks of `chunk_tokens`: the chunk's logits (the head's own matmul, in the compute
          dtype), upcast to fp32, then their log-sum-exp and the target's logit, computed in place. Saved
          for backward: the hidden states (the full path's head keeps them too), the weight (a
          reference), the targets and one fp32 log-sum-exp per token. No logits.
backward  the vocabulary in blocks holding as many logits over all N tokens as one forward chunk
          (N x block = chunk x V): the block's logits are recomputed, p = exp(z - lse),
          dz = g (onehot - p) with g the upstream gradient of each token's log-prob; then
          dW[block] = dz^T h, one matmul over all tokens (the full path's head backward runs the same
          matmul, so the weight gradient rounds the same way), and dh += dz W[block] into an fp32
          accumulator of N x H (small next to the logits).

The price is one more forward of the head: 2 N H V FLOPs per micro-batch. Liger's fused linear
cross-entropy (linkedin/Liger-Kernel, `fused_linear_cross_entropy.py`) avoids it by computing the
gradients during forward, which needs the upstream gradient then: a scalar mean loss. Here the
log-probabilities also feed SFT's response mask, DPO's sums and PPO's ratios, whose per-token
gradients are known only in backward, hence the recompute (as `torch.utils.checkpoint` would do
per chunk, without the graph bookkeeping). torchtune's `CEWithChunkedOutputLoss` chunks only the
fp32 upcast and keeps every chunk's 16-bit logits.

Tensor parallelism (an untied head is vocab-sharded over tp by `parallelize.apply_tp`): each rank
holds V/tp rows of the weight; per chunk the log-sum-exp and the target's logit are combined over
the tp group (a max and a sum all-reduce, Megatron's vocab-parallel cross-entropy, Shoeybi et al.
2019, section 3), and the hidden states' gradient, a partial sum over the vocabulary shards, is
all-reduced once at the end. A sequence-sharded input (sequence parallelism) is all-gathered first,
as the head's ColwiseParallel does.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
from torch.distributed.tensor import DTensor, Replicate

from specc.spec.capabilities import TORCH_LOSSES, resolve_loss


def runtime_loss(requested: str) -> str:
    """`parallel.loss` as the torch runtime runs it (`auto`: its preferred implementation)."""
    return resolve_loss(requested, TORCH_LOSSES)


def chunk_tokens_for(loss: str, chunk_tokens: int) -> int | None:
    """The chunk size the model's head runs with: None for the full logits."""
    return chunk_tokens if runtime_loss(loss) == "chunked" else None


def head_logprobs(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, chunk_tokens: int,
                  scale: float = 1.0) -> torch.Tensor:
    """log p(targets) in fp32, shaped like `targets`, for hidden states (..., H) and a head weight (V, H)
    (a vocab-sharded DTensor under tensor parallelism); logits are `scale` x hidden @ weight^T."""
    group, vocab_start = None, 0
    if isinstance(weight, DTensor):
        mesh = weight.device_mesh
        assert mesh.ndim == 1, "the head is sharded over the tp mesh only"
        group = mesh.get_group()
        # DTensor's Shard(0) splits like torch.chunk: ceil(V / tp) rows per rank, the last ones shorter
        vocab_start = min(weight.shape[0], mesh.get_local_rank() * math.ceil(weight.shape[0] / mesh.size()))
        weight = weight.to_local()
    if isinstance(hidden, DTensor):  # sequence parallel: gather the sequence, as ColwiseParallel's input does
        hidden = hidden.redistribute(hidden.device_mesh, [Replicate()] * hidden.device_mesh.ndim).to_local()
    if torch.is_autocast_enabled(hidden.device.type):
        # the dtype autocast would run the head's matmul in; the casts stay outside the Function, on the graph
        dtype = torch.get_autocast_dtype(hidden.device.type)
        hidden, weight = hidden.to(dtype), weight.to(dtype)
    flat = hidden.reshape(-1, hidden.shape[-1])
    with torch.autocast(hidden.device.type, enabled=False):
        return _ChunkedHeadLogProbs.apply(flat, weight, targets, chunk_tokens, scale, group, vocab_start)


def _logits(hidden: torch.Tensor, weight: torch.Tensor, scale: float) -> torch.Tensor:
    """fp32 logits of some tokens over some vocabulary rows: the head's matmul in the compute dtype,
    then the upcast (the 16-bit product is freed as soon as it is copied)."""
    logits = (hidden @ weight.t()).float()
    return logits.mul_(scale) if scale != 1.0 else logits


class _ChunkedHeadLogProbs(torch.autograd.Function):
    """See the module docstring. Inputs: hidden (N, H), weight (V_local, H), targets of N global ids
    in any shape, which the output takes (a fresh tensor, not a view: FSDP2 hooks the module's output)."""

    @staticmethod
    def forward(ctx, hidden, weight, targets, chunk_tokens, scale, group, vocab_start):
        n, vocab = hidden.shape[0], weight.shape[0]
        local = targets.reshape(-1) - vocab_start
        inside = (local >= 0) & (local < vocab)  # this rank holds the target's row (always, without tp)
        local = local.clamp(0, max(vocab - 1, 0))
        lse = torch.empty(n, dtype=torch.float32, device=hidden.device)
        logprobs = torch.empty(targets.shape, dtype=torch.float32, device=hidden.device)
        flat = logprobs.view(-1)
        for start in range(0, n, chunk_tokens):
            end = min(n, start + chunk_tokens)
            logits = _logits(hidden[start:end], weight, scale)
            target_logit = logits.gather(1, local[start:end, None]).squeeze(1) * inside[start:end]
            peak = logits.amax(dim=-1)
            if group is not None:
                dist.all_reduce(peak, op=dist.ReduceOp.MAX, group=group)
            sums = logits.sub_(peak[:, None]).exp_().sum(dim=-1)  # in place: one chunk of fp32 logits at a time
            del logits
            if group is not None:
                both = torch.stack([sums, target_logit])
                dist.all_reduce(both, group=group)
                sums, target_logit = both[0], both[1]
            lse[start:end] = peak + sums.log()
            flat[start:end] = target_logit - lse[start:end]
        ctx.save_for_backward(hidden, weight, local, inside, lse)
        ctx.chunk_tokens, ctx.scale, ctx.group = chunk_tokens, scale, group
        return logprobs

    @staticmethod
    def backward(ctx, grad):
        hidden, weight, local, inside, lse = ctx.saved_tensors
        n, vocab = hidden.shape[0], weight.shape[0]
        # vocabulary rows per block: a block's logits over all n tokens hold as many elements as one forward chunk
        block = max(1, math.ceil(vocab * min(ctx.chunk_tokens, n) / n))
        upstream = grad.reshape(-1).float() * ctx.scale
        target_grad = (upstream * inside)[:, None]
        want_hidden, want_weight = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_hidden = torch.zeros(hidden.shape, dtype=torch.float32, device=hidden.device) if want_hidden else None
        grad_weight = torch.empty_like(weight) if want_weight else None
        for first in range(0, vocab, block):
            last = min(vocab, first + block)
            rows = weight[first:last]
            # d log p(t) / dz = onehot(t) - softmax(z), times the upstream gradient (and the logit scale)
            dz = _logits(hidden, rows, ctx.scale).sub_(lse[:, None]).exp_().mul_(-upstream[:, None])
            column = (local - first).clamp(0, last - first - 1)[:, None]
            hit = (local[:, None] >= first) & (local[:, None] < last)
            dz.scatter_add_(1, column, target_grad * hit)
            dz = dz.to(weight.dtype)
            if want_weight:
                torch.mm(dz.t(), hidden, out=grad_weight[first:last])
            if want_hidden:
                grad_hidden += dz @ rows
            del dz
        if want_hidden and ctx.group is not None:
            dist.all_reduce(grad_hidden, group=ctx.group)
        return (grad_hidden.to(hidden.dtype) if want_hidden else None), grad_weight, None, None, None, None, None
