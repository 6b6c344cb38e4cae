"""The `deploy` stage: export, quantize, measure, and prepare speculative decoding per target.

config.json: {"stage": "deploy", "run_dir": ..., "params": see `specc.emit.configs.alignment.build_deploy_config`}.
For each target, under `<run_dir>/deploy/<target>/`:
- `hf/` when `format: hf`: a Hugging Face folder (config, generation config, tokenizer with the
  chat template) that `transformers`, vLLM and SGLang load; int8/int4/GPTQ weights in the
  compressed-tensors format (`specc.runtime.deploy.compressed`, `.gptq`);
- `model/` when `format: safetensors`: specc's own layout with the served weights (packed int8/NF4
  and their scales when quantized) plus `quantization.json`;
- `draft/`: the speculative draft model (distilled from the target when the spec gives an
  architecture, copied from the given checkpoint otherwise);
- `report.json`: weight bytes, perplexity before/after quantization on held-out tokens, and
  speculative acceptance rate / speed-up (greedy outputs checked identical to plain decoding).
A finished target is skipped on rerun (its report carries the config's hash); `_SUCCESS.json`
in `<run_dir>/deploy/` comes last.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from specc.runtime.align.trainer import device
from specc.runtime.deploy.compressed import apply_dequantized, quantize_linears_rtn
from specc.runtime.deploy.distill import distill_draft
from specc.runtime.deploy.export import export_hf, export_safetensors
from specc.runtime.deploy.gptq import CALIBRATION_WINDOWS, gptq_model
from specc.runtime.deploy.measure import heldout_windows, speculative_report, window_perplexity
from specc.runtime.deploy.quantize import quantize_model, quantized_state, weight_bytes
from specc.runtime.infer.weights import load_model, save_model
from specc.runtime.io import MetricsWriter, atomic_write_json, config_hash, mark_success
from specc.runtime.stages import skips_when_complete
from specc.spec.capabilities import DEPLOY_FORMAT_QUANTIZATIONS
from specc.spec.deploy import DeployTarget


def resolve(run_dir: Path, path: str) -> Path:
    candidate = Path(path)
    return candidate if candidate.is_absolute() else run_dir / candidate


def deploy_target(target: DeployTarget, params: dict, run_dir: Path, out: Path) -> dict:
    """Export and measure one target; returns its report."""
    # validate (R172) rejects anything else; a hand-edited config.json is still refused here
    written = DEPLOY_FORMAT_QUANTIZATIONS.get(target.format, ())
    if target.quantization not in written:
        raise ValueError(f"target {target.name!r}: quantization {target.quantization!r} / format {target.format!r} "
                         f"is not implemented by the deploy stage; formats and their quantizations: " +
                         "; ".join(f"{f}: {', '.join(qs)}" for f, qs in DEPLOY_FORMAT_QUANTIZATIONS.items()))
    checkpoint, tokenizer = resolve(run_dir, params["checkpoint"]), resolve(run_dir, params["tokenizer"])
    dev = device()
    model = load_model(checkpoint, dev)
    seq_len = min(params["seq_len"], model.spec.max_seq_len)
    # a fine-tune (no corpus: `shard_dir` null) has no held-out tokens: perplexity is not measured
    # and says so (validate refuses what needs them there: speculative targets R264, GPTQ R264)
    shard_dir = resolve(run_dir, params["shard_dir"]) if params.get("shard_dir") else None
    windows = heldout_windows(shard_dir, seq_len, params["measure_windows"]) if shard_dir is not None else []
    report: dict = {"target": target.name, "quantization": target.quantization,
                    "perplexity_full": window_perplexity(model, windows) if windows else None,
                    "weight_bytes_full": weight_bytes(model), "heldout_tokens": sum(len(w) - 1 for w in windows)}
    if target.format == "hf":
        served, quantized = hf_served(target, model, checkpoint, shard_dir, seq_len, dev)
        files = export_hf(model, out / "hf", tokenizer, params["eos_token"], params.get("pad_token"),
                          **chat_template_args(params.get("chat_template")), quantized=quantized,
                          quantization=target.quantization, group_size=target.group_size)
        report["weight_bytes_served"] = sum((out / "hf" / f).stat().st_size for f in files if f.endswith(".safetensors"))
    else:
        served = model if target.quantization == "none" else \
            quantize_model(load_model(checkpoint, dev), target.quantization, target.group_size)
        report["weight_bytes_served"] = weight_bytes(served)
        export_safetensors(quantized_state(served), model.spec, out / "model", tokenizer,
                           {"method": target.quantization, "group_size": target.group_size})
    if target.quantization != "none" and windows:
        report["perplexity_quantized"] = window_perplexity(served, windows)
        report["perplexity_change"] = report["perplexity_quantized"] / report["perplexity_full"] - 1.0
    if target.speculative is not None:
        draft = _draft(target, served, params, run_dir, out)
        save_model(draft, out / "draft")
        prompts = [w[:params["speculative_prompt_tokens"]] for w in windows[:params["speculative_prompts"]]]
        report["speculative"] = speculative_report(served, draft, prompts, params["speculative_new_tokens"],
                                                   target.speculative.num_tokens)
    return report


def hf_served(target: DeployTarget, model, checkpoint: Path, shard_dir: Path | None, seq_len: int, dev):
    """(the model a client computes after loading the `hf` export, the quantized linears or None):
    `model` itself in full precision, else a second copy holding the dequantized weights.

    GPTQ calibrates on `CALIBRATION_WINDOWS` windows from the start of the training split, so the
    perplexity reported on the validation split is measured on text the calibration never saw."""
    if target.quantization == "none":
        return model, None
    served = load_model(checkpoint, dev)
    if target.quantization == "gptq":
        if shard_dir is None:
            raise ValueError(f"target {target.name!r}: GPTQ calibrates on the tokenize stage's training split, "
                             "and this run has none (no corpus); validate refuses this (R264)")
        windows = heldout_windows(shard_dir, seq_len, CALIBRATION_WINDOWS, split="train")
        calibration = list(torch.tensor(windows, device=dev).split(8))
        return served, gptq_model(served, calibration, 4, target.group_size)
    quantized = quantize_linears_rtn(served, target.quantization, target.group_size)
    return apply_dequantized(served, quantized), quantized


def chat_template_args(name: str | None) -> dict:
    """The chat template the alignment stages trained with (`chatml`, `llama3` or a file), as the
    Jinja source and end-of-turn marker `export_hf` writes into the tokenizer config; none without SFT."""
    if name is None:
        return {}
    from specc.runtime.align.chat import load_template

    template = load_template(name)
    return {"chat_template": template.source, "end_of_turn": template.end_of_turn or None}


def _draft(target: DeployTarget, served, params: dict, run_dir: Path, out: Path):
    draft = target.speculative.draft
    if isinstance(draft, str):
        return load_model(resolve(run_dir, draft), device())
    return distill_draft(served, draft, resolve(run_dir, params["shard_dir"]),
                         out / "draft-training", params["draft_steps"], params["draft_batch_size"], params["seq_len"],
                         params["draft_lr"], params.get("seed", 0))


@skips_when_complete
def run(config: dict) -> None:
    run_dir = Path(config["run_dir"])
    stage_dir = run_dir / "deploy"
    params = config["params"]
    fingerprint = config_hash(config)
    reports = []
    with MetricsWriter(stage_dir / "metrics.jsonl") as metrics:
        for raw in params["targets"]:
            target = DeployTarget.model_validate(raw)
            out = stage_dir / target.name
            report_path = out / "report.json"
            if report_path.exists() and json.loads(report_path.read_text()).get("fingerprint") == fingerprint:
                reports.append(json.loads(report_path.read_text()))
                continue
            report = {**deploy_target(target, params, run_dir, out), "fingerprint": fingerprint}
            metrics.write(**{k: v for k, v in report.items() if not isinstance(v, dict)})
            atomic_write_json(report_path, report)
            reports.append(report)
            print(f"deploy {target.name}: {json.dumps({k: v for k, v in report.items() if k != 'fingerprint'})}")
    # what users serve and later stages read; draft-training/ is scratch
    outputs = [f"{r['target']}/{name}" for r in reports for name in ("hf", "model", "draft", "report.json")
               if (stage_dir / r["target"] / name).exists()]
    mark_success(stage_dir, config, outputs=outputs, targets=[r["target"] for r in reports])
