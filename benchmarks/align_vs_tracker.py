"""Planner alignment memory vs torch's FSDPMemTracker, for SFT and DPO as the alignment runtime runs them.

Each config builds specc's `Transformer` under FakeTensorMode, places it with the alignment runtime's
own `AlignRuntime.place` (recompute, then FSDP2 per block and root, bf16 params, fp32 reduce) over a
fake process group of 2 ranks, and runs two optimizer steps of the stage's own loss (`sft.masked_nll`
over the global batch's response tokens; DPO's `pair_logps` + `dpo_loss`'s formula, with a frozen FSDP-sharded
reference when `precompute_reference: false`) on rank 0's share of the batch (one micro-batch of 4
sequences: `parallel.micro_batch: 4`), inside FSDPMemTracker
(AdamW foreach=False, ../shared/notes/torch-on-cpu.md). The tracker's peak of the second step is
compared with `specc.plan.alignment_memory.alignment_stage_memory` for the same stage on 2 devices,
without its CUDA-context reserve (allocated memory only).

Run: .venv/bin/python benchmarks/align_vs_tracker.py [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
from torch._subclasses.fake_tensor import FakeTensorMode  # noqa: E402
from torch.distributed._tools.fsdp2_mem_tracker import FSDPMemTracker  # noqa: E402
from torch.distributed.device_mesh import init_device_mesh  # noqa: E402
from torch.testing._internal.distributed.fake_pg import FakeStore  # noqa: E402

from specc.diagnostics.check import check_file  # noqa: E402
from specc.plan.alignment_memory import alignment_stage_memory  # noqa: E402
from specc.runtime.align.data import PreferencePair  # noqa: E402
from specc.runtime.align.distributed import AlignRuntime  # noqa: E402
from specc.runtime.align.dpo import pair_logps  # noqa: E402
from specc.runtime.align.sft import masked_nll  # noqa: E402
from specc.runtime.train import loop  # noqa: E402
from specc.runtime.train.model import Transformer  # noqa: E402
from specc.spec import parallel_dims  # noqa: E402
from specc.spec.alignment import DPOStage, SFTStage  # noqa: E402
from specc.spec.parallel import ParallelSpec  # noqa: E402

WORLD = 2
MiB = 2**20
MODEL = ["model.num_layers=4", "model.hidden_size=512", "model.num_heads=8", "model.num_kv_heads=4",
         "model.ffn_hidden_size=1536", "model.vocab_size=8192", "tokenizer.vocab_size=8192", "model.max_seq_len=1024"]
SEQ_LEN = 512
# (name, stage, recompute)
CONFIGS = [
    ("sft", SFTStage(type="sft", name="sft", data="d.jsonl", batch_size=8, seq_len=SEQ_LEN), "none"),
    ("sft-full-recompute", SFTStage(type="sft", name="sft", data="d.jsonl", batch_size=8, seq_len=SEQ_LEN), "full"),
    ("dpo", DPOStage(type="dpo", name="dpo", data="d.jsonl", batch_size=4, seq_len=SEQ_LEN), "none"),
    ("dpo-held-reference", DPOStage(type="dpo", name="dpo", data="d.jsonl", batch_size=4, seq_len=SEQ_LEN,
                                    precompute_reference=False), "none"),
]


def runtime(recompute: str) -> AlignRuntime:
    """Rank 0 of a 2-rank alignment runtime over the fake process group."""
    dims = parallel_dims.resolve(ParallelSpec(), WORLD)
    meshes = {"dp": init_device_mesh("cpu", (WORLD,))}
    return AlignRuntime(loop.Runtime(0, WORLD, torch.device("cpu"), dims, meshes), "bf16", recompute)


def trace(spec, stage, recompute: str) -> dict:
    rt = runtime(recompute)
    with FakeTensorMode():
        policy = rt.place(Transformer(spec.model), trained=True)
        policy.set_loss(spec.parallel.loss, spec.parallel.loss_chunk_tokens)
        reference = None
        if stage.type == "dpo" and not stage.precompute_reference:
            reference = rt.place(Transformer(spec.model), trained=False)
            reference.set_loss(spec.parallel.loss, spec.parallel.loss_chunk_tokens)
        optimizer = torch.optim.AdamW([p for p in policy.parameters() if p.requires_grad], lr=1e-4,
                                      foreach=False, fused=False)
        tracker = FSDPMemTracker(policy, optimizer)
        local = stage.batch_size // WORLD
        with tracker:
            for step in range(2):
                if stage.type == "sft":
                    rows = torch.randint(0, spec.model.vocab_size, (local, SEQ_LEN + 1))
                    mask = torch.ones(local, SEQ_LEN)
                    (masked_nll(policy, rows, mask, mask.sum() * WORLD) * WORLD).backward()
                else:
                    half = SEQ_LEN // 2
                    pairs = [PreferencePair(list(range(1, half + 1)), list(range(2, half + 2)), list(range(3, half + 3)))
                             for _ in range(local)]
                    chosen, rejected = pair_logps(policy, pairs, 0, SEQ_LEN)
                    if reference is not None:
                        with torch.no_grad():
                            ref_chosen, ref_rejected = pair_logps(reference, pairs, 0, SEQ_LEN)
                    else:
                        ref_chosen, ref_rejected = torch.zeros(local), torch.zeros(local)
                    # dpo_loss's formula (its logged statistics read values, which fake tensors have not)
                    margin = 0.1 * ((chosen.float() - ref_chosen) - (rejected.float() - ref_rejected))
                    (-torch.nn.functional.logsigmoid(margin).mean()).backward()
                optimizer.step()
                optimizer.zero_grad()
                if step == 0:
                    tracker.reset_mod_stats()
        peak = next(iter(tracker.get_tracker_snapshot("peak").values()))
    return {str(k).rsplit(".", 1)[-1]: v for k, v in peak.items()}


def compare(name: str, stage, recompute: str) -> dict:
    overrides = [*MODEL, "cluster.devices=2", "parallel.dp=2", "parallel.micro_batch=4", "parallel.precision=bf16",
                 f"+parallel.recompute={recompute}", "~alignment", "~deploy"]
    result = check_file(ROOT / "specs" / "tiny.yaml", overrides)
    assert result.valid, "\n".join(d.to_text() for d in result.diagnostics)
    spec = result.spec
    planned = alignment_stage_memory(spec, stage, devices=WORLD, precision="bf16")
    allocated = (planned["per_device_gib"] - planned["reserve_gib"]) * 2**30
    peak = trace(spec, stage, recompute)
    return {"config": name, "peak": (allocated, peak["Total"]),
            "states": (sum(m["gib_per_device"] for m in planned["models"]) * 2**30 - 0.0,
                       peak.get("SHARDED_PARAM", 0) + peak.get("OPT", 0) + peak.get("SHARDED_GRAD", 0)),
            "planned_gib": planned}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print the rows as JSON (bytes)")
    parser.add_argument("--only", action="append", help="run only these configs (by name)")
    args = parser.parse_args()
    start = time.perf_counter()
    dist.init_process_group("fake", rank=0, world_size=WORLD, store=FakeStore())
    rows = [compare(*config) for config in CONFIGS if not args.only or config[0] in args.only]
    dist.destroy_process_group()
    if args.json:
        print(json.dumps([{k: v for k, v in row.items() if k != "planned_gib"} for row in rows]))
        return
    print(f"{len(rows)} alignment configs on {WORLD} fake ranks (FSDP2, bf16), traced in "
          f"{time.perf_counter() - start:.0f} s\n")
    print(f"{'config':20} {'peak MiB (plan/tracker)':>30}")
    for row in rows:
        planned, measured = row["peak"]
        print(f"{row['config']:20} {planned / MiB:10.1f}/{measured / MiB:10.1f} {planned / measured - 1:+6.1%}")


if __name__ == "__main__":
    main()
