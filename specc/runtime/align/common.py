"""What every alignment stage reads from its config and writes when it finishes.

params (built by `specc.emit.configs.alignment.build_alignment_configs`):
  stage            the AlignmentStage json (re-validated here)
  model            the ModelSpec json of the pretrained model
  init_checkpoint  model directory to start from (relative to run_dir, or absolute)
  tokenizer        tokenizer.json (relative to run_dir, or absolute)
  seq_len          the stage's sequence length (`specc.spec.alignment.stage_seq_len`: what the plan
                   charged; the stage trains and generates within it)
  seed, checkpoint_interval
  loss, loss_chunk_tokens  the spec's `parallel.loss` and `parallel.loss_chunk_tokens`: how policies
                   compute their log-probabilities (chunked head, or the full logits)
  reference_checkpoint  (dpo) frozen reference model directory
  reward_checkpoint     (ppo) the reward model's directory
  precision, recompute, selective_policy  how the distributed runtime computes
                   (`specc.runtime.align.distributed`: the plan's alignment precision, the spec's
                   `parallel.recompute`); absent: fp32, no recompute
  devices          the devices the plan charged (the stage runs on WORLD_SIZE processes)
  predicted        the plan's step_s and peak_memory_gib for the stage, logged beside the measurements
  max_steps        (optional) stop after this many steps (tests)
Data paths inside `stage` are absolute (resolved against the spec's directory), or relative to
run_dir when they name an earlier constitutional stage's output (`<name>/data.jsonl`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pydantic import TypeAdapter

from specc.runtime.align.chat import ChatTemplate, load_template
from specc.runtime.align.distributed import AlignRuntime, init_align_runtime
from specc.runtime.align.trainer import LoopSettings
from specc.runtime.infer.weights import WEIGHTS, TextCodec, file_sha256, load_codec, load_model, write_safetensors
from specc.runtime.io import MetricsWriter, atomic_write_json, mark_success
from specc.spec.alignment import AlignmentStage

STAGE_ADAPTER = TypeAdapter(AlignmentStage)


def resolve(run_dir: Path, path: str) -> Path:
    candidate = Path(path)
    return candidate if candidate.is_absolute() else run_dir / candidate


@dataclass
class StageContext:
    config: dict
    run_dir: Path
    out_dir: Path
    stage: object
    codec: TextCodec
    template: ChatTemplate
    seq_len: int
    seed: int
    checkpoint_interval: int
    loss: str = "auto"
    loss_chunk_tokens: int = 1024
    rt: AlignRuntime | None = None
    """The process group and model placement (`specc.runtime.align.distributed`)."""

    def path(self, key: str) -> Path:
        return resolve(self.run_dir, self.config["params"][key])

    def language_model(self, key: str, trained: bool = True):
        """The model saved under params[key], its head computing log-probabilities as the spec's
        `parallel.loss` says (`Transformer.set_loss`), placed on the ranks (FSDP2-sharded; frozen
        unless `trained`)."""
        from specc.spec.hf_config import is_hf_directory

        if is_hf_directory(self.path(key)):
            return self._hf_language_model(self.path(key), trained)
        model = load_model(self.path(key), "cpu")
        model.set_loss(self.loss, self.loss_chunk_tokens)
        return self.rt.place(model, trained=trained)

    def _hf_language_model(self, directory: Path, trained: bool):
        """A Hugging Face directory (`model.init_from`): built on the meta device, sharded over the
        ranks, then each rank reads only its own shards of the safetensors files
        (`specc.runtime.hf.load`, as the pretrain stage loads it), so a 70B model never
        materialises on a host; one process reads everything."""
        from specc.runtime.hf.load import hf_model_spec, materialize_from_hf, meta_model

        spec = hf_model_spec(directory)
        model = meta_model(spec)
        model.set_loss(self.loss, self.loss_chunk_tokens)
        model = self.rt.place(model, trained=trained)
        stats = materialize_from_hf(model, directory, self.rt.device, spec)
        self.log(f"{self.stage.name}: weights from {directory}: {stats['bytes_read'] / 2**20:.1f} MiB read by "
                 f"rank 0 of {self.rt.world} in {stats['seconds']:.2f} s")
        return model.eval()

    def log(self, message: str) -> None:
        """Print once (rank 0)."""
        if self.rt is None or self.rt.main:
            print(message, flush=True)

    def data_path(self, path: str) -> Path:
        """A data file: absolute, or relative to run_dir (data written by an earlier
        constitutional stage, `<name>/data.jsonl`)."""
        return resolve(self.run_dir, path)

    def loop_settings(self, total_steps: int) -> LoopSettings:
        params = self.config["params"]
        if self.rt is None or self.rt.main:
            # the total first, so that `specc launch` shows step/total and an ETA (specc.launch.progress)
            with MetricsWriter(self.out_dir / "metrics.jsonl") as metrics:
                metrics.write(event="start", total_steps=total_steps, world_size=self.rt.world if self.rt else 1)
        return LoopSettings(out_dir=self.out_dir, total_steps=total_steps, lr=self.stage.lr,
                            checkpoint_interval=self.checkpoint_interval,
                            warmup_steps=min(10, total_steps // 10), stage_name=self.stage.name,
                            max_steps=params.get("max_steps"), predicted=params.get("predicted") or {})

    def save_language_model(self, model, directory: Path) -> None:
        """The whole trained model as `model.safetensors` + `config.json` (`infer.weights.save_model`'s
        format), gathered from the shards to rank 0 (collective)."""
        state = self.rt.full_state(model)
        if state is None:
            return
        if model.spec.tie_embeddings:
            state.pop("output.weight", None)
        directory.mkdir(parents=True, exist_ok=True)
        write_safetensors(dict(sorted(state.items())), directory / WEIGHTS, {"format": "pt"})
        atomic_write_json(directory / "config.json", model.spec.model_dump(mode="json"))


def _special_tokens(params: dict) -> dict:
    """eos/pad as the spec's tokenizer names them (a Hugging Face tokenizer's own, under
    `model.init_from`); load_codec's defaults for those the params leave out."""
    return {key: params[key] for key in ("eos_token", "pad_token") if params.get(key)}


def stage_context(config: dict, distributed: bool = True) -> StageContext:
    """The stage's inputs and its runtime (`distributed=False`: this process alone)."""
    params = config["params"]
    stage = STAGE_ADAPTER.validate_python(params["stage"])
    run_dir = Path(config["run_dir"])
    template = load_template(getattr(stage, "chat_template", None) or params.get("chat_template", "chatml"))
    return StageContext(config=config, run_dir=run_dir, out_dir=run_dir / stage.name, stage=stage,
                        codec=load_codec(resolve(run_dir, params["tokenizer"]), **_special_tokens(params)),
                        template=template,
                        seq_len=int(params["seq_len"]),
                        seed=int(params.get("seed", 0)),
                        checkpoint_interval=int(params.get("checkpoint_interval", 50)),
                        loss=params.get("loss", "auto"), loss_chunk_tokens=int(params.get("loss_chunk_tokens", 1024)),
                        rt=init_align_runtime(params, distributed))


def inputs_record(context: StageContext, keys: tuple[str, ...]) -> dict:
    """sha256 of each input model's weights, recorded in the stage's outputs (provenance)."""
    from specc.spec.hf_config import is_hf_directory, weight_files

    record = {}
    for key in keys:
        if key in context.config["params"]:
            directory = context.path(key)
            # a Hugging Face directory may hold its weights as shards: one digest per file
            files = weight_files(directory) if is_hf_directory(directory) else [directory / "model.safetensors"]
            record[key] = {"path": str(directory), "sha256": file_sha256(files[0])} if len(files) == 1 else \
                {"path": str(directory), "sha256": {f.name: file_sha256(f) for f in files}}
    return record


def finish(context: StageContext, inputs: dict, summary: dict) -> None:
    """Provenance and the success marker (rank 0, after every rank wrote its part), then leave the
    process group."""
    context.rt.barrier()
    if context.rt.main:
        _mark_finished(context, inputs, summary)
    context.rt.close()


def _mark_finished(context: StageContext, inputs: dict, summary: dict) -> None:
    atomic_write_json(context.out_dir / "final" / "provenance.json", {"stage": context.stage.name, "inputs": inputs})
    mark_success(context.out_dir, context.config, outputs=["final"], inputs=inputs, **summary)
