"""Sharded dedup scaling: docs/s and peak RSS per task at 1, 2 and 4 tasks, per-task memory as the
corpus grows 4x, and the projected cost of 1B and 10B documents.

    .venv/bin/python benchmarks/dedup_scaling.py [--documents 10000] [--runs 3] [--json out.json]

Every task of every phase (specc.runtime.data.sharded_dedup) runs as its own process, one at a
time, and its wall time and peak RSS (ru_maxrss from wait4) are recorded; the single-process
dedup (dedup.deduplicate) runs the same way on the same signatures. Peak RSS includes the Python
interpreter with numpy and datasketch loaded ("baseline", measured by a process that only
imports the module); "above baseline" is what the task's own arrays add. Medians over --runs.

What is bounded: a bucket task holds (documents x (bands + 1)) / tasks entries, so at a fixed
tasks-per-document ratio (4x corpus, 4x tasks) its memory is flat; a bands or filter task holds
one part, whatever the corpus; the one clusters task holds the verified pairs (~ duplicates).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from specc.runtime.data import sharded_dedup as sd  # noqa: E402
from specc.runtime.data.dedup import lsh_params  # noqa: E402
from specc.plan.data_stage import ENTRY_BYTES, sharded_dedup_memory  # noqa: E402
from specc.runtime.data.documents import write_documents  # noqa: E402
from specc.runtime.data.synthetic import generate  # noqa: E402
from specc.spec.data import MinHashSpec, SyntheticSource  # noqa: E402

SPEC = MinHashSpec(threshold=0.8)
PART_DOCUMENTS = 1000
DUPLICATE_FRACTION = 0.1
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
SINGLE = """#
import sys, numpy as np
from pathlib import Path
from specc.runtime.data.dedup import deduplicate
from specc.runtime.data import sharded_dedup as sd
job = sd.Job.load(Path(sys.argv[-1]))
count = sum(len(np.load(job.signature_path(p), mmap_mode="r")) for p in range(len(job.parts)))
# exact=False: exact copies have equal signatures, so the MinHash index removes them too
deduplicate(np.zeros(count, np.uint64), (np.load(job.signature_path(p), mmap_mode="r") for p in range(len(job.parts))), False, job.minhash)
"""


CHILD = """
import json, sys, time
out, code = sys.argv[1], sys.argv[2]
sys.argv = sys.argv[2:]
from specc.runtime.data import sharded_dedup
started = time.perf_counter()
exec(code) if code.startswith("#") else sharded_dedup.main(sys.argv)
seconds = time.perf_counter() - started
peak = next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith("VmHWM:"))
json.dump({"seconds": seconds, "peak_rss": peak}, open(out, "w"))
"""


def measured(arguments: list[str]) -> tuple[float, int]:
    """(seconds of work, peak RSS bytes) of one child process: the work is timed inside it, after its
    imports, and the peak is its own VmHWM (ru_maxrss of a child inherits the parent's peak)."""
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        subprocess.run([sys.executable, "-c", CHILD, out.name, *arguments], env=ENV, check=True)
        found = json.loads(Path(out.name).read_text())
    return found["seconds"], found["peak_rss"]


def write_corpus(directory: Path, documents: int) -> list[dict]:
    source = SyntheticSource(type="synthetic", name="prose", num_documents=documents, seed=7,
                             duplicate_fraction=DUPLICATE_FRACTION, junk_fraction=0.0)
    texts = [generated.document for generated in generate(source)]
    parts = []
    for start in range(0, len(texts), PART_DOCUMENTS):
        path = directory / f"{start // PART_DOCUMENTS:05d}.jsonl.gz"
        write_documents(path, texts[start:start + PART_DOCUMENTS])
        parts.append({"documents": str(path)})
    return parts


def run_once(directory: Path, parts: list[dict], tasks: int, documents: int) -> dict:
    """Every phase's tasks, one process each: per-phase docs/s per task and peak RSS per task."""
    job = sd.prepare(directory, parts, tasks, True, SPEC)
    phases = {}
    for phase in sd.PHASES:
        runs = [measured([phase, str(job.workdir), "--task", str(task)]) for task in range(sd.phase_tasks(job, phase))]
        seconds = [s for s, _ in runs]
        phases[phase] = {"tasks": len(runs), "cpu_seconds": sum(seconds), "slowest_task_seconds": max(seconds),
                         "docs_per_s_per_task": documents / sum(seconds), "peak_rss": max(r for _, r in runs)}
    return phases


def single_once(directory: Path) -> dict:
    seconds, rss = measured([SINGLE, str(directory)])
    return {"seconds": seconds, "peak_rss": rss}


def median_of(runs: list[dict]) -> dict:
    return {phase: {key: statistics.median(r[phase][key] for r in runs) for key in runs[0][phase]} for phase in runs[0]}


def projection(rates: dict, documents: float, task_memory: float, bands: int) -> dict:
    """CPU-hours from the measured docs/s per task, and tasks sized so a bucket task holds
    `task_memory` bytes of entries (ENTRY_BYTES each, specc.plan.data_stage)."""
    tasks = int(np.ceil(documents * (bands + 1) * ENTRY_BYTES / task_memory))
    hours = {phase: documents / rates[phase]["docs_per_s_per_task"] / 3600 for phase in sd.PHASES}
    pairs = int(documents * DUPLICATE_FRACTION)  # about one verified pair per removed duplicate
    clusters = sharded_dedup_memory(int(documents), tasks, PART_DOCUMENTS, SPEC, True, pairs)["clusters"]
    return {"bucket_tasks": tasks, "cpu_hours": {k: round(v) for k, v in hours.items()},
            "cpu_hours_total": round(sum(hours.values())), "clusters_task_bytes": clusters,
            "clusters_task_hours": round(hours["clusters"], 1)}


def gib(value: float) -> str:
    return f"{value / 2**20:8.1f} MiB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--documents", type=int, default=10_000, help="the 1x corpus; the 4x corpus is 4 times it")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    bands, rows = lsh_params(SPEC)
    _, baseline = measured(["# imports only"])
    print(f"threshold {SPEC.threshold}, {SPEC.num_perm} permutations, {bands} bands x {rows} rows; "
          f"{PART_DOCUMENTS} documents per part; interpreter baseline RSS {gib(baseline)}")
    figures: dict = {"baseline_rss": baseline, "bands": bands, "rows": rows, "runs": args.runs, "sizes": {}}
    with tempfile.TemporaryDirectory() as scratch:
        for scale in (1, 4):
            documents = args.documents * scale
            parts = write_corpus(Path(scratch) / f"in-{scale}", documents)
            by_tasks = {}
            for tasks in (1, 2, 4):
                runs = [run_once(Path(scratch) / f"job-{scale}-{tasks}-{run}", parts, tasks, documents)
                        for run in range(args.runs)]
                by_tasks[tasks] = median_of(runs)
            single = [single_once(Path(scratch) / f"job-{scale}-1-{run}") for run in range(args.runs)]
            figures["sizes"][documents] = {"tasks": by_tasks, "single_process": {
                key: statistics.median(s[key] for s in single) for key in single[0]}}
            print(f"\n{documents:,} documents ({len(parts)} parts), medians over {args.runs} runs:")
            print(f"  {'phase':<9} {'tasks':>5} {'docs/s/task':>12} {'slowest task':>13} {'peak RSS/task':>14} {'above baseline':>15}")
            for tasks, phases in by_tasks.items():
                for phase, row in phases.items():
                    print(f"  {phase:<9} {int(row['tasks']):>5} {row['docs_per_s_per_task']:>12,.0f} "
                          f"{row['slowest_task_seconds']:>12.2f}s {gib(row['peak_rss']):>14} {gib(row['peak_rss'] - baseline):>15}")
            one = figures["sizes"][documents]["single_process"]
            print(f"  single process: {documents / one['seconds']:,.0f} docs/s, peak RSS {gib(one['peak_rss'])} "
                  f"({gib(one['peak_rss'] - baseline)} above baseline)")
    small, large = (figures["sizes"][args.documents * s]["tasks"] for s in (1, 4))
    print("\nbucket task memory above baseline (what the design bounds):")
    for tasks in (1, 2, 4):
        print(f"  {tasks} task(s): 1x corpus {gib(small[tasks]['buckets']['peak_rss'] - baseline)}, "
              f"4x corpus {gib(large[tasks]['buckets']['peak_rss'] - baseline)}")
    print(f"  fixed tasks per document: 1x corpus / 1 task {gib(small[1]['buckets']['peak_rss'] - baseline)}, "
          f"4x corpus / 4 tasks {gib(large[4]['buckets']['peak_rss'] - baseline)}")
    rates = large[4]
    print("\nprojection from the 4x corpus at 4 tasks (docs/s per task; bucket tasks sized to 4 GiB of entries):")
    for documents in (1e9, 1e10):
        projected = projection(rates, documents, 4 * 2**30, bands)
        figures.setdefault("projection", {})[f"{documents:.0e}"] = projected
        print(f"  {documents:.0e} documents: {projected['cpu_hours_total']:,} CPU-hours "
              f"({projected['cpu_hours']}), {projected['bucket_tasks']:,} bucket tasks; "
              f"= {projected['cpu_hours_total'] / 64 / 24:,.1f} node-days on 64-core nodes; "
              f"the clusters task holds ~{projected['clusters_task_bytes'] / 2**30:,.0f} GiB of pairs "
              f"at {DUPLICATE_FRACTION:.0%} duplicates and runs ~{projected['clusters_task_hours']} h on one core")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1, sort_keys=True, default=str))


if __name__ == "__main__":
    main()
