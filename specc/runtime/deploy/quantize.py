"""specc's own quantized layout (deploy `format: safetensors`, reloaded only by specc): int8 per
output channel and NF4 blocks. The Hugging Face folders serving engines load are
`specc.runtime.deploy.compressed` (int8, int4, GPTQ in the compressed-tensors format).

Only the linear layers inside transformer blocks are quantized (attention q/k/v/o and the
FFN matrices); embeddings, the output head and norms stay in full precision, as
bitsandbytes and GPTQ do by default and as `specc.plan.serving` counts them. MoE expert
weights (3-D parameters, not `nn.Linear`) are left as they are.

- int8: absmax per output row, w ~= scale[o] x q[o, i] with q in [-127, 127] (the
  weight-only half of LLM.int8(), Dettmers et al. 2022, section 3.1).
- NF4: the 4-bit NormalFloat code book of QLoRA (Dettmers et al. 2023, section 3): 16
  values at quantiles of N(0, 1) scaled into [-1, 1] with an exact zero; each block of
  `group_size` consecutive weights stores one absmax; two 4-bit codes per byte.

The quantized modules keep the packed tensors as buffers and dequantise in `forward`
(a dequantised matmul), so any code that calls the model — the full forward, the KV-cache
decoder, speculative decoding — runs the quantized model unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from specc.spec.capabilities import DEPLOY_FORMAT_QUANTIZATIONS

NF4_OFFSET = 0.9677083
"""Outermost quantile used for the NF4 code book: 0.5 x (1/(2 x 15) + 1/(2 x 16)) from
1 (bitsandbytes `create_normal_map`), which keeps +-1 finite."""


def nf4_code_book() -> torch.Tensor:
    """The 16 NF4 values (QLoRA eq. 4): 8 positive quantiles, 7 negative, and zero, normalised by absmax."""
    positive = torch.special.ndtri(torch.linspace(NF4_OFFSET, 0.5, 9, dtype=torch.float64)[:-1])
    negative = -torch.special.ndtri(torch.linspace(NF4_OFFSET, 0.5, 8, dtype=torch.float64)[:-1])
    values = torch.cat([positive, torch.zeros(1, dtype=torch.float64), negative]).sort().values
    return (values / values.abs().max()).float()


class Int8Linear(nn.Module):
    """y = (x @ q^T) x scale (+ bias): int8 weights, one float scale per output channel."""

    def __init__(self, qweight: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None):
        super().__init__()
        self.in_features, self.out_features = qweight.shape[1], qweight.shape[0]
        self.register_buffer("qweight", qweight)
        self.register_buffer("scale", scale)
        self.bias = None if bias is None else nn.Parameter(bias, requires_grad=False)

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> Int8Linear:
        weight = linear.weight.detach().float()
        scale = weight.abs().amax(dim=1).clamp(min=1e-12) / 127.0
        qweight = torch.round(weight / scale[:, None]).clamp(-127, 127).to(torch.int8)
        bias = None if linear.bias is None else linear.bias.detach().clone()
        return cls(qweight, scale, bias)

    def dequantize(self) -> torch.Tensor:
        return self.qweight.float() * self.scale[:, None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Scaling the output rows is the same as scaling the weight rows, and cheaper.
        y = F.linear(x, self.qweight.to(x.dtype)) * self.scale.to(x.dtype)
        return y if self.bias is None else y + self.bias


class NF4Linear(nn.Module):
    """Packed NF4 weights: `packed` (uint8, two codes per byte) + `absmax` per block of `group_size`."""

    def __init__(self, packed: torch.Tensor, absmax: torch.Tensor, shape: tuple[int, int], group_size: int,
                 bias: torch.Tensor | None):
        super().__init__()
        self.out_features, self.in_features = shape
        self.group_size = group_size
        self.register_buffer("packed", packed)
        self.register_buffer("absmax", absmax)
        self.register_buffer("code_book", nf4_code_book(), persistent=False)
        self.bias = None if bias is None else nn.Parameter(bias, requires_grad=False)

    @classmethod
    def from_linear(cls, linear: nn.Linear, group_size: int) -> NF4Linear:
        weight = linear.weight.detach().float()
        flat = weight.reshape(-1)
        flat = torch.cat([flat, flat.new_zeros(-flat.numel() % group_size)])
        blocks = flat.view(-1, group_size)
        absmax = blocks.abs().amax(dim=1).clamp(min=1e-12)
        normalised = blocks / absmax[:, None]
        codes = (normalised[..., None] - nf4_code_book()).abs().argmin(dim=-1).reshape(-1).to(torch.uint8)
        if codes.numel() % 2:
            codes = torch.cat([codes, codes.new_zeros(1)])
        packed = (codes[0::2] << 4) | codes[1::2]
        bias = None if linear.bias is None else linear.bias.detach().clone()
        return cls(packed, absmax, tuple(weight.shape), group_size, bias)

    def dequantize(self) -> torch.Tensor:
        codes = torch.stack([self.packed >> 4, self.packed & 0xF], dim=1).reshape(-1).long()
        values = self.code_book[codes][: self.absmax.numel() * self.group_size].view(-1, self.group_size)
        weight = (values * self.absmax[:, None]).reshape(-1)
        return weight[: self.out_features * self.in_features].view(self.out_features, self.in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.dequantize().to(x.dtype), None if self.bias is None else self.bias.to(x.dtype))


QUANTIZERS = {
    "int8": lambda linear, group_size: Int8Linear.from_linear(linear),
    "nf4": lambda linear, group_size: NF4Linear.from_linear(linear, group_size),
}
"""Quantized module per method; exactly the quantizing entries of specc's own layout (checked below)."""
assert set(QUANTIZERS) == set(DEPLOY_FORMAT_QUANTIZATIONS["safetensors"]) - {"none"}, \
    "DEPLOY_FORMAT_QUANTIZATIONS['safetensors'] and the quantizers disagree"


def quantizable_linears(model: nn.Module) -> list[tuple[nn.Module, str, nn.Linear]]:
    """(parent, attribute, linear) for every nn.Linear inside the transformer blocks."""
    found = []
    for parent_name, parent in model.named_modules():
        if not parent_name.startswith("layers."):
            continue
        for attribute, child in parent.named_children():
            if isinstance(child, nn.Linear):
                found.append((parent, attribute, child))
    return found


@torch.no_grad()
def quantize_model(model: nn.Module, method: str, group_size: int = 64) -> nn.Module:
    """Replace the block linears of `model` in place with Int8Linear / NF4Linear; returns the model."""
    if method not in QUANTIZERS:
        raise ValueError(f"quantization {method!r} is not implemented by specc's own layout; use one of "
                         f"{', '.join(QUANTIZERS)}")
    for parent, attribute, linear in quantizable_linears(model):
        quantized = QUANTIZERS[method](linear, group_size)
        setattr(parent, attribute, quantized)
    return model


def quantized_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every tensor needed to rebuild the quantized model (packed weights and scales included);
    a tied output head is left out, as in the pretrain export."""
    state = {name: tensor.detach().contiguous() for name, tensor in model.state_dict().items()}
    if model.spec.tie_embeddings:
        state.pop("output.weight", None)
    return state


def load_quantized_state(model: nn.Module, method: str, group_size: int, state: dict[str, torch.Tensor]) -> nn.Module:
    """Rebuild a quantized model from `quantized_state` output: quantize a freshly built model of
    the same architecture (for the shapes), then load the stored packed tensors exactly."""
    quantize_model(model, method, group_size)
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [name for name in missing if name != "output.weight" or not model.spec.tie_embeddings]
    if missing or unexpected:
        raise ValueError(f"quantized weights do not match the model: missing {missing}, unexpected {unexpected}")
    return model


def weight_bytes(model: nn.Module) -> int:
    """Bytes of the stored weights (parameters and persistent buffers; a tied tensor counted once)."""
    seen, total = set(), 0
    for tensor in model.state_dict().values():
        key = (tensor.data_ptr(), tensor.numel())
        if key not in seen:
            seen.add(key)
            total += tensor.numel() * tensor.element_size()
    return total
