"""The SPMD pretraining loop: the GPU loop's steps with torch-xla's lazy execution.

Read top to bottom: `train()` enables SPMD, builds the mesh from the layout, builds the
shared model, annotates its shardings, builds the shared optimizer and lr schedule,
resumes from the newest complete checkpoint, then runs optimizer steps until the schedule
ends or a stop signal arrives. One process per host traces the whole global step; each
`torch_xla.sync()` cuts the traced graph and runs it on every device of the mesh. The
graph is the same every step (the lr is fed as data, not baked in), so XLA compiles
three programs in all: the first step (no optimizer state yet), later steps, evaluation.
"""

from __future__ import annotations

import functools
import math
import resource
import sys
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

from specc.runtime.io import MetricsWriter, atomic_write_json
from specc.runtime.tpu import spmd
from specc.runtime.tpu.checkpoint import load_checkpoint, newest_intact, save_checkpoint
from specc.runtime.train.checkpoint import diverged
from specc.runtime.tpu.layout import AXES, MeshShape
from specc.runtime.train.data import BatchLayout, SequenceStream, open_streams
from specc.runtime.train.loop import EXIT_REQUEUE, StopSignal, TrainSettings, cross_entropy
from specc.runtime.train.model import Transformer, build_model, num_parameters
from specc.runtime.train.optim import build_lr_scheduler, build_optimizer
from specc.spec.capabilities import TPU, TPU_PRECISIONS
from specc.spec.parallel import ParallelSpec


def init_hosts() -> None:
    """A gloo process group over the hosts (XLA's own rendezvous) for barriers and stop flags.

    Single-host runs need none: the one process drives every local device.
    """
    if xr.process_count() > 1 and not dist.is_initialized():
        import torch_xla.distributed.xla_backend  # noqa: F401  registers the xla:// init method
        dist.init_process_group("gloo", init_method="xla://")


def apply_recompute(model: Transformer, mode: str) -> None:
    """Recompute each block in the backward pass (torch-xla's checkpoint, whose optimization
    barriers stop XLA's CSE from undoing it). `selective` has no XLA equivalent here: it is
    refused (validate's R195 says so first, `capabilities.TPU.recompute_modes`), never run as full."""
    if mode not in TPU.recompute_modes:
        raise ValueError(f"recompute: {mode} is not run by the TPU runtime (it has "
                         f"{', '.join(sorted(TPU.recompute_modes))}); use recompute: full")
    if mode == "none":
        return
    from torch_xla.utils.checkpoint import checkpoint

    for layer in model.layers.values():
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


def agree(flags: list[int]) -> list[int]:
    """Element-wise max over all hosts, so every host stops or checkpoints together."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return flags
    tensor = torch.tensor(flags, dtype=torch.int32)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return [int(v) for v in tensor.tolist()]


def peak_memory_gib() -> float:
    """Peak HBM of this host's first chip on TPU; on XLA's CPU backend the process's peak RSS."""
    if xr.device_type() == "TPU":
        return xm.get_memory_info(torch_xla.device())["peak_bytes_used"] / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


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
    apply_recompute(model, settings.parallel.recompute)
    return model, mesh, shape


def write_sharding(path: Path, model: nn.Module, shape: MeshShape) -> None:
    """Record the mesh and each parameter's XLA sharding (`{devices=[2,2]0,2,1,3}`): the layout
    actually applied, for users and tests to inspect."""
    shardings = {name: torch_xla._XLAC._get_xla_sharding_spec(param) or "{replicated}"
                 for name, param in model.named_parameters()}
    atomic_write_json(path, {"mesh": dict(zip(AXES, shape.shape)), "parameters": shardings})


def train(settings: TrainSettings) -> dict:
    """Run (or resume) pretraining; returns a summary. Exits with EXIT_REQUEUE after a signal checkpoint."""
    schedule, parallel = settings.schedule, settings.parallel
    check_precision(parallel)
    spmd.enable_spmd()
    init_hosts()
    torch.manual_seed(schedule.seed)
    xm.set_rng_state(schedule.seed)
    total_steps = schedule.total_steps()
    global_batch = schedule.batch_sequences()
    if total_steps is None or global_batch is None:
        raise ValueError("schedule needs steps (or token_budget) and global_batch_size (or global_batch_tokens)")
    model, mesh, shape = build(settings)
    layout = BatchLayout(global_batch, shape.batch_shards, parallel.micro_batch)
    train_stream, validation = open_streams(settings.shard_dir, schedule.seq_len, schedule.seed)
    optimizer = build_optimizer([model], schedule, settings.model, "xla")
    scheduler = build_lr_scheduler(optimizer, schedule, total_steps)
    steps = SpmdSteps(model, mesh, parallel, layout)

    checkpoint_dir = settings.out_dir / "checkpoints"
    start_step, loss_value = 0, float("nan")
    resume = newest_intact(checkpoint_dir, "pretrain_tpu")
    if resume is not None:
        meta = load_checkpoint(resume, model, optimizer, scheduler)
        start_step, loss_value = meta["step"], meta.get("last_logged_loss", float("nan"))
    last_step = min(total_steps, settings.max_steps or total_steps)
    tokens_per_step = global_batch * schedule.seq_len
    predicted = settings.predicted or {}
    is_main = xr.process_index() == 0
    if is_main:
        write_sharding(settings.out_dir / "sharding.json", model, shape)
        print(f"pretrain_tpu: {num_parameters(model):,} parameters; SPMD mesh data {shape.data} fsdp {shape.fsdp} "
              f"tensor {shape.tensor} over {shape.num_devices} {xr.device_type()} devices on {xr.process_count()} "
              f"host(s); global batch {global_batch} x {schedule.seq_len} = {tokens_per_step:,} tokens/step "
              f"(micro-batch {layout.micro_batch} per device, grad accum {layout.grad_accum}); "
              f"steps {start_step}->{last_step}", flush=True)

    stopper = StopSignal()
    metrics = MetricsWriter(settings.out_dir / "metrics.jsonl") if is_main else None
    last_save = time.monotonic()
    window_start, window_steps = time.perf_counter(), 0
    step = start_step
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
        if step % schedule.log_interval == 0 or step == last_step or step == start_step + 1:
            loss_value = float(loss)  # waits for this step's execution
            # execution is asynchronous: time per step is the mean since the last logged step
            step_s = (time.perf_counter() - window_start) / window_steps
            window_start, window_steps = time.perf_counter(), 0
            tokens_per_s = tokens_per_step / step_s
            record = {"step": step, "loss": loss_value, "lr": lr, "grad_norm": float(grad_norm), "step_s": step_s,
                      "tokens_per_s": tokens_per_s, "peak_memory_gib": peak_memory_gib(),
                      "xla_compiles": num_compiles()}
            if predicted.get("flops_per_token") and predicted.get("peak_tflops"):
                record["mfu"] = (predicted["flops_per_token"] * tokens_per_s
                                 / (predicted["peak_tflops"] * 1e12 * shape.num_devices))
            if predicted.get("step_s"):
                record["predicted_step_s"] = predicted["step_s"]
            if predicted.get("peak_memory_gib"):
                record["predicted_peak_memory_gib"] = predicted["peak_memory_gib"]
        if schedule.eval_interval and (step % schedule.eval_interval == 0 or step == last_step):
            record = record or {"step": step}
            record["val_loss"] = evaluate(steps, validation, schedule.eval_batches)
            window_start, window_steps = time.perf_counter(), 0
        if record is not None and metrics is not None:
            metrics.write(**record)
            print(" ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in record.items()),
                  flush=True)

        due = schedule.checkpoint_every is not None and time.monotonic() - last_save >= schedule.checkpoint_every * 60
        signalled, due = agree([stopper.received, int(due)])
        save_now = step % schedule.checkpoint_interval == 0 or signalled or due or step == last_step
        if save_now or "loss" in (record or {}):
            # reading the loss waits for the step, so it is checked at logged steps and before every
            # save (not every step): a diverged state is never checkpointed; the loss is replicated,
            # so every host stops together
            loss_value = float(loss)
            if not math.isfinite(loss_value):
                if metrics is not None:
                    metrics.close()
                raise diverged(step, loss_value, checkpoint_dir)
        if save_now:
            save_checkpoint(checkpoint_dir, step, model, optimizer, scheduler, schedule.keep_checkpoints,
                            {"sequences_consumed": step * global_batch, "last_logged_loss": loss_value})
            last_save = time.monotonic()
            window_start, window_steps = time.perf_counter(), 0
        if signalled and step < last_step:
            if is_main:
                print(f"pretrain_tpu: signal {signalled} received; checkpointed step {step}, "
                      f"exiting {EXIT_REQUEUE} to be requeued", flush=True)
            if metrics is not None:
                metrics.close()
            sys.exit(EXIT_REQUEUE)

    if metrics is not None:
        metrics.close()
    return {"model": model, "mesh": mesh, "steps": last_step, "final_loss": loss_value}
