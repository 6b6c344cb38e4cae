"""Deployment quality on a small model trained here: perplexity change from int8 / NF4 weight
quantization, speculative decoding's acceptance rate and speed-up, and the tiny eval tasks.

    .venv/bin/python benchmarks/deploy_quality.py [--steps 400] [--draft-steps 300] [--json out.json]

The corpus is generated question/answer prose plus Python standard-library modules; held-out
perplexity is measured on other stdlib modules. Everything is fixed or seeded, so two runs on
one machine print the same quality figures; wall-clock speed-ups depend on the machine and its
load. The tiny tasks are in-distribution (the corpus contains solved examples of the same
kind): they check the harness end to end, not generalisation. The target
is a 4-layer, 128-wide GQA model, the draft a 1-layer, 64-wide model distilled from it.
"""

from __future__ import annotations

import argparse
import json
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from specc.runtime.deploy.distill import distill_draft
from specc.runtime.deploy.measure import heldout_windows, speculative_report, window_perplexity
from specc.runtime.deploy.quantize import quantize_model, weight_bytes
from specc.evaltasks import FORMATS, load_documents
from specc.runtime.evaluate import harness
from specc.runtime.evaluate.prompts import fewshot_contexts
from specc.runtime.evaluate.tasks import load_examples
from specc.runtime.evaluate.tiny import GENERATIVE_PATTERN, tiny_corpus, train_tiny_tokenizer, write_tiny_tasks
from specc.runtime.infer.decode import SamplingSettings
from specc.runtime.infer.speculative import speculative_generate
from specc.runtime.infer.weights import load_codec
from specc.runtime.shards import ShardWriter, open_split, write_meta
from specc.runtime.train.data import SequenceStream
from specc.runtime.train.model import build_model, num_parameters
from specc.spec.model import ModelSpec

VOCAB = 512
TARGET = ModelSpec(num_layers=4, hidden_size=128, num_heads=4, num_kv_heads=2, ffn_hidden_size=344,
                   vocab_size=VOCAB, max_seq_len=256, tie_embeddings=True)
DRAFT = ModelSpec(num_layers=1, hidden_size=64, num_heads=2, ffn_hidden_size=172, vocab_size=VOCAB,
                  max_seq_len=256, tie_embeddings=True)


def stdlib_sources(start: int, count: int) -> list[str]:
    """Python standard-library modules (every machine has them): real text whose perplexity is
    not trivially low, so quantization error shows. Sorted, so the split is the same everywhere."""
    files = sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py"))[start:start + count]
    return [path.read_text(errors="replace")[:20000] for path in files]


def prepare_data(work: Path):
    """Corpus -> tokenizer -> token shards, all fixed: train = generated Q/A prose + stdlib
    modules; validation = other stdlib modules (the held-out perplexity is on code)."""
    train_docs = tiny_corpus(seed=11, num_documents=3000) + stdlib_sources(0, 150)
    validation_docs = stdlib_sources(150, 20)
    codec = load_codec(train_tiny_tokenizer(train_docs, VOCAB, work / "tokenizer.json"))
    splits = {}
    for split, documents in (("train", train_docs), ("validation", validation_docs)):
        writer = ShardWriter(work / "shards", split, VOCAB, codec.eos_id)
        for document in documents:
            writer.add(codec.encode(document))
        splits[split] = writer.close()
    write_meta(work / "shards", VOCAB, codec.eos_id, splits)
    return codec


def pretrain(shard_dir: Path, steps: int, batch: int = 16, seq_len: int = 128, lr: float = 3e-3,
             spec: ModelSpec = TARGET) -> torch.nn.Module:
    """Plain next-token training with AdamW and cosine decay (enough to make the figures meaningful)."""
    model = build_model(spec, seed=0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.1)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps, pct_start=0.05)
    stream = SequenceStream(open_split(shard_dir, "train"), seq_len, seed=0)
    for step in range(steps):
        batch_tokens = stream.sequences(step * batch, batch)
        logits = model(batch_tokens[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, VOCAB), batch_tokens[:, 1:].reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        if (step + 1) % 100 == 0:
            print(f"  pretrain step {step + 1}: loss {loss.item():.3f}", file=sys.stderr)
    return model.eval()


def quantization_figures(model, windows) -> dict:
    figures = {"fp32": {"perplexity": window_perplexity(model, windows), "weight_bytes": weight_bytes(model)}}
    for method in ("int8", "nf4"):
        quantized = build_model(TARGET, 0)
        quantized.load_state_dict(model.state_dict())
        quantized = quantize_model(quantized.eval(), method, group_size=64)
        ppl = window_perplexity(quantized, windows)
        figures[method] = {"perplexity": ppl, "perplexity_change": ppl / figures["fp32"]["perplexity"] - 1.0,
                           "weight_bytes": weight_bytes(quantized)}
    return figures


def sampled_acceptance(target, draft, prompts, num_tokens: int, new_tokens: int) -> float:
    generator = torch.Generator().manual_seed(0)
    accepted = proposed = 0
    for prompt in prompts:
        result = speculative_generate(target, draft, prompt, new_tokens, num_tokens,
                                      SamplingSettings(temperature=1.0), generator=generator)
        accepted, proposed = accepted + result.accepted, proposed + result.proposed
    return accepted / proposed if proposed else 0.0


def eval_figures(model, codec, work: Path) -> list[dict]:
    files = write_tiny_tasks(work / "tasks", seed=1, num_examples=100)
    rows = []
    for name, k in (("mc_arithmetic", 3), ("mc_opposites", 3)):
        documents, recipe = load_documents([files[name]], "multiple_choice"), FORMATS["multiple_choice"].recipe
        contexts = fewshot_contexts(documents, documents, k, recipe, pool_is_scored=True)
        acc = harness.multiple_choice(model, codec, documents, contexts, recipe, 32)[0]["acc"]
        mean, stderr = harness.mean_and_stderr(acc)
        rows.append({"task": name, "metric": "acc", "value": mean, "stderr": stderr, "count": len(acc)})
    correct, _ = harness.generative(model, codec, load_examples(files["gen_arithmetic"], "generative"), 3,
                                    GENERATIVE_PATTERN, 4)
    mean, stderr = harness.mean_and_stderr(correct)
    rows.append({"task": "gen_arithmetic", "metric": "exact_match", "value": mean, "stderr": stderr,
                 "count": len(correct)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=400, help="target pretraining steps")
    parser.add_argument("--draft-steps", type=int, default=300, help="draft distillation steps")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    started = time.time()
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        codec = prepare_data(work)
        target = pretrain(work / "shards", args.steps)
        draft = distill_draft(target, DRAFT, work / "shards", work / "draft", args.draft_steps, 16, 128, 3e-3, seed=1)
        windows = heldout_windows(work / "shards", 129, 48)
        quant = quantization_figures(target, windows)
        prompts = [w[:32] for w in windows[:8]]
        speculative = {k: speculative_report(target, draft, prompts, 96, k) for k in (2, 4)}
        for k in (2, 4):
            speculative[k]["sampled_acceptance_rate"] = sampled_acceptance(target, draft, prompts, k, 96)
        evaluation = eval_figures(target, codec, work)
    figures = {"target_params": num_parameters(target), "draft_params": num_parameters(draft),
               "pretrain_steps": args.steps, "draft_steps": args.draft_steps, "heldout_tokens": 48 * 128,
               "quantization": quant, "speculative": speculative, "eval": evaluation,
               "seconds": time.time() - started, "threads": args.threads}
    print(f"target {figures['target_params']:,} params ({args.steps} steps), draft {figures['draft_params']:,} params "
          f"(distilled {args.draft_steps} steps); held-out {figures['heldout_tokens']} tokens")
    print("| weights | perplexity | change | weight bytes |\n|---|---|---|---|")
    for name, row in quant.items():
        change = f"{row['perplexity_change'] * 100:+.2f}%" if "perplexity_change" in row else "-"
        print(f"| {name} | {row['perplexity']:.4f} | {change} | {row['weight_bytes']:,} |")
    print("| draft tokens | greedy acceptance | sampled acceptance | tokens/target call | speed-up "
          "| greedy identical |")
    print("|---|---|---|---|---|---|")
    for k, row in speculative.items():
        print(f"| {k} | {row['acceptance_rate']:.3f} | {row['sampled_acceptance_rate']:.3f} | "
              f"{row['tokens_per_target_call']:.2f} | {row['speedup']:.2f}x | {row['greedy_identical']} |")
    print("| task | metric | value | ± stderr | n |\n|---|---|---|---|---|")
    for row in evaluation:
        print(f"| {row['task']} | {row['metric']} | {row['value']:.3f} | {row['stderr']:.3f} | {row['count']} |")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
