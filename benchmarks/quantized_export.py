"""Quantized and GGUF exports as the serving clients load them: held-out perplexity computed by
`transformers` from each exported folder or file, file sizes, export and load times.

    .venv/bin/python benchmarks/quantized_export.py [--steps 400] [--runs 3] [--json out.json]

The model and data are `deploy_quality.py`'s (generated prose + Python stdlib modules; held-out
perplexity on other stdlib modules), with an FFN width that groups of 64 divide. Exports: fp32
HF, int8 (W8A16 per channel), int4 (W4A16 groups of 64, round to nearest) and GPTQ (the same
layout, calibrated on 128 training windows) in the compressed-tensors format; GGUF f32, f16, q8_0
loaded by transformers' GGUF reader. Times are medians over `--runs` exports and loads;
perplexities are deterministic.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from deploy_quality import VOCAB, prepare_data, pretrain  # noqa: E402

from specc.runtime.deploy.compressed import apply_dequantized, quantize_linears_rtn  # noqa: E402
from specc.runtime.deploy.gptq import CALIBRATION_WINDOWS, gptq_model  # noqa: E402
from specc.runtime.deploy.measure import heldout_windows  # noqa: E402
from specc.runtime.hf.export import export_hf  # noqa: E402
from specc.runtime.hf.gguf_export import export_gguf  # noqa: E402
from specc.spec.model import ModelSpec  # noqa: E402

SPEC = ModelSpec(num_layers=4, hidden_size=128, num_heads=4, num_kv_heads=2, ffn_hidden_size=384,
                 vocab_size=VOCAB, max_seq_len=256, tie_embeddings=True)
GROUP = 64


def transformers_perplexity(model, windows: torch.Tensor) -> float:
    with torch.no_grad():
        logits = torch.cat([model(batch[:, :-1]).logits for batch in windows.split(8)])
    nll = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), windows[:, 1:].reshape(-1))
    return math.exp(float(nll))


def quantize(model, method: str, calibration: list[torch.Tensor]):
    if method == "none":
        return None
    if method == "gptq":
        return gptq_model(copy.deepcopy(model), calibration, 4, GROUP)
    return quantize_linears_rtn(model, method, GROUP)


def timed(fn, runs: int):
    """(last result, median seconds)."""
    seconds, result = [], None
    for _ in range(runs):
        start = time.perf_counter()
        result = fn()
        seconds.append(time.perf_counter() - start)
    return result, statistics.median(seconds)


def main() -> None:
    import transformers

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=400, help="pretraining steps")
    parser.add_argument("--runs", type=int, default=3, help="exports and loads timed per format")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    transformers.logging.set_verbosity_error()
    rows = {}
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        prepare_data(work)
        model = pretrain(work / "shards", args.steps, spec=SPEC)
        heldout = torch.tensor(heldout_windows(work / "shards", 129, 48))
        calibration = list(torch.tensor(heldout_windows(work / "shards", 128, CALIBRATION_WINDOWS, "train")).split(8))
        tokenizer = work / "tokenizer.json"
        for method in ("none", "int8", "int4", "gptq"):
            out = work / f"hf-{method}"

            def export():
                quantized = quantize(model, method, calibration)
                return export_hf(model, out, tokenizer, "<|endoftext|>", "<|pad|>", quantized=quantized,
                                 quantization=method, group_size=GROUP)

            files, export_s = timed(export, args.runs)
            loaded, load_s = timed(lambda: transformers.AutoModelForCausalLM.from_pretrained(
                out, dtype=torch.float32).eval(), args.runs)
            rows[f"hf {method}"] = {"perplexity": transformers_perplexity(loaded, heldout), "export_s": export_s,
                                    "load_s": load_s, "bytes": sum((out / f).stat().st_size for f in files
                                                                   if f.endswith(".safetensors"))}
        for kind in ("f32", "f16", "q8_0"):
            path = work / f"model-{kind}.gguf"
            _, export_s = timed(lambda: export_gguf(model, path, tokenizer, "<|endoftext|>", "<|pad|>",
                                                    tensor_type=kind), args.runs)
            loaded, load_s = timed(lambda: transformers.AutoModelForCausalLM.from_pretrained(
                work, gguf_file=path.name, dtype=torch.float32).eval(), args.runs)
            with torch.no_grad():
                max_diff = float((loaded(heldout[:4]).logits - model(heldout[:4])).abs().max())
            rows[f"gguf {kind}"] = {"perplexity": transformers_perplexity(loaded, heldout), "export_s": export_s,
                                    "load_s": load_s, "bytes": path.stat().st_size, "max_logit_diff": max_diff}
    full = rows["hf none"]["perplexity"]
    print(f"{args.steps} steps, {heldout.shape[0]} x {heldout.shape[1] - 1} held-out tokens; "
          f"medians of {args.runs} exports/loads")
    print("| export | perplexity (transformers) | change | weight bytes | export s | load s |\n|---|---|---|---|---|---|")
    for name, row in rows.items():
        print(f"| {name} | {row['perplexity']:.4f} | {(row['perplexity'] / full - 1) * 100:+.2f}% | {row['bytes']:,} | "
              f"{row['export_s']:.3f} | {row['load_s']:.3f} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
