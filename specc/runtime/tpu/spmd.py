"""torch-xla SPMD set-up: the runtime, the device mesh, and sharding annotations on the
parameters, the activations and the batch (the only TPU-specific part of training)."""

from __future__ import annotations

import numpy as np
import torch
import torch_xla
import torch_xla.distributed.spmd as xs
import torch_xla.runtime as xr
from torch import nn

from specc.runtime.tpu.layout import AXES, MeshShape, batch_spec, logits_spec, parameter_spec, mesh_shape
from specc.runtime.train.model import Transformer
from specc.spec.parallel import ParallelSpec

_SPMD_ENABLED = False


def enable_spmd() -> None:
    """Switch the process to SPMD mode once (it must precede any XLA tensor creation)."""
    global _SPMD_ENABLED
    if not _SPMD_ENABLED:
        xr.use_spmd()
        _SPMD_ENABLED = True


def build_mesh(parallel: ParallelSpec) -> tuple[xs.Mesh, MeshShape]:
    """A (data, fsdp, tensor) mesh over every device of every host.

    Device ids are laid out in order, so the innermost axis (tensor) runs over neighbouring
    chips of a host, where ICI bandwidth is highest, and data is outermost.
    """
    num_devices = xr.global_runtime_device_count()
    shape = mesh_shape(parallel, num_devices)
    mesh = xs.Mesh(np.arange(num_devices), shape.shape, AXES)
    return mesh, shape


def to_device(model: Transformer) -> Transformer:
    """Move the model to the XLA device, keeping a tied output head tied.

    `Module.to` cannot convert a CPU parameter to an XLA one in place, so it makes a new
    Parameter per attribute and the tied pair would become two independent weights (each
    getting half the gradient); re-tie them as the model's constructor did.
    """
    model = model.to(torch_xla.device())
    if model.spec.tie_embeddings and model.output is not None and model.embeddings is not None:
        model.output.weight = model.embeddings.tok_embeddings.weight
    return model


def shard_parameters(model: nn.Module, mesh: xs.Mesh) -> dict[str, tuple]:
    """Annotate every parameter with its partition spec (the model must already be on the XLA device).

    Returns name -> spec, which the checkpoint export and the tests read back.
    """
    specs = {}
    for name, param in model.named_parameters():
        spec = parameter_spec(name, param.dim())
        xs.mark_sharding(param, mesh, spec)
        specs[name] = spec
    return specs


def shard_activations(model: Transformer, mesh: xs.Mesh) -> None:
    """Pin the hidden states between blocks to batch sharding and the logits to vocab sharding.

    Without these GSPMD infers activation layouts from the weights alone and may keep a
    hidden state sharded over fsdp along the model dimension, which turns every matmul
    into extra all-gathers; the annotations fix the layout MaxText uses.
    """
    def hidden_hook(module: nn.Module, inputs, output: torch.Tensor) -> torch.Tensor:
        xs.mark_sharding(output, mesh, batch_spec(output.dim()))
        return output

    def logits_hook(module: nn.Module, inputs, output: torch.Tensor) -> torch.Tensor:
        xs.mark_sharding(output, mesh, logits_spec())
        return output

    if model.embeddings is not None:
        model.embeddings.register_forward_hook(hidden_hook)
    for layer in model.layers.values():
        layer.register_forward_hook(hidden_hook)
    if model.output is not None:
        model.output.register_forward_hook(logits_hook)


def shard_batch(tokens: torch.Tensor, mesh: xs.Mesh) -> torch.Tensor:
    """Move a host batch to the XLA device, split over data x fsdp.

    Every host passes the same global batch; XLA transfers to each device only its shard.
    """
    on_device = tokens.to(torch_xla.device())
    xs.mark_sharding(on_device, mesh, batch_spec(on_device.dim()))
    return on_device


def replicated_copy(tensor: torch.Tensor, mesh: xs.Mesh) -> torch.Tensor:
    """A fully replicated copy of a sharded tensor (a collective on every host), for export."""
    copy = tensor.detach() * 1  # a new IR value: a plain clone would alias the sharded device data
    xs.mark_sharding(copy, mesh, (None,) * copy.dim())
    return copy
