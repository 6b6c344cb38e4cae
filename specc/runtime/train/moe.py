"""Mixture-of-experts FFN: top-k router, capacity factor, load-balancing loss, expert parallel.

Routing follows Switch Transformer / GShard: softmax router, top-k experts per token
(top-k probabilities renormalised when k > 1, as in Mixtral), a fixed capacity per expert
`ceil(capacity_factor x tokens x top_k / num_experts)` with overflow dropped (first choices
get slots before second choices, GShard section 2.2), and the Switch auxiliary loss
`num_experts x sum_e f_e x P_e` (Fedus et al. 2022, eq. 4).

Capacity is computed over the tokens of one micro-batch on one rank, so a layout gives the
same routing as a single process that uses the same micro-batch size.

Expert parallelism: the experts of a layer are split over the `ep` mesh axis. Each rank
fills a fixed-size dispatch buffer (num_experts x capacity x hidden) and one all-to-all
moves every expert's slots to its owner; a second all-to-all brings the outputs back.
Fixed sizes keep the collective simple and identical on NCCL and gloo.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from specc.runtime.train.feed_forward import FeedForward
from specc.spec.model import ModelSpec


class AuxLossScaler(torch.autograd.Function):
    """Adds d(weight x aux_loss) to the backward pass without returning aux_loss through the
    model (Megatron-LM's MoEAuxLossAutoScaler): works unchanged inside pipeline stages."""

    scale = 1.0
    """Set by the training loop to 1 / micro-batches per step, matching the main loss's averaging."""

    @staticmethod
    def forward(ctx, output: torch.Tensor, aux_loss: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(aux_loss)
        return output

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        (aux_loss,) = ctx.saved_tensors
        return grad_output, torch.full_like(aux_loss, AuxLossScaler.scale)


class AllToAll(torch.autograd.Function):
    """Equal-split all-to-all over dim 0; its gradient is the reverse all-to-all."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, group) -> torch.Tensor:
        ctx.group = group
        out = torch.empty_like(x)
        dist.all_to_all_single(out, x.contiguous(), group=group)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        out = torch.empty_like(grad)
        dist.all_to_all_single(out, grad.contiguous(), group=ctx.group)
        return out, None


class GroupedExperts(nn.Module):
    """`num_experts` FFNs stored as stacked matrices (experts, in, out) for batched matmuls.

    Under expert parallelism the leading dimension holds only this rank's experts.
    """

    def __init__(self, num_experts: int, hidden: int, width: int, activation: str):
        super().__init__()
        self.activation = activation
        self.w1 = nn.Parameter(torch.empty(num_experts, hidden, width))
        self.w2 = nn.Parameter(torch.empty(num_experts, width, hidden))
        self.w3 = nn.Parameter(torch.empty(num_experts, hidden, width)) if activation == "swiglu" else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (local experts, tokens per expert, hidden)."""
        w1, w2 = _local(self.w1), _local(self.w2)
        if self.w3 is not None:
            h = F.silu(torch.bmm(x, w1)) * torch.bmm(x, _local(self.w3))
        else:
            h = (F.relu if self.activation == "relu" else F.gelu)(torch.bmm(x, w1))
        return torch.bmm(h, w2)


def _local(param: torch.Tensor) -> torch.Tensor:
    """Expert-parallel weights are DTensors sharded over `ep`; compute on the local shard."""
    return param.to_local() if hasattr(param, "to_local") else param


def switch_aux_loss(probs: torch.Tensor, one_hot: torch.Tensor, num_experts: int) -> torch.Tensor:
    """Switch eq. 4, `num_experts x sum_e f_e x P_e`: f_e the share of the (token, choice)
    assignments that go to e, P_e the mean router probability of e. (HF Mixtral's loss sums the
    shares of each choice instead, k times this: `specc.spec.hf_config` scales its weight.)"""
    fraction = one_hot.float().mean(dim=0)
    return num_experts * (fraction * probs.mean(dim=0)).sum()


class MoE(nn.Module):
    """Router + routed experts + optional shared experts (DeepSeekMoE), replacing a dense FFN."""

    def __init__(self, model: ModelSpec):
        super().__init__()
        moe = model.moe
        assert moe is not None
        width = moe.expert_ffn_hidden_size or model.ffn_hidden_size
        self.num_experts, self.top_k = moe.num_experts, moe.top_k
        self.capacity_factor, self.aux_loss_weight = moe.capacity_factor, moe.aux_loss_weight
        self.router = nn.Linear(model.hidden_size, moe.num_experts, bias=False)
        self.experts = GroupedExperts(moe.num_experts, model.hidden_size, width, model.activation)
        # n shared experts of width w are one FFN of width n x w (the sum of their outputs).
        self.shared_experts = (FeedForward(model.hidden_size, width * moe.num_shared_experts, model.activation)
                               if moe.num_shared_experts else None)
        self.ep_group = None
        self.ep_size = 1
        self.experts_sharded = False
        """True once the ep-sharded experts have their own FSDP unit over the expert-dp ranks."""
        self.last_dropped_fraction = 0.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        tokens = x.reshape(-1, shape[-1])
        num_tokens = tokens.shape[0]
        probs = self.router(tokens).float().softmax(dim=-1)
        top_probs, top_experts = probs.topk(self.top_k, dim=-1)
        if self.top_k > 1:
            top_probs = top_probs / top_probs.sum(dim=-1, keepdim=True)

        # Slot of each (choice, token) assignment in its expert, first choices first.
        choice_major = top_experts.t().reshape(-1)
        one_hot = F.one_hot(choice_major, self.num_experts)
        position = ((one_hot.cumsum(dim=0) - 1) * one_hot).sum(dim=-1)
        capacity = math.ceil(self.capacity_factor * num_tokens * self.top_k / self.num_experts)
        kept = position < capacity
        self.last_dropped_fraction = (1.0 - kept.float().mean()).detach()

        token_index = torch.arange(num_tokens, device=x.device).repeat(self.top_k)
        slot = choice_major * capacity + position
        buffer = tokens.new_zeros(self.num_experts * capacity, shape[-1])
        buffer = buffer.index_copy(0, slot[kept], tokens[token_index[kept]])
        expert_out = self._run_experts(buffer.view(self.num_experts, capacity, shape[-1]))

        weights = top_probs.t().reshape(-1)[kept].to(x.dtype)
        gathered = expert_out.reshape(-1, shape[-1])[slot[kept]] * weights[:, None]
        out = tokens.new_zeros(tokens.shape).index_add(0, token_index[kept], gathered)
        if self.shared_experts is not None:
            out = out + self.shared_experts(tokens)
        if self.training and self.aux_loss_weight > 0:
            aux = switch_aux_loss(probs, one_hot, self.num_experts) * self.aux_loss_weight
            out = AuxLossScaler.apply(out, aux)
        return out.view(shape)

    def _run_experts(self, buffer: torch.Tensor) -> torch.Tensor:
        """(experts, capacity, hidden) in, same out; across ranks when expert-parallel."""
        if self.ep_size == 1:
            return self.experts(buffer)
        experts, capacity, hidden = buffer.shape
        local = experts // self.ep_size
        # Rank r receives, from every source rank, the slots of experts [r*local, (r+1)*local).
        received = AllToAll.apply(buffer, self.ep_group)
        received = received.view(self.ep_size, local, capacity, hidden).transpose(0, 1).reshape(local, -1, hidden)
        out = self.experts(received)
        out = out.view(local, self.ep_size, capacity, hidden).transpose(0, 1).reshape(experts, capacity, hidden)
        return AllToAll.apply(out, self.ep_group)
