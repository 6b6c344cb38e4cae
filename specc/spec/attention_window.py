"""The block geometry of specc's sliding-window attention kernel, torch-free.

Why a module of its own: the runtime's windowed kernel (`specc.runtime.train.model`) and the
planner's FLOP count (`specc.plan.params`) must agree on what the kernel computes, and the
planner may not import torch. Both read the cut from here.

The kernel cuts the queries into blocks at multiples of `WINDOW_BLOCK` positions; a block of
queries [a, b) attends the keys [max(0, a - window + 1), b), through one masked
`scaled_dot_product_attention` call. Every key a query of the block may see is inside that
span, and no key outside it is touched: a query computes up to `block + window - 1` keys
instead of the `window` it uses, rather than the whole sequence as a dense masked call does.
"""

from __future__ import annotations

from collections.abc import Iterator

WINDOW_BLOCK = 256
"""Queries per block. A block pays a fixed call cost and about block x (block + window) scores, so
the best block hardly depends on the window. `benchmarks/attention_window.py` on this project's
CPU (seq 8192, 4 heads of 64, fp32 forward + backward, one thread, median of 3): window 1024,
blocks 128 / 256 / 512 / 1024 took 2.11 / 1.95 / 2.18 / 2.50 s; window 256, blocks 128 / 256 / 512
took 1.33 / 1.00 / 1.18 s. Not yet measured on a GPU (the benchmark runs there unchanged)."""

def window_blocks(start: int, length: int, window: int, block: int = WINDOW_BLOCK) -> Iterator[tuple[int, int, int]]:
    """(first query, end query, first key) of each block of the queries at positions
    [start, start + length): blocks end at multiples of `block` (and at the end of the run of
    positions), and a block's keys run from its first key to its end query (exclusive)."""
    position, end = start, start + length
    while position < end:
        stop = min(end, (position // block + 1) * block)
        yield position, stop, max(0, position - window + 1)
        position = stop


def executed_keys_per_query(seq_len: int, window: int, block: int = WINDOW_BLOCK) -> float:
    """Mean keys per query the windowed kernel computes over one sequence (masked ones included).

    Under load-balanced context parallelism each rank's two chunks are cut at their own ends as
    well; when a chunk (seq_len / 2cp) is a multiple of `block` the cut, and so this count, is the
    same, and otherwise the shorter blocks compute fewer keys (this is then an upper bound).
    """
    pairs = sum((stop - first) * (stop - key) for first, stop, key in window_blocks(0, seq_len, window, block))
    return pairs / seq_len
