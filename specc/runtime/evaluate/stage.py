"""The `eval` stage: perplexity sets and benchmark tasks for every model the pipeline trained.

config.json: {"stage": "eval", "run_dir": ..., "params": see `specc.emit.configs.evaluate`}.
`eval.backend` picks the scorer: the built-in harness or lm-evaluation-harness
(`lm_eval_backend`: its task YAMLs and datasets cache go under `<run_dir>/eval/lm_eval/`), which
also runs the user's own task YAMLs (`eval.lm_eval`, from their directory).
Outputs under `<run_dir>/eval/`: `parts/<model>--<item>.json` (one per model and task, written
atomically: a killed run resumes with the parts it has), `samples/<model>--<task>.jsonl` (per
item: the prompt and each choice's log-likelihood, or the generation and extracted answers),
`results.json`, `results.md` (a table with accuracy +- standard error), `metrics.jsonl`, then
`_SUCCESS.json`.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from specc.evaltasks import FORMATS, load_documents
from specc.runtime.evaluate import harness, lm_eval_backend
from specc.runtime.evaluate.prompts import fewshot_contexts
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


def library_rows(model, codec, task: EvalTask, spec: EvalSpec, out: Path) -> tuple[list[dict], list[dict]]:
    """Rows and samples of a library-format task, from the backend the spec names."""
    files = task_files(task.path)
    fewshot_files = task_files(task.fewshot_path) if task.fewshot_path else None
    k = spec.num_fewshot if task.num_fewshot is None else task.num_fewshot
    scorer = _lm_eval_rows if spec.backend == "lm_eval" else _builtin_rows
    return scorer(model, codec, task, files, fewshot_files, k, spec.batch_size, out)


def _builtin_rows(model, codec, task: EvalTask, files: list[Path], fewshot_files: list[Path] | None, k: int,
                  batch_size: int, out: Path) -> tuple[list[dict], list[dict]]:
    recipe = FORMATS[task.type].recipe
    documents = load_documents(files, task.type)
    pool = load_documents(fewshot_files, task.type) if fewshot_files else documents
    contexts = fewshot_contexts(documents, pool, k, recipe, fewshot_files is None, task.limit)
    scored = documents[:len(contexts)]
    if recipe.output_type == "multiple_choice":
        per_metric, samples = harness.multiple_choice(model, codec, scored, contexts, recipe, batch_size)
    else:
        generations = [harness.generate_text(model, codec, c, recipe.until, task.max_new_tokens) for c in contexts]
        per_metric, samples = harness.generation_scores(scored, contexts, generations, recipe)
    rows = [harness.Score(task.name, metric, *harness.mean_and_stderr(values), len(values)).as_dict()
            for metric, values in per_metric.items()]
    return rows, samples


def _lm_eval_rows(model, codec, task: EvalTask, files: list[Path], fewshot_files: list[Path] | None, k: int,
                  batch_size: int, out: Path) -> tuple[list[dict], list[dict]]:
    recipe = FORMATS[task.type].recipe
    config = lm_eval_backend.task_config(task.name, task.type, files, fewshot_files, k, task.max_new_tokens,
                                         out / "lm_eval" / "cache")
    path = lm_eval_backend.write_task(out / "lm_eval" / "tasks", config, task.type)
    lm = lm_eval_backend.specc_lm_class()(model, codec, batch_size, task.max_new_tokens)
    results, count, samples = lm_eval_backend.evaluate(lm, path, task.limit)
    keys = ([(m, f"{m},none") for m in recipe.metrics] if recipe.output_type == "multiple_choice" else
            [(harness.generation_metric(i, f.name), f"exact_match,{f.name}") for i, f in enumerate(recipe.filters)])
    return (lm_eval_backend.rows_from_results(task.name, results, count, keys),
            lm_eval_backend.samples_as_builtin(samples, recipe))


def score_task(model, codec, task: EvalTask, spec: EvalSpec, out: Path) -> tuple[list[dict], list[dict]]:
    if task.type in FORMATS:
        return library_rows(model, codec, task, spec, out)
    examples = [e for path in task_files(task.path) for e in load_examples(path, task.type)]
    k = spec.num_fewshot if task.num_fewshot is None else task.num_fewshot
    correct, samples = harness.generative(model, codec, examples, k, task.answer_pattern, task.max_new_tokens,
                                          task.limit)
    return [harness.Score(task.name, "exact_match", *harness.mean_and_stderr(correct), len(correct)).as_dict()], \
        samples


def perplexity_rows(model, codec, item: PerplexitySet, spec: EvalSpec, out: Path) -> list[dict]:
    texts = perplexity_texts(item)
    if spec.backend == "lm_eval":
        documents = lm_eval_backend.write_documents(out / "lm_eval" / "documents" / f"{item.name}.jsonl", texts)
        path = lm_eval_backend.write_task(out / "lm_eval" / "tasks", lm_eval_backend.perplexity_config(
            item.name, documents, out / "lm_eval" / "cache"), None)
        lm = lm_eval_backend.specc_lm_class()(model, codec, spec.batch_size)
        results, count, _ = lm_eval_backend.evaluate(lm, path, None)
        return lm_eval_backend.rows_from_results(item.name, results, count, [
            (m, f"{m},none") for m in ("word_perplexity", "byte_perplexity", "bits_per_byte")])
    result = harness.perplexity(model, codec, texts, spec.batch_size)
    return [{"task": item.name, "metric": metric, "value": result[metric], "stderr": None, "count": result[unit]}
            for metric, unit in PERPLEXITY_METRICS]


def included_rows(model, codec, name: str, spec: EvalSpec, out: Path, label: str) -> list[dict]:
    """Rows of one task, group or tag of the user's lm-eval YAMLs; lm-eval's logged samples go to
    `samples/<model>--<task>.jsonl` as lm-eval logs them (one line per document and filter)."""
    options = spec.lm_eval
    lm = lm_eval_backend.specc_lm_class()(model, codec, spec.batch_size)
    rows, samples = lm_eval_backend.evaluate_included(lm, Path(options.include_path), name, options.num_fewshot,
                                                      options.limit, out / "lm_eval" / "cache")
    for task, logged in samples.items():
        atomic_write_text(out / "samples" / f"{label}--{task}.jsonl",
                          "".join(json.dumps(s, default=str) + "\n" for s in logged))
    return rows


def _evaluate_model(label: str, model_dir: Path, spec: EvalSpec, codec, out: Path, metrics: MetricsWriter,
                    fingerprint: str) -> list[dict]:
    """Score one model on everything, skipping parts a previous (killed) run finished."""
    model = None
    rows: list[dict] = []
    items = [(p.name, p) for p in spec.perplexity] + [(t.name, t) for t in spec.tasks]
    included = fingerprint  # the user's YAMLs: a part is current only for the YAMLs it ran
    if spec.lm_eval is not None:
        included = f"{fingerprint}:{lm_eval_backend.directory_digest(Path(spec.lm_eval.include_path))}"
        items += [(f"lm_eval.{name}", name) for name in spec.lm_eval.tasks]
    for name, item in items:
        part = out / "parts" / f"{label}--{name}.json"
        current = included if isinstance(item, str) else fingerprint
        if part.exists() and json.loads(part.read_text()).get("fingerprint") == current:
            rows.extend(json.loads(part.read_text())["rows"])
            continue
        if model is None:
            model = load_model(model_dir, "cuda" if torch.cuda.is_available() else "cpu")
        if isinstance(item, PerplexitySet):
            new_rows = [{"model": label, **row} for row in perplexity_rows(model, codec, item, spec, out)]
        elif isinstance(item, str):
            new_rows = [{"model": label, **row} for row in included_rows(model, codec, item, spec, out, label)]
        else:
            task_rows, samples = score_task(model, codec, item, spec, out)
            new_rows = [{"model": label, **row} for row in task_rows]
            if samples:
                atomic_write_text(out / "samples" / f"{label}--{name}.jsonl",
                                  "".join(json.dumps(s) + "\n" for s in samples))
        for row in new_rows:
            metrics.write(**row)
        atomic_write_json(part, {"fingerprint": current, "rows": new_rows})
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
