"""Peak memory and time of one forward + backward with the chunked loss vs the full logits, on CPU.

specc's own model (`Transformer`, a small body under a large vocabulary so that the loss dominates) runs
`next_token_loss` (the training loop's loss) both ways: `parallel.loss: full` (logits, then
`cross_entropy` in fp32) and `chunked` (specc/runtime/train/loss.py). Peak memory is torch's MemTracker
over real tensors (every tensor the step allocates, parameters and gradients included); time is the
median over `--repeats` steps after one warm-up, printed with the chunked/full ratio. The planner's
loss working set for the same layout (`specc.plan.loss_memory.logits_memory`) is printed beside the
measured difference. Imports torch; `specc plan` does not.

Run: .venv/bin/python benchmarks/chunked_loss.py [--vocab 32000] [--seq 2048] [--precision fp32|bf16]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from contextlib import nullcontext
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
from torch.distributed._tools.mem_tracker import MemTracker  # noqa: E402

from specc.plan.layout import Layout  # noqa: E402
from specc.plan.loss_memory import logits_memory  # noqa: E402
from specc.runtime.train.loop import next_token_loss  # noqa: E402
from specc.runtime.train.model import build_model  # noqa: E402
from specc.spec.model import ModelSpec  # noqa: E402

MiB = 2**20


def step(model, tokens: torch.Tensor, chunked: bool, precision: str) -> None:
    autocast = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if precision == "bf16" else nullcontext
    next_token_loss(model, tokens[:, :-1], tokens[:, 1:], chunked, autocast).backward()


def measure(spec: ModelSpec, loss: str, args) -> tuple[float, list[float]]:
    model = build_model(spec, seed=0)
    model.set_loss(loss, args.chunk_tokens)
    chunked = model.loss_chunk_tokens is not None
    tokens = torch.randint(0, spec.vocab_size, (args.batch, args.seq + 1), generator=torch.Generator().manual_seed(0))
    step(model, tokens, chunked, args.precision)  # warm-up; gradients exist from here on, as in training
    tracker = MemTracker()
    tracker.track_external(model)
    with tracker:
        step(model, tokens, chunked, args.precision)
    peak = tracker.get_tracker_snapshot("peak")[torch.device("cpu")]["Total"]
    times = []
    for _ in range(args.repeats):
        begin = time.perf_counter()
        step(model, tokens, chunked, args.precision)
        times.append(time.perf_counter() - begin)
    return peak, times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--seq", type=int, default=2048)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--chunk-tokens", type=int, default=1024)
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    spec = ModelSpec(num_layers=args.layers, hidden_size=args.hidden, num_heads=max(1, args.hidden // 64),
                     ffn_hidden_size=4 * args.hidden, vocab_size=args.vocab, max_seq_len=args.seq)
    print(f"{args.layers} layers x {args.hidden} hidden, vocab {args.vocab}, {args.batch} x {args.seq} tokens, "
          f"{args.precision}, chunks of {args.chunk_tokens} tokens; {args.repeats} timed steps each\n")
    results = {loss: measure(spec, loss, args) for loss in ("full", "chunked")}
    for loss, (peak, times) in results.items():
        print(f"{loss:8} peak {peak / MiB:8.1f} MiB   step median {statistics.median(times) * 1e3:7.1f} ms "
              f"(min {min(times) * 1e3:.1f}, max {max(times) * 1e3:.1f})")
    (full_peak, full_times), (chunked_peak, chunked_times) = results["full"], results["chunked"]
    print(f"\nchunked / full: peak {chunked_peak / full_peak:.3f}, step time "
          f"{statistics.median(chunked_times) / statistics.median(full_times):.3f}")
    planned = {loss: logits_memory(spec, Layout(dp=1, micro_batch=args.batch, precision=args.precision, loss=loss,
                                                loss_chunk_tokens=args.chunk_tokens), args.seq)
               for loss in ("full", "chunked")}
    print(f"planner's loss working set: full {planned['full'] / MiB:.1f} MiB, chunked {planned['chunked'] / MiB:.1f} MiB; "
          f"difference planned {(planned['full'] - planned['chunked']) / MiB:.1f} MiB, "
          f"measured {(full_peak - chunked_peak) / MiB:.1f} MiB")


if __name__ == "__main__":
    main()
