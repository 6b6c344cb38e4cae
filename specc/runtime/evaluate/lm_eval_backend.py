"""The `lm_eval` backend: lm-evaluation-harness (pinned: pyproject `eval` extra) runs the tasks on
specc's own model and tokenizer, from local files only.

- `SpeccLM` is an `lm_eval.api.model.TemplateLM`: lm-eval builds the prompts, splits context and
  continuation (`_encode_pair`), cuts rolling windows, filters answers and computes the metrics;
  specc supplies only token log-likelihoods (`specc.runtime.infer.scoring`) and greedy decoding
  (`harness.generate_text`). It works on any stage's checkpoint, without a Hugging Face export.
- Each task becomes an lm-eval task YAML under `<run_dir>/eval/lm_eval/tasks/` with
  `dataset_path: json` and `dataset_kwargs.data_files` naming the spec's files, and a
  `process_docs` that calls the library format (`specc.evaltasks`), so the file can also be run
  with the `lm_eval` command (`--include_path`). Perplexity sets are written as jsonl documents and
  scored by a `loglikelihood_rolling` task (word/byte perplexity, bits per byte).
- The user's own task YAMLs (`eval.lm_eval`) run as lm-eval loads them from their directory
  (`evaluate_included`), with that directory as the working directory while their data loads.
- Nothing is downloaded: HF_DATASETS_OFFLINE / HF_HUB_OFFLINE are set, the datasets cache lives
  under the run directory.
"""

from __future__ import annotations

import hashlib
import json
import os
from contextlib import contextmanager
from pathlib import Path

import torch
import yaml

from specc.evaltasks import FORMATS
from specc.runtime.evaluate import harness
from specc.runtime.infer.weights import TextCodec

PROCESS_MODULE = "specc_formats"
PROCESS_SOURCE = '''"""Written by specc: lm-eval `process_docs` functions for specc's task library (specc.evaltasks)."""
from specc.evaltasks import FORMATS


def _documents(name):
    def process(dataset):
        return dataset.map(FORMATS[name].process, remove_columns=dataset.column_names, load_from_cache_file=False)
    return process


''' + "".join(f"{name} = _documents({name!r})\n" for name in FORMATS)
"""The module next to the task YAMLs that their `!function specc_formats.<format>` names."""


def import_lm_eval():
    """lm_eval with the offline switches set first (the datasets library reads them on import)."""
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        import lm_eval
        from lm_eval.api.model import TemplateLM
    except ImportError as error:
        raise RuntimeError(f"eval.backend lm_eval needs lm-evaluation-harness ({error}); "
                           "install it with `pip install 'specc[eval]'`") from None
    return lm_eval, TemplateLM


def specc_lm_class():
    """`SpeccLM`, defined once lm_eval is importable (the module imports without it)."""
    _, TemplateLM = import_lm_eval()

    class SpeccLM(TemplateLM):
        """lm-eval's model interface on a specc Transformer and its `tokenizer.json`."""

        def __init__(self, model: torch.nn.Module, codec: TextCodec, batch_size: int, max_gen_toks: int = 256):
            super().__init__()
            self.model, self.codec, self._batch_size, self._max_gen_toks = model, codec, batch_size, max_gen_toks

        @property
        def eot_token_id(self) -> int:
            return self.codec.eos_id

        @property
        def max_length(self) -> int:
            return self.model.spec.max_seq_len

        @property
        def tokenizer_name(self) -> str:
            return "specc"

        def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs) -> list[int]:
            return harness.encode(self.codec, string, True if add_special_tokens is None else add_special_tokens)

        def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **kwargs):
            pairs = [(context, continuation) for _, context, continuation in requests]
            return harness.loglikelihoods(self.model, self.codec, pairs, self._batch_size)

        def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
            from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

            totals = []
            for (text,) in [request.args for request in requests]:
                windows = [make_disjoint_window(w) for w in get_rolling_token_windows(
                    token_list=self.tok_encode(text), prefix_token=self.eot_token_id,
                    max_seq_len=self.max_length, context_len=1)]
                totals.append(sum(logprob for logprob, _ in
                                  harness.loglikelihoods(self.model, self.codec, windows, self._batch_size)))
            return totals

        def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
            outputs = []
            for context, gen_kwargs in [request.args for request in requests]:
                kwargs = dict(gen_kwargs)
                if kwargs.get("do_sample"):
                    raise ValueError("SpeccLM decodes greedily; the task asks for sampling")
                until = kwargs.get("until") or []
                until = [until] if isinstance(until, str) else list(until)
                outputs.append(harness.generate_text(self.model, self.codec, context, tuple(until),
                                                     int(kwargs.get("max_gen_toks", self._max_gen_toks))))
            return outputs

    return SpeccLM


def _dump(config: dict, process: str | None) -> str:
    text = yaml.safe_dump(config, sort_keys=False, allow_unicode=True, width=1_000_000)
    return text + (f"process_docs: !function {PROCESS_MODULE}.{process}\n" if process else "")


def task_config(name: str, format_name: str, files: list[Path], fewshot_files: list[Path] | None,
                num_fewshot: int, max_new_tokens: int, cache_dir: Path) -> dict:
    """An lm-eval TaskConfig for a library format on local jsonl files."""
    recipe = FORMATS[format_name].recipe
    data_files = {"test": [str(f) for f in files]}
    if fewshot_files:
        data_files["train"] = [str(f) for f in fewshot_files]
    config: dict = {
        "task": name, "dataset_path": "json",
        "dataset_kwargs": {"data_files": data_files, "cache_dir": str(cache_dir)},
        "test_split": "test", "fewshot_split": "train" if fewshot_files else "test",
        "fewshot_config": {"sampler": recipe.sampler}, "output_type": recipe.output_type,
        "description": "description", "doc_to_text": "query",
        "target_delimiter": recipe.target_delimiter, "fewshot_delimiter": recipe.fewshot_delimiter,
        "num_fewshot": num_fewshot,
    }
    if recipe.output_type == "multiple_choice":
        config.update({"doc_to_target": "gold", "doc_to_choice": "choices",
                       "metric_list": [{"metric": m, "aggregation": "mean", "higher_is_better": True}
                                       for m in recipe.metrics]})
    else:
        config.update({
            "doc_to_target": "target",
            "generation_kwargs": {"until": list(recipe.until), "do_sample": False, "temperature": 0.0,
                                  "max_gen_toks": max_new_tokens},
            "metric_list": [{"metric": "exact_match", "aggregation": "mean", "higher_is_better": True,
                             "ignore_case": recipe.ignore_case, "ignore_punctuation": False,
                             "regexes_to_ignore": list(recipe.regexes_to_ignore)}],
            "filter_list": [{"name": f.name, "filter": [{"function": "regex", "regex_pattern": f.pattern,
                                                         "group_select": f.group_select, "fallback": f.fallback},
                                                        {"function": "take_first"}]} for f in recipe.filters]})
    return config


def perplexity_config(name: str, documents: Path, cache_dir: Path) -> dict:
    """A loglikelihood_rolling task over `{"text": ...}` documents (like lm-eval's wikitext)."""
    return {"task": name, "dataset_path": "json",
            "dataset_kwargs": {"data_files": {"test": [str(documents)]}, "cache_dir": str(cache_dir)},
            "test_split": "test", "output_type": "loglikelihood_rolling", "doc_to_text": "",
            "doc_to_target": "text", "num_fewshot": 0,
            "metric_list": [{"metric": m} for m in ("word_perplexity", "byte_perplexity", "bits_per_byte")]}


def write_task(directory: Path, config: dict, format_name: str | None) -> Path:
    """`<directory>/<task>.yaml`, and the process_docs module beside it."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{PROCESS_MODULE}.py").write_text(PROCESS_SOURCE)
    path = directory / f"{config['task']}.yaml"
    path.write_text(_dump(config, format_name))
    return path


def write_documents(path: Path, texts: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    return path


def evaluate(lm, task_yaml: Path, limit: int | None) -> tuple[dict, int, list[dict]]:
    """(lm-eval's metric dict for the task, documents scored, logged samples)."""
    lm_eval, _ = import_lm_eval()
    from lm_eval.tasks import TaskManager

    name = task_yaml.stem
    manager = TaskManager(include_path=str(task_yaml.parent), include_defaults=False)
    output = lm_eval.simple_evaluate(model=lm, tasks=[name], task_manager=manager, limit=limit,
                                     bootstrap_iters=1000, log_samples=True)
    count = output["n-samples"][name]["effective"]
    return output["results"][name], count, output["samples"][name]


def directory_digest(root: Path) -> str:
    """sha256 of the include directory's YAML and Python files (paths and contents): a part scored
    before the user edited a task is scored again."""
    digest = hashlib.sha256()
    for path in sorted(p for p in root.glob("**/*") if p.suffix in (".yaml", ".py") and p.is_file()):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


@contextmanager
def _reading_from(root: Path, cache_dir: Path):
    """While lm-eval loads the user's tasks: relative data paths resolve against the include
    directory (`datasets` resolves `data_files` against the working directory), and the datasets
    cache lives under the run directory (`datasets` reads `config.HF_DATASETS_CACHE` per load)."""
    import datasets

    previous_dir, previous_cache = os.getcwd(), datasets.config.HF_DATASETS_CACHE
    os.chdir(root)
    datasets.config.HF_DATASETS_CACHE = cache_dir
    try:
        yield
    finally:
        os.chdir(previous_dir)
        datasets.config.HF_DATASETS_CACHE = previous_cache


def evaluate_included(lm, include_path: Path, name: str, num_fewshot: int | None, limit: int | None,
                      cache_dir: Path) -> tuple[list[dict], dict[str, list[dict]]]:
    """Run one task, group or tag of the user's lm-eval YAMLs (`eval.lm_eval`): (rows, lm-eval's
    logged samples by task). lm-eval sees only that directory (`include_defaults=False`: its own
    library reads from the Hub); a group reports a row per metric for itself and each task."""
    lm_eval, _ = import_lm_eval()
    from lm_eval.tasks import TaskManager

    root = include_path.resolve()
    with _reading_from(root, cache_dir.resolve()):
        manager = TaskManager(include_path=str(root), include_defaults=False)
        output = lm_eval.simple_evaluate(model=lm, tasks=[name], task_manager=manager, num_fewshot=num_fewshot,
                                         limit=limit, bootstrap_iters=1000, log_samples=True)
    counts = {task: entry["effective"] for task, entry in output["n-samples"].items()}
    rows = []
    for task, results in output["results"].items():
        for key, value in results.items():
            metric, _, filter_name = key.partition(",")
            if not filter_name or metric.endswith("_stderr") or not isinstance(value, (int, float)):
                continue  # alias, sample counts, "N/A" for an aggregate lm-eval does not compute
            stderr = results.get(f"{metric}_stderr,{filter_name}")
            rows.append({"task": task, "metric": metric if filter_name == "none" else key, "value": float(value),
                         "stderr": float(stderr) if isinstance(stderr, (int, float)) else None,
                         "count": counts.get(task, sum(counts.values()))})
    return rows, output["samples"]


def rows_from_results(task: str, results: dict, count: int, metrics: list[tuple[str, str]]) -> list[dict]:
    """Rows like the built-in's: `metrics` pairs specc's metric name with lm-eval's `metric,filter` key."""
    rows = []
    for name, key in metrics:
        metric, filter_name = key.split(",")
        stderr = results.get(f"{metric}_stderr,{filter_name}")
        rows.append({"task": task, "metric": name, "value": float(results[key]),
                     "stderr": float(stderr) if isinstance(stderr, (int, float)) else None, "count": count})
    return rows


def samples_as_builtin(samples: list[dict], recipe) -> list[dict]:
    """lm-eval's logged samples in the built-in's layout, one line per document: each choice's
    log-likelihood (multiple choice), or the generation and each filter's answer (lm-eval logs one
    entry per document and filter)."""
    from specc.runtime.evaluate.harness import generation_metric

    by_doc: dict[int, dict] = {}
    for sample in samples:
        doc = sample["doc"]
        if recipe.output_type == "multiple_choice":
            by_doc[sample["doc_id"]] = {"context": sample["arguments"][0][0], "loglikelihoods": [float(r[0][0]) for r in sample["resps"]],
                                        "gold": doc["gold"]}
            continue
        entry = by_doc.setdefault(sample["doc_id"], {"context": sample["arguments"][0][0], "generation": sample["resps"][0][0],
                                                     "target": doc["target"]})
        index = [f.name for f in recipe.filters].index(sample["filter"])
        entry[generation_metric(index, sample["filter"])] = sample["filtered_resps"][0]
    return [by_doc[key] for key in sorted(by_doc)]
