"""Load a local Hugging Face directory into specc's Transformer, each rank reading only its shards.

The model is built on the meta device (no memory), parallelized as the layout says (TP, EP,
FSDP2 turn parameters into DTensors whose local shard is known), then `to_empty` allocates only
the local shards and each one is filled from the safetensors files with `safe_open(...).get_slice`,
which reads just the bytes of that slice (torchtitan's `initial_load_in_hf` does the same through
DCP). A 70B model therefore never materialises on one host; a single process reads everything.

Non-persistent buffers (RoPE tables, ALiBi slopes, sinusoids) are not in any checkpoint: they
are recomputed after `to_empty`.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch
from safetensors import safe_open
from torch import nn

from specc.runtime.hf.names import hf_source
from specc.runtime.integrity import StageError
from specc.runtime.train.model import Attention, Embeddings, Transformer, alibi_slopes, rope_tables, sinusoidal_table
from specc.spec.hf_config import WEIGHTS_INDEX, HFConfigError, read_hf_model, weight_files
from specc.spec.model import ModelSpec


def hf_model_spec(directory: Path, **training_choices) -> ModelSpec:
    """The ModelSpec a Hugging Face directory describes (plus `attention`, `dropout`, ... as given)."""
    try:
        fields = read_hf_model(directory).fields
    except HFConfigError as error:
        raise StageError(str(error)) from None
    return ModelSpec.model_validate({**fields, **training_choices})


def meta_model(spec: ModelSpec) -> Transformer:
    """The Transformer with every parameter and buffer on the meta device (nothing allocated)."""
    with torch.device("meta"):
        return Transformer(spec)


class WeightReader:
    """Open safetensors files of one directory, by tensor name (the index's weight map, or the
    single file's keys). Handles stay open for the reader's lifetime."""

    def __init__(self, directory: Path):
        self.directory = directory
        index = directory / WEIGHTS_INDEX
        try:
            files = weight_files(directory)
        except HFConfigError as error:
            raise StageError(str(error)) from None
        self.handles = {}
        if index.exists():
            weight_map = json.loads(index.read_text())["weight_map"]
            self.file_of = {name: directory / file for name, file in weight_map.items()}
        else:
            self.file_of = {name: files[0] for name in self._open(files[0]).keys()}
        self.bytes_read = 0

    def _open(self, path: Path):
        if path not in self.handles:
            try:
                self.handles[path] = safe_open(str(path), framework="pt", device="cpu")
            except Exception as error:  # noqa: BLE001 - safetensors raises its own (Rust) error types
                raise StageError(f"{path} is not readable safetensors ({error})") from None
        return self.handles[path]

    def has(self, name: str) -> bool:
        return name in self.file_of

    def read(self, name: str, index: tuple[slice, ...]) -> torch.Tensor:
        """The slice `index` of tensor `name`, reading only its bytes."""
        if name not in self.file_of:
            raise StageError(f"{self.directory}: no tensor {name!r} in the weights "
                             f"(config.json and the safetensors files disagree)")
        part = self._open(self.file_of[name]).get_slice(name)
        shape = tuple(part.get_shape())
        if len(shape) != len(index):
            raise StageError(f"{self.directory}: tensor {name!r} has shape {list(shape)}, "
                             f"specc expects {len(index)} dimensions")
        tensor = part[index] if index else part[:]
        self.bytes_read += tensor.numel() * tensor.element_size()
        return tensor

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self._open(self.file_of[name]).get_slice(name).get_shape())


def local_region(param: torch.Tensor) -> tuple[torch.Tensor, tuple[slice, ...]]:
    """(the tensor to fill on this rank, the slice of the full parameter it holds)."""
    if hasattr(param, "to_local"):
        from torch.distributed.tensor._utils import compute_local_shape_and_global_offset

        shape, offset = compute_local_shape_and_global_offset(param.shape, param.device_mesh, param.placements)
        return param.to_local(), tuple(slice(o, o + s) for o, s in zip(offset, shape))
    return param.data, tuple(slice(0, s) for s in param.shape)


def read_into(local: torch.Tensor, reader: WeightReader, name: str, region: tuple[slice, ...], full_shape,
              num_experts: int, tied: bool) -> None:
    """Fill `local` (this rank's `region` of specc parameter `name`) from the HF tensors."""
    source = hf_source(name, num_experts)
    if name == "output.weight" and tied:
        source = hf_source("embeddings.tok_embeddings.weight")
    if not source.stacked:
        expected = reader.shape(source.names[0]) if reader.has(source.names[0]) else None
        if expected is not None and tuple(expected) != tuple(full_shape):
            raise StageError(f"{reader.directory}: tensor {source.names[0]!r} has shape {list(expected)}, "
                             f"config.json implies {list(full_shape)}")
        local.copy_(reader.read(source.names[0], region))
        return
    experts, rows, cols = region
    # specc (expert, in, out) <- HF expert Linear weight (out, in): read the transposed slice
    for index, expert in enumerate(range(experts.start, experts.stop)):
        local[index].copy_(reader.read(source.names[expert], (cols, rows)).t())


def retie(model: nn.Module, spec: ModelSpec) -> None:
    """`to_empty` replaces a meta parameter with a new Parameter per module, which unties a tied
    head from the embedding: tie them again (the head then trains with the embedding)."""
    if not spec.tie_embeddings:
        return
    for module in model.modules():
        if isinstance(module, Transformer) and module.embeddings is not None and module.output is not None:
            module.output.weight = module.embeddings.tok_embeddings.weight


@torch.no_grad()
def fill_buffers(model: nn.Module) -> None:
    """Recompute the non-persistent buffers `to_empty` left uninitialised."""
    for module in model.modules():
        if isinstance(module, Transformer) and module.rope_cos is not None:
            spec = module.spec
            cos, sin = rope_tables(spec.head_size, spec.max_seq_len, spec.rope_theta)
            module.rope_cos.copy_(cos)
            module.rope_sin.copy_(sin)
        if isinstance(module, Attention) and hasattr(module, "slopes"):
            module.slopes.copy_(alibi_slopes(module.num_heads))
        if isinstance(module, Embeddings) and module.sinusoid is not None:
            module.sinusoid.copy_(sinusoidal_table(*module.sinusoid.shape))


@torch.no_grad()
def materialize_from_hf(model: nn.Module, directory: Path, device: torch.device | str, spec: ModelSpec) -> dict:
    """Allocate `model`'s local shards on `device` and fill them from the HF directory; a pruned
    pipeline stage reads only the layers it kept. Returns {"bytes_read", "seconds"}."""
    start = time.perf_counter()
    model.to_empty(device=device)
    retie(model, spec)
    reader = WeightReader(directory)
    num_experts = spec.moe.num_experts if spec.moe else 0
    for name, param in model.named_parameters():
        name = name.replace("_checkpoint_wrapped_module.", "").replace("_orig_mod.", "")
        local, region = local_region(param)
        if local.numel() == 0:
            continue
        read_into(local, reader, name, region, param.shape, num_experts, spec.tie_embeddings)
    fill_buffers(model)
    return {"bytes_read": reader.bytes_read, "seconds": time.perf_counter() - start}


def load_hf_model(directory: Path, device: str | torch.device = "cpu", **training_choices) -> Transformer:
    """A whole HF model in one process (single device), in fp32 and eval mode, like `load_model`."""
    spec = hf_model_spec(directory, **training_choices)
    model = meta_model(spec)
    materialize_from_hf(model, directory, device, spec)
    return model.eval()


def initial_model(spec: ModelSpec, seed: int) -> Transformer:
    """The model the pretrain loop starts from: on the meta device when `model.init_from` names a
    Hugging Face directory (`load_initial_weights` fills each rank's shards after parallelizing),
    else built and initialised from the seed."""
    from specc.runtime.train.model import build_model

    return meta_model(spec) if spec.init_from else build_model(spec, seed)


def load_initial_weights(part: nn.Module, spec: ModelSpec, device: torch.device, rank: int) -> None:
    """Materialise a parallelized meta-device part from `model.init_from` (reads only its shards)."""
    stats = materialize_from_hf(part, Path(spec.init_from), device, spec)
    if rank == 0:
        print(f"pretrain: weights from {spec.init_from}: {stats['bytes_read'] / 2**20:.1f} MiB read by rank 0 "
              f"in {stats['seconds']:.2f} s", flush=True)
