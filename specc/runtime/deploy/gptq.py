"""GPTQ (Frantar et al. 2023, "GPTQ: Accurate Post-Training Quantization for Generative Pre-trained
Transformers", Algorithm 1): 4-bit group-wise weights chosen to keep each linear layer's outputs
on calibration text, not its weights, close to full precision.

For a linear layer with weight W (out, in) and calibration inputs X (tokens, in), GPTQ minimises
||W X^T - Q X^T||^2 column by column: the Hessian of that error is H = 2 X^T X; after quantizing
column j, the remaining columns absorb its error, W[:, j+1:] -= (w_j - q_j) / [H^-1]_jj x [H^-1]_j,j+1:
(Optimal Brain Quantization's update), with H^-1 taken from the upper Cholesky factor of the
inverse (section 4, "Cholesky reformulation") and updates applied lazily per block of columns.
The layers are processed block by block in model order, each calibrated on the outputs of the
already-quantized layers before it (the paper's sequential procedure).
"""

from __future__ import annotations

import torch
from torch import nn

from specc.runtime.deploy.compressed import QuantizedWeight, check_groups, group_scales, max_level, quantizable

DAMPING = 0.01
"""lambda = 1% of the mean diagonal of H added to H (the paper's default `percdamp`)."""
CALIBRATION_WINDOWS = 128
"""Calibration sequences the deploy stage feeds GPTQ (the paper's 128 random 2048-token segments)."""
BLOCK_COLUMNS = 128
"""Columns per lazy batch update (the paper's B = 128)."""


class HessianAccumulator:
    """H = 2/n sum_t x_t x_t^T over every calibration token seen by one linear layer (fp32, on the
    layer's device, as the reference implementation keeps it)."""

    def __init__(self, in_features: int, device: torch.device):
        self.hessian = torch.zeros(in_features, in_features, dtype=torch.float32, device=device)
        self.tokens = 0

    def add(self, inputs: torch.Tensor) -> None:
        x = inputs.detach().reshape(-1, inputs.shape[-1]).float()
        total = self.tokens + x.shape[0]
        self.hessian *= self.tokens / total
        self.hessian += (2.0 / total) * x.t() @ x
        self.tokens = total


def gptq_quantize(weight: torch.Tensor, hessian: torch.Tensor, bits: int, group_size: int) -> QuantizedWeight:
    """Algorithm 1 with groups: a group's scale is set from its (error-updated) columns when the
    quantization reaches its first column. Returns the integers and scales (symmetric absmax grid)."""
    check_groups(weight, group_size)
    w = weight.detach().float().clone()
    h = hessian.float().clone().to(w.device)
    columns = w.shape[1]
    dead = torch.diag(h) == 0  # inputs that are always zero: any value works, use 0
    h[dead, dead] = 1.0
    w[:, dead] = 0.0
    h += DAMPING * torch.diag(h).mean() * torch.eye(columns, dtype=h.dtype, device=h.device)
    h_inv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True)
    q = torch.zeros_like(w)
    scales = torch.zeros(w.shape[0], columns // group_size, dtype=w.dtype, device=w.device)
    level = max_level(bits)
    block = group_size * max(1, BLOCK_COLUMNS // group_size)  # groups never straddle blocks
    for start in range(0, columns, block):
        end = min(start + block, columns)
        w_block, errors = w[:, start:end].clone(), torch.zeros_like(w[:, start:end])
        h_block = h_inv[start:end, start:end]
        for i in range(end - start):
            column = start + i
            if column % group_size == 0:
                scales[:, column // group_size] = group_scales(w_block[:, i:i + group_size], bits, None)[:, 0]
            scale = scales[:, column // group_size]
            q[:, column] = torch.round(w_block[:, i] / scale).clamp(-level, level)
            error = (w_block[:, i] - q[:, column] * scale) / h_block[i, i]
            w_block[:, i:] -= error[:, None] * h_block[i, i:][None, :]
            errors[:, i] = error
        w[:, end:] -= errors @ h_inv[start:end, end:]
    return QuantizedWeight(q.to(torch.int8), scales, bits, group_size)


class _StopForward(Exception):
    """Raised after the block being calibrated: later blocks need not run."""


@torch.no_grad()
def gptq_model(model: nn.Module, calibration: list[torch.Tensor], bits: int = 4,
               group_size: int = 128) -> dict[str, QuantizedWeight]:
    """Quantize every block linear of `model` with GPTQ, in place (each linear ends up holding its
    dequantized weight, so later blocks calibrate on the quantized model), and return the
    integers and scales by module name. `calibration`: token batches (batch, seq)."""
    quantized: dict[str, QuantizedWeight] = {}
    for layer_name, block in model.layers.items():
        linears = {f"layers.{layer_name}.{name}": module for name, module in block.named_modules()
                   if quantizable(f"layers.{layer_name}.{name}", module)}
        hessians = {name: HessianAccumulator(linear.in_features, linear.weight.device) for name, linear in linears.items()}
        hooks = [linear.register_forward_pre_hook(lambda _m, args, acc=hessians[name]: acc.add(args[0]))
                 for name, linear in linears.items()]

        def stop(*_):
            raise _StopForward

        hooks.append(block.register_forward_hook(stop))
        try:
            for tokens in calibration:
                try:
                    model(tokens)
                except _StopForward:
                    pass
        finally:
            for hook in hooks:
                hook.remove()
        for name, linear in linears.items():
            result = gptq_quantize(linear.weight, hessians[name].hessian, bits, group_size)
            linear.weight.copy_(result.dequantize().to(linear.weight.dtype))
            quantized[name] = result
    return quantized
