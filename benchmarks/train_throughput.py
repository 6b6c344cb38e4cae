"""Pretraining throughput and MFU of a ~1B Llama-style model at seq 2048 in bf16 (one GPU),
measured by the real runtime (`specc.runtime.train.loop.train`) and set against `specc plan`.

    .venv/bin/python benchmarks/train_throughput.py                  # 1.2B model, cuda
    .venv/bin/python benchmarks/train_throughput.py --compile        # + torch.compile per block
    .venv/bin/python benchmarks/train_throughput.py --spec specs/tiny.yaml --steps 20   # CPU

The model is Llama 3.2 1B's shape (16 layers, d 2048, 32 heads / 8 kv heads, SwiGLU 8192,
vocab 128256, tied: 1.24B parameters). Data are random token shards (throughput does not
depend on the text). MFU = planner FLOPs/token x tokens/s / peak (PaLM appendix B
convention, the planner's `flops_per_token`); tokens/s is the median over steps after warm-up.
Reference: llm-foundry's MPT-1B reaches 41.8% MFU on 8xH100.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

LLAMA_1B = """\
name: llama-1b-throughput
corpus:
  sources: [{type: synthetic, name: random, num_documents: 10}]
tokenizer: {vocab_size: 128256}
model:
  num_layers: 16
  hidden_size: 2048
  num_heads: 32
  num_kv_heads: 8
  ffn_hidden_size: 8192
  vocab_size: 128256
  max_seq_len: 2048
  rope_theta: 500000
  tie_embeddings: true
parallel: {dp: 1, micro_batch: MICRO, precision: bf16, recompute: RECOMPUTE, compile: COMPILE}
schedule: {lr: 3e-4, warmup_steps: 5, seq_len: 2048, global_batch_size: BATCH, steps: STEPS,
           checkpoint_interval: 1000000, eval_interval: 0, log_interval: 1}
cluster: {executor: local, accelerator: ACCEL, devices: 1}
"""


def random_shards(directory: Path, vocab: int, tokens: int, seed: int = 0) -> Path:
    from specc.runtime.shards import ShardWriter, write_meta

    rng = np.random.default_rng(seed)
    splits = {}
    for split, count in (("train", tokens), ("validation", 8192)):
        writer = ShardWriter(directory, split, vocab, eos_id=vocab - 1)
        for _ in range(count // 4096):
            writer.add(rng.integers(0, vocab - 1, 4095).tolist())
        splits[split] = writer.close()
    write_meta(directory, vocab, vocab - 1, splits)
    return directory


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spec", type=Path, help="a spec file instead of the built-in 1B model")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--micro-batch", type=int, default=4)
    parser.add_argument("--batch", type=int, default=8, help="global batch in sequences")
    parser.add_argument("--recompute", default="none", choices=["none", "selective", "full"])
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--accelerator", default="h100-sxm")
    args = parser.parse_args()

    import torch

    from specc.diagnostics.check import check_file
    from specc.plan.plan import build_plan
    from specc.runtime.train.loop import TrainSettings, train

    with tempfile.TemporaryDirectory() as tmp:
        tmp_dir = Path(tmp)
        if args.spec is None:
            text = (LLAMA_1B.replace("MICRO", str(args.micro_batch)).replace("RECOMPUTE", args.recompute)
                    .replace("COMPILE", str(args.compile).lower()).replace("BATCH", str(args.batch))
                    .replace("STEPS", str(args.steps)).replace("ACCEL", args.accelerator))
            spec_path = tmp_dir / "llama-1b.yaml"
            spec_path.write_text(text)
        else:
            spec_path = args.spec
        result = check_file(spec_path)
        if result.spec is None:
            sys.exit("\n".join(str(d) for d in result.diagnostics))
        spec = result.spec
        schedule = spec.schedule.model_copy(update={"steps": args.steps, "checkpoint_interval": 10**6,
                                                    "eval_interval": 0, "log_interval": 1})
        plan = build_plan(spec)
        predicted = {"step_s": plan.time.step_s, "peak_memory_gib": plan.memory.per_device_gib,
                     "flops_per_token": plan.model.flops_per_token, "peak_tflops": plan.hardware.peak_tflops}
        tokens_needed = (args.steps + 2) * schedule.batch_sequences() * (schedule.seq_len + 1)
        shard_dir = random_shards(tmp_dir / "shards", spec.model.vocab_size, tokens_needed)
        parallel = spec.parallel if not isinstance(spec.parallel, str) else None
        if parallel is None:
            sys.exit("give the spec an explicit parallel section")
        train(TrainSettings(spec.model, parallel.model_copy(update={"dp": 1}), schedule, tmp_dir / "out", shard_dir,
                            predicted=predicted))
        records = [json.loads(line) for line in (tmp_dir / "out" / "metrics.jsonl").read_text().splitlines()]
        steady = [r for r in records if r["step"] > min(5, args.steps // 3)][:-1] or records
        tokens_per_s = statistics.median(r["tokens_per_s"] for r in steady)
        step_s = statistics.median(r["step_s"] for r in steady)
        device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
        mfu = predicted["flops_per_token"] * tokens_per_s / (predicted["peak_tflops"] * 1e12)
        print(f"{spec.name} on {device}: {plan.model.params / 1e6:,.1f}M params, compile={parallel.compile}, "
              f"recompute={parallel.recompute}, micro-batch {parallel.micro_batch}, seq {schedule.seq_len}")
        print(f"  tokens/s {tokens_per_s:,.0f}  step {step_s:.3f} s (planner {predicted['step_s']:.3f} s)  MFU {mfu:.1%}")
        print(f"  peak memory {records[-1]['peak_memory_gib']:.2f} GiB (planner {predicted['peak_memory_gib']:.2f} GiB)")


if __name__ == "__main__":
    main()
