"""Sliding-window attention: forward + backward time of the runtime's window kernel against the
dense masked call it replaced and against plain causal attention, on one long sequence.

    .venv/bin/python benchmarks/attention_window.py                        # seq 8192, window 1024, 4 heads
    .venv/bin/python benchmarks/attention_window.py --seq 16384 --window 4096 --blocks 128,256,512
    .venv/bin/python benchmarks/attention_window.py --flex                 # + compiled FlexAttention

Rows (the same q, k, v; medians over --repeats rounds of every row, after one warm-up):
- `dense window mask`: one masked scaled_dot_product_attention call over every key, what the
  runtime ran for `sliding_window` before the window kernel (`Attention.window_block` = seq);
- `window kernel (block B)`: `Attention.window_attention`, the runtime's kernel, at its default
  block (`specc.spec.attention_window.WINDOW_BLOCK`) and any --blocks;
- `causal, no window`: scaled_dot_product_attention(is_causal=True), full causal attention;
- `flex_attention (compiled)`: torch's FlexAttention with a block mask, for comparison (on CUDA by
  default, on CPU with --flex: it compiles a kernel first).
Each row prints the keys per query it computes (the planner's count for the window kernel) and
its speed-up over the dense mask. CUDA is used when available (bf16), else the CPU (fp32).

Measured on this project's 2-core CPU (torch 2.13, defaults, near idle, median of 5): dense window
mask 3.18 s, window kernel 0.566 s (5.6x; 8192 / 1199 = 6.8x fewer keys), causal without a window
1.22 s. Other processes on the cores slow the kernel's many short calls most (2 threads at load 4:
1.5-2x only); `--threads 1` is steadier (5.2x at load 4-5). FlexAttention on CPU in torch 2.13 has
no backward ("FlexAttention does not support backward on CPU"), so it cannot train there.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from specc.runtime.train.model import Attention  # noqa: E402
from specc.spec.attention_window import WINDOW_BLOCK, executed_keys_per_query  # noqa: E402
from specc.spec.model import ModelSpec  # noqa: E402


def attention_module(args: argparse.Namespace) -> Attention:
    spec = ModelSpec.model_validate(dict(
        num_layers=1, hidden_size=args.heads * args.head_dim, num_heads=args.heads, num_kv_heads=args.kv_heads,
        ffn_hidden_size=4 * args.heads * args.head_dim, vocab_size=256, max_seq_len=args.seq,
        sliding_window=args.window))
    return Attention(spec)


def time_rows(rows: list, device: torch.device, repeats: int) -> dict[str, float]:
    """Median seconds of each row's step (forward + backward) over `repeats` rounds after one
    warm-up; each round runs every row once, so load from other processes falls on all rows alike.
    A row that fails is reported and dropped."""
    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()
    live = []
    for name, _, step in rows:
        try:
            step()
            live.append((name, step))
        except Exception as error:  # report why, keep the other rows
            print(f"{name}: failed: {type(error).__name__}: {error}")
    times: dict[str, list[float]] = {name: [] for name, _ in live}
    for _ in range(repeats):
        for name, step in live:
            sync()
            start = time.perf_counter()
            step()
            sync()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def flex_step(q, k, v, window: int, scale: float):
    """Compiled FlexAttention with a causal sliding-window block mask (torchtitan's pattern); the
    mask and the kernel are built on the first (warm-up) call."""
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    def mask_mod(b, h, q_idx, kv_idx):
        return (kv_idx <= q_idx) & (q_idx - kv_idx < window)

    built = {}

    def step():
        if not built:
            seq = q.shape[2]
            built["mask"] = create_block_mask(mask_mod, None, None, seq, seq, device=q.device.type)
            built["kernel"] = torch.compile(flex_attention)
        out = built["kernel"](q, k, v, block_mask=built["mask"], scale=scale, enable_gqa=q.shape[1] != k.shape[1])
        out.float().sum().backward()
    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seq", type=int, default=8192)
    parser.add_argument("--window", type=int, default=1024)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--kv-heads", type=int, default=4)
    parser.add_argument("--head-dim", type=int, default=64)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--blocks", default="", help="extra block sizes to time, comma-separated")
    parser.add_argument("--flex", action="store_true", help="also time compiled FlexAttention on the CPU")
    parser.add_argument("--threads", type=int, default=0, help="CPU intra-op threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    attention = attention_module(args).to(device)
    generator = torch.Generator(device=device).manual_seed(0)
    q, k, v = (torch.randn(args.batch, heads, args.seq, args.head_dim, device=device, dtype=dtype,
                           generator=generator, requires_grad=True)
               for heads in (args.heads, args.kv_heads, args.kv_heads))

    def window_step(block: int):
        def step():
            attention.window_block = block
            attention.window_attention(q, k, v, 0.0).float().sum().backward()
        return step

    def causal_step():
        F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=attention.scale,
                                       enable_gqa=args.heads != args.kv_heads).float().sum().backward()

    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    load = f", load average {os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else ""
    print(f"torch {torch.__version__} on {where}{load}; {dtype}; batch {args.batch}, seq {args.seq}, "
          f"window {args.window}, {args.heads} heads ({args.kv_heads} kv) of {args.head_dim}; "
          f"forward + backward, median of {args.repeats}")

    blocks = [WINDOW_BLOCK] + [int(b) for b in args.blocks.split(",") if b and int(b) != WINDOW_BLOCK]
    rows = [("dense window mask", float(args.seq), window_step(args.seq))]
    rows += [(f"window kernel (block {b})", executed_keys_per_query(args.seq, args.window, b), window_step(b))
             for b in blocks]
    rows.append(("causal, no window", (args.seq + 1) / 2, causal_step))
    if device.type == "cuda" or args.flex:
        rows.append(("flex_attention (compiled)", float(args.window), flex_step(q, k, v, args.window, attention.scale)))

    medians = time_rows(rows, device, args.repeats)
    dense_s = medians.get("dense window mask")
    print(f"{'kernel':<28}{'keys/query':>12}{'median s':>12}{'vs dense mask':>15}")
    for name, keys, _ in rows:
        if name in medians:
            ratio = f"{dense_s / medians[name]:>14.2f}x" if dense_s else ""
            print(f"{name:<28}{keys:>12.0f}{medians[name]:>12.4f}{ratio}")

if __name__ == "__main__":
    main()
