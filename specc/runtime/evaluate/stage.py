"""The `eval` stage: perplexity sets and benchmark tasks for every model the pipeline trained.

config.json: {"stage": "eval", "run_dir": ..., "params": see `specc.emit.configs.evaluate`}.
Outputs under `<run_dir>/eval/`: `parts/<model>--<item>.json` (one per model and task, written
atomically: a killed run resumes with the parts it has), `samples/<model>--<task>.jsonl`
(generations), `results.json`, `results.md` (a table with accuracy +- standard error),
`metrics.jsonl`, then `_SUCCESS.json`.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from specc.runtime.evaluate import harness
from specc.runtime.evaluate.tasks import load_examples, read_jsonl, task_files
from specc.runtime.infer.weights import load_codec, load_model
from specc.runtime.io import MetricsWriter, atomic_write_json, atomic_write_text, config_hash, mark_success
from specc.runtime.stages import skips_when_complete
from specc.spec.evaluation import EvalSpec, EvalTask, PerplexitySet


PERPLEXITY_METRICS = (("perplexity", "tokens"), ("word_perplexity", "words"), ("byte_perplexity", "bytes"),
                      ("bits_per_byte", "bytes"))
"""The rows a perplexity set reports, each with the count it is averaged over."""


def resolve(run_dir: Path, path: str) -> Path:
    """Paths in params are absolute or relative to the run directory."""
    candidate = Path(path)
    return candidate if candidate.is_absolute() else run_dir / candidate


def perplexity_texts(item: PerplexitySet) -> list[str]:
    texts: list[str] = []
    for path in task_files(item.path):
        if path.suffix == ".jsonl":
            texts.extend(str(row[item.text_field]) for row in read_jsonl(path) if item.text_field in row)
        else:
            texts.append(path.read_text())
    return texts[:item.max_documents] if item.max_documents else texts


def score_task(model, codec, task: EvalTask, spec: EvalSpec) -> tuple[list[harness.Score], list[dict]]:
    examples = [e for path in task_files(task.path) for e in load_examples(path, task.type)]
    k = spec.num_fewshot if task.num_fewshot is None else task.num_fewshot
    if task.type == "multiple_choice":
        acc, acc_norm = harness.multiple_choice(model, codec, examples, k, spec.batch_size, task.limit)
        scores = [harness.Score(task.name, metric, *harness.mean_and_stderr(values), len(values))
                  for metric, values in (("acc", acc), ("acc_norm", acc_norm))]
        return scores, []
    correct, samples = harness.generative(model, codec, examples, k, task.answer_pattern, task.max_new_tokens,
                                          task.limit)
    return [harness.Score(task.name, "exact_match", *harness.mean_and_stderr(correct), len(correct))], samples


def _evaluate_model(label: str, model_dir: Path, spec: EvalSpec, codec, out: Path, metrics: MetricsWriter,
                    fingerprint: str) -> list[dict]:
    """Score one model on everything, skipping parts a previous (killed) run finished."""
    model = None
    rows: list[dict] = []
    items = [(p.name, p) for p in spec.perplexity] + [(t.name, t) for t in spec.tasks]
    for name, item in items:
        part = out / "parts" / f"{label}--{name}.json"
        if part.exists() and json.loads(part.read_text()).get("fingerprint") == fingerprint:
            rows.extend(json.loads(part.read_text())["rows"])
            continue
        if model is None:
            model = load_model(model_dir, "cuda" if torch.cuda.is_available() else "cpu")
        if isinstance(item, PerplexitySet):
            result = harness.perplexity(model, codec, perplexity_texts(item), spec.batch_size)
            new_rows = [{"model": label, "task": name, "metric": metric, "value": result[metric], "stderr": None,
                         "count": result[unit]} for metric, unit in PERPLEXITY_METRICS]
        else:
            scores, samples = score_task(model, codec, item, spec)
            new_rows = [{"model": label, **s.as_dict()} for s in scores]
            if samples:
                atomic_write_text(out / "samples" / f"{label}--{name}.jsonl",
                                  "".join(json.dumps(s) + "\n" for s in samples))
        for row in new_rows:
            metrics.write(**row)
        atomic_write_json(part, {"fingerprint": fingerprint, "rows": new_rows})
        rows.extend(new_rows)
    return rows


def results_markdown(rows: list[dict]) -> str:
    lines = ["| model | task | metric | value | ± stderr | n |", "|---|---|---|---|---|---|"]
    for row in rows:
        stderr = "" if row["stderr"] is None else f"{row['stderr']:.4f}"
        lines.append(f"| {row['model']} | {row['task']} | {row['metric']} | {row['value']:.4f} | {stderr} | "
                     f"{row['count']} |")
    return "\n".join(lines) + "\n"


@skips_when_complete
def run(config: dict) -> None:
    run_dir = Path(config["run_dir"])
    out = run_dir / "eval"
    params = config["params"]
    spec = EvalSpec.model_validate(params["eval"])
    # eos/pad as the spec's tokenizer names them (a Hugging Face tokenizer's own under model.init_from)
    codec = load_codec(resolve(run_dir, params["tokenizer"]),
                       **{key: params[key] for key in ("eos_token", "pad_token") if params.get(key)})
    fingerprint = config_hash(config)
    rows: list[dict] = []
    with MetricsWriter(out / "metrics.jsonl") as metrics:
        for label, directory in params["checkpoints"].items():
            model_dir = resolve(run_dir, directory)
            # one file, or a Hugging Face directory's shards (model.init_from)
            if not any((model_dir / name).exists() for name in ("model.safetensors", "model.safetensors.index.json")):
                print(f"eval: skipping {label}: no weights at {model_dir}")
                continue
            rows.extend(_evaluate_model(label, model_dir, spec, codec, out, metrics, fingerprint))
    atomic_write_json(out / "results.json", {"results": rows})
    table = results_markdown(rows)
    atomic_write_text(out / "results.md", table)
    print(table, end="")
    mark_success(out, config, outputs=["results.json"], results=len(rows))
