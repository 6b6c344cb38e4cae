"""Load time of a local Hugging Face directory into specc (`specc.runtime.hf.load`: meta device,
then each tensor read with safetensors `get_slice`) against `transformers.from_pretrained`, and the
logits' max-abs difference, per architecture, on random-weight models made here (no downloads).

    .venv/bin/python benchmarks/hf_load.py [--hidden 512] [--layers 8] [--runs 5]

Prints, per architecture: parameters, weight bytes, median (min-max) seconds over `--runs` loads
for specc and for transformers, and max |logits_specc - logits_transformers| in fp32.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "hf"))
from hf_helpers import ARCHITECTURES, COMMON  # noqa: E402

from specc.runtime.hf.load import load_hf_model  # noqa: E402


def make(directory: Path, architecture: str, hidden: int, layers: int) -> int:
    import transformers

    config_name, model_name, extra = ARCHITECTURES[architecture]
    sizes = dict(hidden_size=hidden, intermediate_size=hidden * 3, num_hidden_layers=layers, num_attention_heads=8,
                 num_key_value_heads=4, vocab_size=8192, max_position_embeddings=512)
    extra = {key: value for key, value in extra.items() if key != "head_dim"}
    config = getattr(transformers, config_name)(**{**COMMON, **extra, **sizes})
    torch.manual_seed(0)
    model = getattr(transformers, model_name)(config)
    model.save_pretrained(directory, max_shard_size="100MB")
    return sum(p.numel() for p in model.parameters())


def timed(load, runs: int) -> tuple[list[float], object]:
    times, model = [], None
    for _ in range(runs):
        start = time.perf_counter()
        model = load()
        times.append(time.perf_counter() - start)
    return times, model


def describe(times: list[float]) -> str:
    return f"{statistics.median(times):.3f} s ({min(times):.3f}-{max(times):.3f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    import transformers

    tokens = torch.randint(0, 8192, (2, 64), generator=torch.Generator().manual_seed(0))
    for architecture in ARCHITECTURES:
        with tempfile.TemporaryDirectory() as tmp:
            directory = Path(tmp) / architecture
            params = make(directory, architecture, args.hidden, args.layers)
            size = sum(p.stat().st_size for p in directory.glob("*.safetensors"))
            ours_times, ours = timed(lambda: load_hf_model(directory), args.runs)
            theirs_times, theirs = timed(lambda: transformers.AutoModelForCausalLM.from_pretrained(
                directory, dtype=torch.float32).eval(), args.runs)
            with torch.no_grad():
                difference = (ours(tokens) - theirs(tokens).logits).abs().max().item()
            print(f"{architecture:8s} {params / 1e6:7.1f}M params {size / 2**20:7.1f} MiB  specc {describe(ours_times)}  "
                  f"transformers {describe(theirs_times)}  max|dlogits| {difference:.2e}", flush=True)


if __name__ == "__main__":
    main()
