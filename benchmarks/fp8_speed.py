"""Training tokens/s of a ~1B Llama-style model in bf16, fp8 tensorwise and fp8 rowwise on one GPU
with fp8 tensor cores (H100, H200, B200, MI300), next to what `specc plan` predicts for each.

    python benchmarks/fp8_speed.py --steps 20            # about 2 minutes on an H200
    python benchmarks/fp8_speed.py --no-compile          # eager (torchao: compile needed for speed)

Each mode builds specc's runtime model (Llama 3.2 1B's shape: 16 layers, d 2048, 32 / 8 heads,
SwiGLU 8192, vocab 128256, tied; 1.24B parameters), converts it the way `precision: fp8` does
(`specc.runtime.train.precision.apply_float8`: the blocks' Linear layers, not the head),
compiles each block (`parallel.compile`), and runs AdamW steps under bf16 autocast on random
tokens (throughput does not depend on the text). tokens/s is the median over `--steps` timed
steps after `--warmup` steps (compilation happens there). On a machine without such a GPU it
says so and exits 0.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MODEL = dict(num_layers=16, hidden_size=2048, num_heads=32, num_kv_heads=8, ffn_hidden_size=8192,
             vocab_size=128256, max_seq_len=2048, rope_theta=500000, tie_embeddings=True)
MODES = (("bf16", None), ("fp8 tensorwise", "tensorwise"), ("fp8 rowwise", "rowwise"))


def measure(recipe: str | None, args, device) -> float:
    """Median tokens/s of one mode (bf16 when `recipe` is None)."""
    import torch
    import torch.nn.functional as F

    from specc.runtime.train import parallelize as par
    from specc.runtime.train import precision as prec
    from specc.runtime.train.model import build_model
    from specc.spec.model import ModelSpec

    torch.manual_seed(0)
    model = build_model(ModelSpec.model_validate(MODEL), seed=0).to(device)
    if recipe is not None:
        prec.apply_float8(model, recipe, tp=1, fsdp_float8_all_gather=False)
    if args.compile:
        par.apply_compile(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    tokens = torch.randint(0, MODEL["vocab_size"], (args.micro_batch, args.seq_len + 1), device=device)
    synchronize = torch.cuda.synchronize if device.type == "cuda" else (lambda device: None)
    times = []
    for step in range(args.warmup + args.steps):
        synchronize(device)
        begin = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16):
            logits = model(tokens[:, :-1])
        loss = F.cross_entropy(logits.flatten(0, 1).float(), tokens[:, 1:].flatten())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        synchronize(device)
        if step >= args.warmup:
            times.append(time.perf_counter() - begin)
    del model, optimizer
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return args.micro_batch * args.seq_len / statistics.median(times)


def predicted(recipe: str | None, args, accelerator_id: str) -> float:
    """`specc plan`'s tokens/s for the same model and step on one device."""
    from specc.catalog import load_catalog
    from specc.plan.estimate import Workload, estimate_layout
    from specc.plan.layout import Layout
    from specc.spec.model import ModelSpec

    work = Workload(model=ModelSpec.model_validate(MODEL), seq_len=args.seq_len, batch_sequences=args.micro_batch,
                    accelerator=load_catalog()[accelerator_id], devices=1, devices_per_node=1)
    layout = Layout(dp=1, micro_batch=args.micro_batch, grad_accum=1, compile=args.compile,
                    precision="bf16" if recipe is None else "fp8", fp8_recipe=recipe or "tensorwise")
    return estimate_layout(work, layout).time.tokens_per_s


def catalog_id(name: str) -> str | None:
    """The catalog entry of a CUDA device name, for the planner's prediction."""
    name = name.lower()
    for key, entry in (("h200", "h200"), ("h100 pcie", "h100-pcie"), ("h100", "h100-sxm"), ("h800", "h800"),
                       ("gb200", "gb200"), ("b200", "b200"), ("mi300", "mi300x")):
        if key in name:
            return entry
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20, help="timed steps per mode")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first (compilation)")
    parser.add_argument("--micro-batch", type=int, default=4)
    parser.add_argument("--seq-len", type=int, default=2048)
    parser.add_argument("--no-compile", dest="compile", action="store_false")
    args = parser.parse_args()

    import torch

    from specc.runtime.train import precision as prec

    device = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    problem = prec._device_problem("fp8", device)
    if problem:
        print(f"fp8_speed: cannot measure here: {problem}")
        return
    name = torch.cuda.get_device_name(device)
    accelerator = catalog_id(name)
    print(f"fp8_speed: {name}, torch {torch.__version__}, torchao {prec.TORCHAO_VERSION}; 1.24B Llama-style model, "
          f"micro-batch {args.micro_batch} x seq {args.seq_len}, compile={args.compile}; median of {args.steps} steps "
          f"after {args.warmup}")
    baseline = plan_baseline = None
    for label, recipe in MODES:
        tokens_per_s = measure(recipe, args, device)
        plan = predicted(recipe, args, accelerator) if accelerator else float("nan")
        baseline, plan_baseline = baseline or tokens_per_s, plan_baseline or plan
        print(f"  {label:15s} {tokens_per_s:10,.0f} tokens/s  x{tokens_per_s / baseline:.3f}   planner "
              f"{plan:10,.0f} tokens/s  x{plan / plan_baseline:.3f}  ({accelerator or 'device not in the catalog'})",
              flush=True)


if __name__ == "__main__":
    main()
