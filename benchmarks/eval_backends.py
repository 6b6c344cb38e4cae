"""Built-in harness vs lm-evaluation-harness on the same tiny model and local task files: the
scores (acc, acc_norm, exact match with standard errors; perplexities) of each backend and the
wall time of the `eval` stage with each (median over runs).

The model is a small Transformer trained for a few hundred steps on the generated corpus plus
the library's fixtures written as solved examples (so its scores sit above chance; they measure
agreement between the backends, not ability). Usage:
    python benchmarks/eval_backends.py [--steps 300] [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch

from specc.evaltasks import FIXTURES, FORMATS, load_documents
from specc.runtime.evaluate.prompts import answer_text
from specc.runtime.evaluate.stage import run as run_eval
from specc.runtime.evaluate.tiny import tiny_corpus, train_tiny_tokenizer, write_tiny_tasks
from specc.runtime.infer.weights import load_codec, save_model
from specc.runtime.train.model import build_model
from specc.spec.model import ModelSpec

SPEC = ModelSpec(num_layers=2, hidden_size=64, num_heads=4, num_kv_heads=2, ffn_hidden_size=128, vocab_size=512,
                 max_seq_len=256, tie_embeddings=True)
LIBRARY = [("hellaswag", 2, None), ("mmlu", 3, None), ("arc", 2, None), ("gsm8k", 2, 64)]


def solved_examples() -> list[str]:
    texts = []
    for name, _, _ in LIBRARY:
        for document in load_documents([FIXTURES / f"{name}.jsonl"], name):
            texts.append(document["description"] + document["query"] + " " + answer_text(document))
    return texts


def train(codec, steps: int) -> torch.nn.Module:
    torch.manual_seed(0)
    stream: list[int] = []
    for text in tiny_corpus(seed=5, num_documents=600) + solved_examples() * 4:
        stream.extend(codec.encode(text) + [codec.eos_id])
    data = torch.tensor(stream)
    model = build_model(SPEC, seed=0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    for _ in range(steps):
        starts = torch.randint(0, len(data) - 129, (16,))
        window = torch.stack([data[s:s + 129] for s in starts.tolist()])
        logits = model(window[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), window[:, 1:].reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


def evaluate(work: Path, backend: str, tasks: dict[str, Path]) -> tuple[dict, float]:
    run_dir = work / f"run-{backend}"
    shutil.rmtree(run_dir, ignore_errors=True)
    (run_dir / "tokenize").mkdir(parents=True)
    shutil.copy(work / "tokenizer.json", run_dir / "tokenize" / "tokenizer.json")
    shutil.copytree(work / "model", run_dir / "pretrain" / "final")
    specs = [{"name": n, "type": n, "path": str(FIXTURES / f"{n}.jsonl"), "num_fewshot": k,
              **({"max_new_tokens": m} if m else {})} for n, k, m in LIBRARY]
    specs.append({"name": "mc_opposites", "type": "multiple_choice", "path": str(tasks["mc_opposites"])})
    specs.append({"name": "mc_arithmetic", "type": "multiple_choice", "path": str(tasks["mc_arithmetic"]),
                  "num_fewshot": 2})
    config = {"stage": "eval", "run_dir": str(run_dir),
              "params": {"eval": {"backend": backend, "tasks": specs, "batch_size": 16,
                                  "perplexity": [{"name": "heldout", "path": str(tasks["heldout"])}]},
                         "checkpoints": {"pretrain": "pretrain/final"}, "tokenizer": "tokenize/tokenizer.json"}}
    start = time.perf_counter()
    run_eval(config)
    seconds = time.perf_counter() - start
    rows = json.loads((run_dir / "eval" / "results.json").read_text())["results"]
    sample = json.loads((run_dir / "eval" / "samples" / "pretrain--gsm8k.jsonl").read_text().splitlines()[0])
    print(f"{backend} gsm8k sample: {sample['generation']!r} -> {sample['exact_match']!r}, "
          f"{sample['exact_match_flexible']!r}; reference {sample['target'][-12:]!r}")
    return {(r["task"], r["metric"]): r for r in rows}, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as directory:
        work = Path(directory)
        os.environ["HF_HOME"] = str(work / "hf")
        codec = load_codec(train_tiny_tokenizer(tiny_corpus(seed=0, num_documents=300) + solved_examples(), 512,
                                                work / "tokenizer.json"))
        save_model(train(codec, args.steps), work / "model")
        tasks = write_tiny_tasks(work / "tasks", seed=1, num_examples=40)
        results, times = {}, {"builtin": [], "lm_eval": []}
        for _ in range(args.runs):
            for backend in times:
                results[backend], seconds = evaluate(work, backend, tasks)
                times[backend].append(seconds)
    print(f"\nlm-eval {__import__('lm_eval').__version__}, model {args.steps} steps, {args.runs} runs per backend")
    for backend, values in times.items():
        print(f"{backend:8s} eval stage wall s: median {statistics.median(values):.2f} "
              f"(runs {', '.join(f'{v:.2f}' for v in values)})")
    print("\n| task | metric | builtin | lm_eval | n |\n|---|---|---|---|---|")
    for key in sorted(results["builtin"]):
        ours, theirs = results["builtin"][key], results["lm_eval"].get(key)

        def show(row):
            if row is None:
                return "-"
            return f"{row['value']:.4f}" + (f" ± {row['stderr']:.4f}" if row["stderr"] is not None else "")
        print(f"| {key[0]} | {key[1]} | {show(ours)} | {show(theirs)} | {ours['count']} |")


if __name__ == "__main__":
    main()
