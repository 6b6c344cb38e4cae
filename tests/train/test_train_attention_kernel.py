"""`model.attention_kernel` pins SDPA's backend in the runtime (unmasked attention only)."""

from __future__ import annotations

import pytest
import torch
from torch.nn.attention import SDPBackend, _cur_sdpa_kernel_backends

from specc.runtime.train.model import Attention
from specc.spec.model import ModelSpec


def _attention(**fields) -> Attention:
    return Attention(ModelSpec(num_layers=1, hidden_size=32, num_heads=4, ffn_hidden_size=64, vocab_size=64,
                               max_seq_len=16, **fields))


def _backends(attention: Attention, mask=None) -> list:
    with attention._kernel_choice(mask):
        return list(_cur_sdpa_kernel_backends())


@pytest.mark.parametrize("fields, pinned", [
    ({"attention_kernel": "cudnn"}, [SDPBackend.CUDNN_ATTENTION]),
    ({"attention_kernel": "flash2"}, [SDPBackend.FLASH_ATTENTION]),
    ({"attention": "flash"}, [SDPBackend.FLASH_ATTENTION]),
])
def test_a_named_kernel_is_the_only_backend_sdpa_may_use(fields, pinned):
    assert _backends(_attention(**fields)) == pinned


def test_auto_and_masked_attention_keep_sdpas_own_choice():
    everything = _backends(_attention())
    assert len(everything) > 1
    mask = torch.ones(4, 4, dtype=torch.bool)
    assert _backends(_attention(attention_kernel="cudnn"), mask) == everything
