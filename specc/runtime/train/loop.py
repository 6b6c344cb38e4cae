"""The pretraining loop: build, parallelize, resume, then step / evaluate / log / checkpoint.

Read top to bottom: `train()` sets up the process group and mesh, builds the model parts
(one per pipeline chunk, else the whole model), the optimizer and lr schedule, resumes
from the newest complete checkpoint, then runs optimizer steps until the schedule ends or
a stop signal (SIGTERM/SIGUSR2) arrives. Resume, signals, checkpoint cadence, the NaN stop,
metrics and the requeue exit are the lifecycle every training loop shares
(`specc.runtime.lifecycle`); this module owns the process group, the mesh and the step.
"""

from __future__ import annotations

import os
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.distributed.tensor import DTensor

from specc.runtime.lifecycle import Cadence, Lifecycle
from specc.runtime.train import parallelize as par
from specc.runtime.train import precision as prec
from specc.runtime.train.checkpoint import all_gather, load_checkpoint, save_checkpoint
from specc.runtime.train.data import BatchLayout, SequenceStream, local_batch, open_streams, verify_shards_once
from specc.runtime.train.loss import runtime_loss
from specc.runtime.hf.load import initial_model, load_initial_weights
from specc.runtime.train.model import num_parameters
from specc.runtime.train.moe import AuxLossScaler
from specc.runtime.train.optim import build_lr_scheduler, build_optimizer
from specc.spec import parallel_dims
from specc.spec.model import ModelSpec
from specc.spec.parallel import ParallelSpec
from specc.spec.schedule import ScheduleSpec

@dataclass
class TrainSettings:
    """What the loop needs, already validated by the spec models."""

    model: ModelSpec
    parallel: ParallelSpec
    schedule: ScheduleSpec
    out_dir: Path
    shard_dir: Path
    predicted: dict | None = None
    accelerator: str = "cpu"
    max_steps: int | None = None
    """Stop after this step even if the schedule is longer (tests; the lr schedule still uses the full length)."""

    def lengths(self) -> RunLengths:
        """The schedule's lengths in steps and sequences (both runtimes train by them)."""
        total_steps, global_batch = self.schedule.total_steps(), self.schedule.batch_sequences()
        if total_steps is None or global_batch is None:
            raise ValueError("schedule needs steps (or token_budget) and global_batch_size (or global_batch_tokens)")
        return RunLengths(total_steps, global_batch, min(total_steps, self.max_steps or total_steps),
                          global_batch * self.schedule.seq_len)


@dataclass(frozen=True)
class RunLengths:
    """How long a pretraining run is, from its schedule."""

    total_steps: int
    """Optimizer steps of the whole schedule (what the lr schedule spans)."""
    global_batch: int
    """Sequences per optimizer step, over all data-parallel ranks."""
    last_step: int
    """Where this run stops: the schedule's end, or `max_steps`."""
    tokens_per_step: int
    """global_batch x seq_len."""


@dataclass
class Runtime:
    """Process-group facts every helper needs."""

    rank: int
    world_size: int
    device: torch.device
    dims: parallel_dims.ParallelDims
    meshes: dict | None
    """Mesh axes and flattened views by name (`parallelize.build_mesh`); None on one process."""
    dp_rank: int = 0
    pp_rank: int = 0
    groups: dict = field(default_factory=dict)
    cp: object | None = None
    """The ContextParallel helper when cp > 1 (shards each batch's sequence dimension)."""

    def group(self, name: str):
        return self.groups.get(name)


def init_runtime(parallel: ParallelSpec) -> Runtime:
    """Process group from the torchrun/Slurm environment (NCCL on GPU, gloo on CPU) and the mesh.

    TPU seam: a torch-xla entry would replace this function (PJRT device, SPMD mesh) and
    reuse build_model/the loop unchanged.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if torch.cuda.is_available():
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    dims = parallel_dims.resolve(parallel, world_size)
    if world_size == 1:
        return Runtime(rank, 1, device, dims, None)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    meshes = par.build_mesh(dims, device.type)
    runtime = Runtime(rank, world_size, device, dims, meshes,
                      dp_rank=meshes["dp"].get_local_rank(), pp_rank=meshes["pp"].get_local_rank())
    runtime.groups = {name: meshes[name].get_group() for name in ("dp", "dp_cp", "pp", "tp", "edp")}
    return runtime


def build_parts(settings: TrainSettings, rt: Runtime) -> tuple[list[nn.Module], list[tuple[int, nn.Module]]]:
    """The model parts this rank runs, parallelized: [(stage index, chunk)] under pp, else [(0, model)]."""
    parallel, dims = settings.parallel, rt.dims
    par.check_model_fits_layout(settings.model, parallel, dims, settings.schedule.seq_len, settings.accelerator)
    model = initial_model(settings.model, settings.schedule.seed)  # meta device under model.init_from
    model.set_loss(parallel.loss, parallel.loss_chunk_tokens)
    chunks = par.split_pipeline(model, parallel, rt.pp_rank) if dims.pp > 1 else [(0, model)]
    for _, part in chunks:
        if not settings.model.init_from:
            part.to(rt.device)
        if parallel.precision == "fp8":
            converted = prec.apply_float8(part, parallel.fp8_recipe, dims.tp,
                                          prec.uses_float8_all_gather("fp8", parallel.fp8_recipe, dims.dp_cp))
            if rt.rank == 0:
                bf16 = "attention, the output head" + (", routers and routed experts" if settings.model.moe else "")
                print(f"pretrain: fp8 ({parallel.fp8_recipe} scaling) matmuls in {len(converted)} Linear layers; "
                      f"{bf16} in bf16", flush=True)
        if dims.tp > 1:
            par.apply_tp(part, rt.meshes["tp"], parallel.sp)
        if dims.ep > 1:
            par.apply_ep(part, rt.meshes["ep"])
        if dims.cp > 1:
            rt.cp = par.apply_cp(part, rt.meshes["cp"], parallel.cp_load_balance)
        par.apply_ac(part, parallel.recompute, parallel.selective_policy, parallel.recompute_every)
        if parallel.compile:
            par.apply_compile(part)
        if dims.dp_cp > 1:
            reshard = (parallel.fsdp or parallel.zero_stage == 3) and dims.pp == 1
            par.apply_fsdp(part, par.fsdp_mesh(rt.meshes, dims), reshard, par.param_dtype_for(parallel.precision),
                           expert_mesh=rt.meshes["edp"] if dims.ep > 1 else None)
        if settings.model.init_from:
            load_initial_weights(part, settings.model, rt.device, rt.rank)
    return [part for _, part in chunks], chunks


def autocast_context(parallel: ParallelSpec, rt: Runtime):
    """Autocast to the compute dtype (bf16, fp16; bf16 around fp8's Linears) when FSDP's
    mixed-precision policy is not doing the casting."""
    dtype = prec.compute_dtype(parallel.precision)
    if dtype is None or rt.dims.dp_cp > 1:
        return nullcontext()
    return torch.autocast(rt.device.type, dtype=dtype)


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean next-token loss in fp32; vocab-sharded DTensor logits need `vocab_parallel_loss`."""
    return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten())


def mean_negative_logprob(logprobs: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
    """The mean next-token loss from per-token log-probabilities (the chunked head's output); `targets`
    is unused, for the pipeline schedule's `loss_fn(output, target)` signature."""
    return -logprobs.mean()


def next_token_loss(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, chunked: bool,
                    autocast=nullcontext) -> torch.Tensor:
    """Mean next-token loss of one micro-batch as `parallel.loss` runs it: `chunked` passes the targets to
    the model, whose head returns log-probabilities chunk by chunk (no full logits); `full` computes the
    logits, then `cross_entropy` (under `vocab_parallel_loss`, which the caller enters, when tp shards them)."""
    with autocast():
        output = model(inputs, targets=targets) if chunked else model(inputs)
    return mean_negative_logprob(output) if chunked else cross_entropy(output, targets)


def plain(loss: torch.Tensor) -> torch.Tensor:
    """A detached local tensor of a loss (loss_parallel returns a replicated DTensor)."""
    loss = loss.detach()
    return loss.full_tensor() if isinstance(loss, DTensor) else loss


def grad_norm_and_clip(parts: list[nn.Module], max_norm: float, rt: Runtime, loss_scale: float = 1.0) -> float:
    """Global L2 gradient norm over every layout, then clip (0 = no clipping).

    DTensor gradients are grouped by mesh (FSDP, TP and EP shards live on different meshes),
    each group's norm reduced over its mesh; pipeline stages add their squares. Under fp16 the
    gradients carry the loss scale: the norm is reported unscaled and the one multiplication
    both unscales and clips; a non-finite norm (an overflow, the same on every rank) is returned
    untouched for the `LossScaler` to skip the step.
    """
    groups: dict[object, list[torch.Tensor]] = {}
    params = [p for part in parts for p in part.parameters() if p.grad is not None]
    for param in params:
        key = (param.grad.device_mesh, param.grad.placements) if isinstance(param.grad, DTensor) else None
        groups.setdefault(key, []).append(param.grad)
    squares = torch.zeros((), device=rt.device, dtype=torch.float32)
    for grads in groups.values():
        norm = torch.nn.utils.get_total_norm(grads, 2.0, foreach=True)
        if isinstance(norm, DTensor):
            norm = norm.full_tensor()
        squares = squares + norm.float() ** 2
    if rt.dims.pp > 1:
        dist.all_reduce(squares, group=rt.group("pp"))
    if rt.world_size > 1:
        # 2-D DTensor norms reduce one mesh axis after the other, so ranks may differ in the
        # last bit; one max makes every rank clip by the same factor (replicas stay identical)
        dist.all_reduce(squares, op=dist.ReduceOp.MAX)
    total = squares.sqrt()
    if loss_scale != 1.0:
        total = total / loss_scale
        if not torch.isfinite(total):
            return float(total)  # an overflow: the LossScaler skips this step
    coefficient = float(torch.clamp(max_norm / (total + 1e-6), max=1.0)) if max_norm > 0 else 1.0
    coefficient /= loss_scale
    if coefficient < 1.0 or loss_scale != 1.0:
        for param in params:
            param.grad.mul_(coefficient)
    return float(total)


@dataclass
class StepFunctions:
    """Forward/backward for one optimizer step and validation, for a plain or pipelined model."""

    settings: TrainSettings
    rt: Runtime
    parts: list[nn.Module]
    chunks: list[tuple[int, nn.Module]]
    layout: BatchLayout
    schedule: object | None = None
    scaler: prec.LossScaler | None = None
    """fp16's dynamic loss scaler; gradients come out multiplied by its scale."""
    loss_multiplier: float = 1.0
    """What the pipeline's loss function multiplies by (the loss scale during a training step)."""

    def __post_init__(self) -> None:
        self.chunked = runtime_loss(self.settings.parallel.loss) == "chunked"
        if self.rt.dims.pp > 1:
            self.schedule = par.build_pipeline_schedule(self.chunks, self.settings.parallel, self.rt.group("pp"),
                                                        self.layout.grad_accum, self._pipeline_loss, self.rt.device)
            self.num_stages = self.settings.parallel.pp * self.settings.parallel.vpp
            self.stage_ids = [index for index, _ in self.chunks]
            # the pipeline schedule divides gradients by the micro-batch count itself
            AuxLossScaler.scale = 1.0
        else:
            AuxLossScaler.scale = 1.0 / self.layout.grad_accum

    def split(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs and next-token targets on the device; this rank's tokens under context parallel."""
        inputs, targets = batch[:, :-1].to(self.rt.device), batch[:, 1:].to(self.rt.device)
        if self.rt.cp is not None:
            inputs, targets = self.rt.cp.shard(inputs), self.rt.cp.shard(targets)
        return inputs, targets

    def train_step(self, batch: torch.Tensor) -> torch.Tensor:
        """Forward + backward over the local batch; returns the mean loss (0 on non-last pp stages)."""
        inputs, targets = self.split(batch)
        self.local_tokens = inputs.numel()
        if self.schedule is not None:
            return self._pipeline(inputs, targets, train=True)
        model, accum, micro = self.parts[0], self.layout.grad_accum, self.layout.micro_batch
        total = torch.zeros((), device=self.rt.device)
        for j in range(accum):
            if hasattr(model, "set_requires_gradient_sync"):
                # `every`: reduce-scatter after each micro-batch (sharded gradients, least memory);
                # `last`: once per step, holding unsharded gradients until then (least traffic)
                model.set_requires_gradient_sync(self.settings.parallel.grad_sync == "every" or j == accum - 1)
            with self.loss_context():
                loss = next_token_loss(model, inputs[j * micro:(j + 1) * micro], targets[j * micro:(j + 1) * micro],
                                       self.chunked, self.autocast)
                (loss / accum if self.scaler is None else loss * (self.scaler.scale / accum)).backward()
            total += plain(loss)
        return total / accum

    def autocast(self):
        return autocast_context(self.settings.parallel, self.rt)

    def _pipeline_loss(self, output: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The last stage's loss inside the pipeline schedule: from the chunked head's log-probabilities
        or the full logits, times fp16's loss scale during a training step."""
        loss = mean_negative_logprob(output) if self.chunked else cross_entropy(output, targets)
        return loss if self.loss_multiplier == 1.0 else loss * self.loss_multiplier

    def loss_context(self):
        """`loss_parallel` for the full loss over vocab-sharded logits; the chunked head reduces over
        the tp group itself (`specc.runtime.train.loss`)."""
        return nullcontext() if self.chunked else par.vocab_parallel_loss(self.settings.model, self.rt.dims.tp)

    @torch.no_grad()
    def eval_loss(self, batch: torch.Tensor) -> torch.Tensor:
        inputs, targets = self.split(batch)
        if self.schedule is not None:
            return self._pipeline(inputs, targets, train=False)
        model, micro = self.parts[0], self.layout.micro_batch
        losses = []
        for j in range(0, inputs.shape[0], micro):
            with self.loss_context():
                losses.append(plain(next_token_loss(model, inputs[j:j + micro], targets[j:j + micro], self.chunked,
                                                    self.autocast)))
        return torch.stack(losses).mean()

    def _pipeline(self, inputs: torch.Tensor, targets: torch.Tensor, train: bool) -> torch.Tensor:
        has_first, has_last = 0 in self.stage_ids, self.num_stages - 1 in self.stage_ids
        losses: list[torch.Tensor] = []
        args = (inputs,) if has_first else ()
        kwargs = {"target": targets, "losses": losses} if has_last else {}
        self.loss_multiplier = self.scaler.scale if train and self.scaler is not None else 1.0
        if self.chunked:  # every stage gets the targets; only the last one's head uses them
            kwargs["targets"] = targets
        # the schedule computes the loss and runs backward inside; autocast as without pipelining
        with self.loss_context(), autocast_context(self.settings.parallel, self.rt):
            (self.schedule.step if train else self.schedule.eval)(*args, **kwargs)
        multiplier, self.loss_multiplier = self.loss_multiplier, 1.0
        if has_last:
            return torch.stack([plain(loss) for loss in losses]).mean() / multiplier
        return torch.zeros((), device=self.rt.device)


def local_parameters(parts: list[nn.Module]) -> int:
    """Parameter elements stored on this rank (shards, not the full DTensor sizes)."""
    return sum((p.to_local() if isinstance(p, DTensor) else p).numel() for part in parts for p in part.parameters())


def reduce_loss(loss: torch.Tensor, rt: Runtime) -> float:
    """Mean over data- and context-parallel ranks, taken from the last pipeline stage."""
    if rt.world_size == 1:
        return float(loss)
    loss = loss.detach().clone().float()
    if rt.dims.pp > 1:
        dist.all_reduce(loss, group=rt.group("pp"))  # only the last stage holds a non-zero loss
    dist.all_reduce(loss, group=rt.group("dp_cp"))
    return float(loss) / rt.dims.dp_cp


def evaluate(steps: StepFunctions, validation: SequenceStream, settings: TrainSettings, rt: Runtime) -> float:
    """Mean validation loss over `eval_batches` global batches read in file order."""
    for part in steps.parts:
        part.eval()
    layout, losses = steps.layout, []
    for b in range(settings.schedule.eval_batches):
        start = b * layout.global_batch + rt.dp_rank * layout.local_batch
        losses.append(reduce_loss(steps.eval_loss(validation.sequences(start, layout.local_batch)), rt))
    for part in steps.parts:
        part.train()
    return sum(losses) / len(losses)


def train(settings: TrainSettings) -> dict:
    """Run (or resume) pretraining; returns a summary. Exits with EXIT_REQUEUE (`specc.runtime.lifecycle`)
    after a signal checkpoint."""
    schedule, parallel = settings.schedule, settings.parallel
    rt = init_runtime(parallel)
    prec.check_precision_runs(parallel.precision, settings.accelerator, rt.device)
    torch.manual_seed(schedule.seed)
    lengths = settings.lengths()
    total_steps, global_batch, last_step, tokens_per_step = (lengths.total_steps, lengths.global_batch,
                                                             lengths.last_step, lengths.tokens_per_step)
    layout = BatchLayout(global_batch, rt.dims.dp, parallel.micro_batch)
    verify_shards_once(settings.shard_dir, settings.out_dir / "inputs-verified.json", rt.rank, rt.world_size,
                       all_gather)
    train_stream, validation = open_streams(settings.shard_dir, schedule.seq_len, schedule.seed)

    parts, chunks = build_parts(settings, rt)
    optimizers = [build_optimizer([part], schedule, settings.model, rt.device.type) for part in parts]
    schedulers = [build_lr_scheduler(opt, schedule, total_steps) for opt in optimizers]
    scaler = prec.LossScaler() if parallel.precision == "fp16" else None
    steps = StepFunctions(settings, rt, parts, chunks, layout, scaler=scaler)
    float8_all_gather = prec.uses_float8_all_gather(parallel.precision, parallel.fp8_recipe, rt.dims.dp_cp)

    is_main = rt.rank == 0
    life = Lifecycle("pretrain", settings.out_dir, main=is_main, device=rt.device, echo=is_main)
    meta = life.resume(lambda path: load_checkpoint(path, parts, optimizers, schedulers))
    start_step = meta["step"] if meta is not None else 0
    if scaler is not None and meta is not None and "loss_scaler" in meta:
        scaler.load_state_dict(meta["loss_scaler"])
    predicted = settings.predicted or {}
    if is_main:
        params = sum(num_parameters(part) for part in parts)
        where = " on pipeline rank 0" if rt.dims.pp > 1 else ""
        print(f"pretrain: {params:,} parameters{where}; dp {rt.dims.dp} tp {rt.dims.tp} pp {rt.dims.pp} cp {rt.dims.cp} "
              f"ep {rt.dims.ep}; global batch {global_batch} x {schedule.seq_len} = {tokens_per_step:,} tokens/step "
              f"(micro-batch {layout.micro_batch}, grad accum {layout.grad_accum}); "
              f"{total_steps * tokens_per_step:,} tokens in all; steps {start_step}->{last_step}", flush=True)

    def save(step: int) -> None:
        extra = {"sequences_consumed": step * global_batch}
        if scaler is not None:
            extra["loss_scaler"] = scaler.state_dict()
        save_checkpoint(life.checkpoint_dir, step, parts, optimizers, schedulers, schedule.keep_checkpoints, extra)

    step = start_step
    with life.start(start_step, last_step, Cadence(schedule.checkpoint_interval, schedule.checkpoint_every)):
        while step < last_step:
            begin = time.perf_counter()
            batch = local_batch(train_stream, layout, step, rt.dp_rank)
            loss = steps.train_step(batch)
            if rt.dims.ep > 1:
                par.sync_expert_grads(parts, rt.meshes["edp"], rt.dims.dp_cp)
            grad_norm = grad_norm_and_clip(parts, schedule.grad_clip, rt, scaler.scale if scaler else 1.0)
            lr = schedulers[0].get_last_lr()[0]
            # the loss is checked before the update (the verdict is the same on every rank: it is
            # reduced), so a diverged step never reaches the weights or a checkpoint
            loss_value = reduce_loss(loss, rt)
            life.check_finite(step + 1, loss_value)
            # fp16: an overflowed step (same verdict on every rank) updates nothing, not even the lr
            # schedule (Megatron's skipped iteration); the scale is halved for the next one
            update = scaler.update(grad_norm) if scaler is not None else True
            for opt, sched in zip(optimizers, schedulers):
                if update:
                    opt.step()
                    sched.step()
                opt.zero_grad(set_to_none=True)
            if float8_all_gather and update:
                # the next all-gather's fp8 weight scales in one all-reduce (before the first step
                # each weight all-reduces its own amax)
                prec.precompute_float8_scales(parts)
            if rt.device.type == "cuda":
                torch.cuda.synchronize(rt.device)
            step_s = time.perf_counter() - begin
            step += 1

            record = None
            if life.logs(step, schedule.log_interval):
                record = life.step_record(step, loss_value, lr, grad_norm, step_s, tokens_per_step, predicted,
                                          rt.world_size)
                if scaler is not None:
                    record.update(loss_scale=scaler.scale, skipped_steps=scaler.skipped_steps)
                if step == start_step + 1:
                    # what rank 0 holds and computes: evidence of the layout in the log
                    record["layout"] = {"dp": rt.dims.dp, "tp": rt.dims.tp, "pp": rt.dims.pp, "cp": rt.dims.cp,
                                        "ep": rt.dims.ep, "local_parameters": local_parameters(parts),
                                        "local_tokens": steps.local_tokens}
            if life.evaluates(step, schedule.eval_interval):
                record = record or {"step": step}
                record["val_loss"] = evaluate(steps, validation, settings, rt)
            life.end_of_step(step, record, loss_value, save)
    return {"rt": rt, "parts": parts, "steps": last_step, "final_loss": life.last_loss}
