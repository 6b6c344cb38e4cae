"""The SPMD pretraining loop: the GPU loop's steps with torch-xla's lazy execution.

Read top to bottom: `train()` enables SPMD, builds the mesh from the layout, builds the
shared model, annotates its shardings, builds the shared optimizer and lr schedule,
resumes from the newest complete checkpoint, then runs optimizer steps until the schedule
ends or a stop signal arrives. One process per host traces the whole global step; each
`torch_xla.sync()` cuts the traced graph and runs it on every device of the mesh. The
graph is the same every step (the lr is fed as data, not baked in), so XLA compiles
three programs in all: the first step (no optimizer state yet), later steps, evaluation.
Resume, signals, checkpoint cadence, the NaN stop, metrics and the requeue exit are the
lifecycle every training loop shares (`specc.runtime.lifecycle`).
"""

from __future__ import annotations

import functools
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
import torch_xla
import torch_xla.core.xla_model as xm
import torch_xla.debug.metrics as met
import torch_xla.distributed.spmd as xs
import torch_xla.runtime as xr
from torch import nn

from specc.runtime.io import atomic_write_json
from specc.runtime.lifecycle import Cadence, Lifecycle, peak_rss_gib
from specc.runtime.tpu import spmd
from specc.runtime.tpu.checkpoint import load_checkpoint, save_checkpoint
from specc.runtime.tpu.layout import AXES, MeshShape
from specc.runtime.train.data import BatchLayout, SequenceStream, open_streams
from specc.runtime.train.loop import TrainSettings, cross_entropy
from specc.runtime.train.model import Transformer, build_model, num_parameters
from specc.runtime.train.optim import build_lr_scheduler, build_optimizer
from specc.spec.capabilities import TPU, TPU_PRECISIONS
from specc.spec.parallel import ParallelSpec
from specc.spec.parallel_dims import is_recomputed_layer


def init_hosts() -> None:
    """A gloo process group over the hosts (XLA's own rendezvous) for barriers and stop flags.

    Single-host runs need none: the one process drives every local device.
    """
    if xr.process_count() > 1 and not dist.is_initialized():
        import torch_xla.distributed.xla_backend  # noqa: F401  registers the xla:// init method
        dist.init_process_group("gloo", init_method="xla://")


def apply_recompute(model: Transformer, mode: str, every: int = 1) -> None:
    """Recompute each block (with `every` = n, every n-th block by model-wide id,
    `parallel_dims.is_recomputed_layer`) in the backward pass (torch-xla's checkpoint, whose optimization
    barriers stop XLA's CSE from undoing it). `selective` has no XLA equivalent here: it is
    refused (validate's R195 says so first, `capabilities.TPU.recompute_modes`), never run as full."""
    if mode not in TPU.recompute_modes:
        raise ValueError(f"recompute: {mode} is not run by the TPU runtime (it has "
                         f"{', '.join(sorted(TPU.recompute_modes))}); use recompute: full")
    if mode == "none":
        return
    from torch_xla.utils.checkpoint import checkpoint

    for key, layer in model.layers.items():
        if is_recomputed_layer(int(key), every):
            layer.forward = functools.partial(checkpoint, layer.forward)


def check_precision(parallel: ParallelSpec) -> None:
    """This runtime trains in bf16 (autocast) or fp32 only (`capabilities.TPU_PRECISIONS`);
    anything else is refused before a graph is traced, never run as something else."""
    if parallel.precision not in TPU_PRECISIONS:
        raise ValueError(f"precision {parallel.precision} does not run on the TPU runtime, which trains in "
                         f"{' or '.join(sorted(TPU_PRECISIONS))} only (`specc validate` reports this as R118)")


def autocast_context(parallel: ParallelSpec):
    """bf16 autocast on the XLA device, or none for fp32. Master weights and optimizer state
    stay fp32."""
    check_precision(parallel)
    if parallel.precision == "fp32":
        return nullcontext()
    return torch.autocast("xla", dtype=torch.bfloat16)


@dataclass
class SpmdSteps:
    """Forward/backward of one optimizer step and validation, traced over the global batch."""

    model: Transformer
    mesh: xs.Mesh
    parallel: ParallelSpec
    layout: BatchLayout
    """Global batch over `batch_shards` ranks: its micro-batches are global micro-batches
    of micro_batch x batch_shards sequences, one per gradient-accumulation step."""

    @property
    def global_micro(self) -> int:
        return self.layout.micro_batch * self.layout.dp

    def train_step(self, batch: torch.Tensor) -> torch.Tensor:
        """Mean loss over the global batch; gradients accumulate in the parameters' .grad."""
        tokens = spmd.shard_batch(batch, self.mesh)
        total = torch.zeros((), device=tokens.device)
        accum, micro = self.layout.grad_accum, self.global_micro
        for j in range(accum):
            chunk = tokens[j * micro:(j + 1) * micro]
            with autocast_context(self.parallel):
                logits = self.model(chunk[:, :-1])
            loss = cross_entropy(logits, chunk[:, 1:])
            (loss / accum).backward()
            total = total + loss.detach()
        return total / accum

    @torch.no_grad()
    def eval_loss(self, batch: torch.Tensor) -> torch.Tensor:
        tokens = spmd.shard_batch(batch, self.mesh)
        losses = []
        for j in range(0, tokens.shape[0], self.global_micro):
            chunk = tokens[j:j + self.global_micro]
            with autocast_context(self.parallel):
                logits = self.model(chunk[:, :-1])
            losses.append(cross_entropy(logits, chunk[:, 1:]))
        return torch.stack(losses).mean()


def clip_gradients(model: nn.Module, max_norm: float) -> torch.Tensor:
    """Global L2 gradient norm, then clip to max_norm (0 = no clipping), as the GPU path does.

    Under SPMD each gradient is one logical tensor, so the norm needs no per-mesh reduction;
    torch's clip multiplies by a clamped coefficient without a data-dependent branch, which
    keeps the traced graph identical every step.
    """
    params = [p for p in model.parameters() if p.grad is not None]
    if max_norm > 0:
        return torch.nn.utils.clip_grad_norm_(params, max_norm)
    return torch.nn.utils.get_total_norm([p.grad for p in params], 2.0)


def peak_memory_gib() -> float:
    """Peak HBM of this host's first chip on TPU; on XLA's CPU backend the process's peak RSS."""
    if xr.device_type() == "TPU":
        return xm.get_memory_info(torch_xla.device())["peak_bytes_used"] / 2**30
    return peak_rss_gib()


def num_compiles() -> int:
    """XLA programs compiled so far in this process (a rising count every step means recompiles)."""
    data = met.metric_data("CompileTime")
    return int(data[0]) if data else 0


def evaluate(steps: SpmdSteps, validation: SequenceStream, num_batches: int) -> float:
    """Mean validation loss over `num_batches` global batches read in file order."""
    steps.model.eval()
    global_batch = steps.layout.global_batch
    losses = [steps.eval_loss(validation.sequences(b * global_batch, global_batch)) for b in range(num_batches)]
    mean = torch.stack(losses).mean()
    torch_xla.sync()
    steps.model.train()
    return float(mean)


def build(settings: TrainSettings) -> tuple[Transformer, xs.Mesh, MeshShape]:
    """The shared model on the XLA device, sharded over the mesh the layout asks for."""
    if settings.parallel.loss == "chunked":  # validate rejects it first (R185); a hand-edited config stops here
        raise ValueError("parallel.loss: chunked does not run under XLA: use loss: auto or full "
                         "(the full logits, which XLA fuses)")
    mesh, shape = spmd.build_mesh(settings.parallel)
    model = spmd.to_device(build_model(settings.model, settings.schedule.seed))
    spmd.shard_parameters(model, mesh)
    spmd.shard_activations(model, mesh)
    apply_recompute(model, settings.parallel.recompute, settings.parallel.recompute_every)
    return model, mesh, shape


def write_sharding(path: Path, model: nn.Module, shape: MeshShape) -> None:
    """Record the mesh and each parameter's XLA sharding (`{devices=[2,2]0,2,1,3}`): the layout
    actually applied, for users and tests to inspect."""
    shardings = {name: torch_xla._XLAC._get_xla_sharding_spec(param) or "{replicated}"
                 for name, param in model.named_parameters()}
    atomic_write_json(path, {"mesh": dict(zip(AXES, shape.shape)), "parameters": shardings})


def train(settings: TrainSettings) -> dict:
    """Run (or resume) SPMD pretraining on this host's XLA devices; returns the model, mesh and a summary.
    A signal checkpoint exits with `lifecycle.EXIT_REQUEUE`."""
    schedule, parallel = settings.schedule, settings.parallel
    check_precision(parallel)
    spmd.enable_spmd()
    init_hosts()
    torch.manual_seed(schedule.seed)
    xm.set_rng_state(schedule.seed)
    lengths = settings.lengths()
    global_batch, last_step, tokens_per_step = lengths.global_batch, lengths.last_step, lengths.tokens_per_step
    model, mesh, shape = build(settings)
    layout = BatchLayout(global_batch, shape.batch_shards, parallel.micro_batch)
    train_stream, validation = open_streams(settings.shard_dir, schedule.seq_len, schedule.seed)
    optimizer = build_optimizer([model], schedule, settings.model, "xla")
    scheduler = build_lr_scheduler(optimizer, schedule, lengths.total_steps)
    steps = SpmdSteps(model, mesh, parallel, layout)

    is_main = xr.process_index() == 0
    # the hosts' stop flags travel over gloo, on the CPU
    life = Lifecycle("pretrain_tpu", settings.out_dir, main=is_main, device=torch.device("cpu"), echo=is_main,
                     memory=peak_memory_gib)
    meta = life.resume(lambda path: load_checkpoint(path, model, optimizer, scheduler))
    start_step = meta["step"] if meta is not None else 0
    if meta is not None:
        life.last_loss = meta.get("last_logged_loss", float("nan"))
    predicted = settings.predicted or {}
    if is_main:
        write_sharding(settings.out_dir / "sharding.json", model, shape)
        print(f"pretrain_tpu: {num_parameters(model):,} parameters; SPMD mesh data {shape.data} fsdp {shape.fsdp} "
              f"tensor {shape.tensor} over {shape.num_devices} {xr.device_type()} devices on {xr.process_count()} "
              f"host(s); global batch {global_batch} x {schedule.seq_len} = {tokens_per_step:,} tokens/step "
              f"(micro-batch {layout.micro_batch} per device, grad accum {layout.grad_accum}); "
              f"steps {start_step}->{last_step}", flush=True)

    # execution is asynchronous: time per step is the mean since the last logged step, leaving
    # out evaluation and checkpoints
    window_start, window_steps = time.perf_counter(), 0

    def save(step: int) -> None:
        nonlocal window_start, window_steps
        save_checkpoint(life.checkpoint_dir, step, model, optimizer, scheduler, schedule.keep_checkpoints,
                        {"sequences_consumed": step * global_batch, "last_logged_loss": life.last_loss})
        window_start, window_steps = time.perf_counter(), 0

    step = start_step
    with life.start(start_step, last_step, Cadence(schedule.checkpoint_interval, schedule.checkpoint_every)):
        while step < last_step:
            batch = train_stream.sequences(step * global_batch, global_batch)
            loss = steps.train_step(batch)
            grad_norm = clip_gradients(model, schedule.grad_clip)
            lr = scheduler.get_last_lr()[0]
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            torch_xla.sync()
            step += 1
            window_steps += 1

            record = None
            if life.logs(step, schedule.log_interval):
                loss_value = float(loss)  # waits for this step's execution
                step_s = (time.perf_counter() - window_start) / window_steps
                window_start, window_steps = time.perf_counter(), 0
                record = life.step_record(step, loss_value, lr, float(grad_norm), step_s, tokens_per_step, predicted,
                                          shape.num_devices)
                record["xla_compiles"] = num_compiles()
            if life.evaluates(step, schedule.eval_interval):
                record = record or {"step": step}
                record["val_loss"] = evaluate(steps, validation, schedule.eval_batches)
                window_start, window_steps = time.perf_counter(), 0
            # the loss is replicated, so every host reads the same value and stops together
            life.end_of_step(step, record, loss, save)
    return {"model": model, "mesh": mesh, "steps": last_step, "final_loss": life.last_loss}
