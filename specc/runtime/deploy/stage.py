"""The `deploy` stage: export, quantize, measure, and prepare speculative decoding per target.

config.json: {"stage": "deploy", "run_dir": ..., "params": see `specc.emit.configs.alignment.build_deploy_config`}.
For each target, under `<run_dir>/deploy/<target>/`:
- `hf/` when `format: hf`: a Hugging Face folder (full-precision weights + tokenizer files);
- `model/`: specc's safetensors layout with the served weights (packed int8/NF4 and their
  scales when quantized) plus `quantization.json`;
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

from specc.runtime.align.trainer import device
from specc.runtime.deploy.distill import distill_draft
from specc.runtime.deploy.export import export_hf, export_safetensors
from specc.runtime.deploy.measure import heldout_windows, speculative_report, window_perplexity
from specc.runtime.deploy.quantize import quantize_model, quantized_state, weight_bytes
from specc.runtime.infer.weights import load_model, save_model
from specc.runtime.io import MetricsWriter, atomic_write_json, config_hash, mark_success
from specc.runtime.stages import skips_when_complete
from specc.spec.capabilities import DEPLOY_FORMATS, DEPLOY_QUANTIZATIONS
from specc.spec.deploy import DeployTarget


def resolve(run_dir: Path, path: str) -> Path:
    candidate = Path(path)
    return candidate if candidate.is_absolute() else run_dir / candidate


def deploy_target(target: DeployTarget, params: dict, run_dir: Path, out: Path) -> dict:
    """Export and measure one target; returns its report."""
    # validate (R172) rejects anything else; a hand-edited config.json is still refused here
    if target.quantization not in DEPLOY_QUANTIZATIONS or target.format not in DEPLOY_FORMATS:
        raise ValueError(f"target {target.name!r}: quantization {target.quantization!r} / format {target.format!r} "
                         f"is not implemented by the deploy stage; quantization one of "
                         f"{', '.join(DEPLOY_QUANTIZATIONS)}, format one of {', '.join(DEPLOY_FORMATS)}")
    checkpoint, tokenizer = resolve(run_dir, params["checkpoint"]), resolve(run_dir, params["tokenizer"])
    dev = device()
    model = load_model(checkpoint, dev)
    if target.format == "hf":
        export_hf(model, out / "hf", tokenizer, params["eos_token"], params.get("pad_token"),
                  **chat_template_args(params.get("chat_template")))
    # a fine-tune (no corpus: `shard_dir` null) has no held-out tokens: perplexity is not measured
    # and says so (validate, R264, refuses speculative targets, which need them)
    windows = heldout_windows(resolve(run_dir, params["shard_dir"]), min(params["seq_len"], model.spec.max_seq_len),
                              params["measure_windows"]) if params.get("shard_dir") else []
    report: dict = {"target": target.name, "quantization": target.quantization,
                    "perplexity_full": window_perplexity(model, windows) if windows else None,
                    "weight_bytes_full": weight_bytes(model), "heldout_tokens": sum(len(w) - 1 for w in windows)}
    served = model
    if target.quantization != "none":
        served = quantize_model(load_model(checkpoint, dev), target.quantization, target.group_size)
        if windows:
            report["perplexity_quantized"] = window_perplexity(served, windows)
            report["perplexity_change"] = report["perplexity_quantized"] / report["perplexity_full"] - 1.0
    report["weight_bytes_served"] = weight_bytes(served)
    export_safetensors(quantized_state(served), model.spec, out / "model", tokenizer,
                       {"method": target.quantization, "group_size": target.group_size})
    if target.speculative is not None:
        draft = _draft(target, served, params, run_dir, out)
        save_model(draft, out / "draft")
        prompts = [w[:params["speculative_prompt_tokens"]] for w in windows[:params["speculative_prompts"]]]
        report["speculative"] = speculative_report(served, draft, prompts, params["speculative_new_tokens"],
                                                   target.speculative.num_tokens)
    return report


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
