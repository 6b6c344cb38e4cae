"""Run datatrove's MinHash dedup on a jsonl.gz corpus (benchmark helper, datatrove's own venv).

    PYTHON_WITH_DATATROVE benchmarks/datatrove_minhash.py INPUT_DIR WORK_DIR --bands B --rows R --workers W

Prints one JSON line: seconds per phase and the ids datatrove removed. datatrove is a
benchmark-only dependency: install it (with spacy, its English word tokenizer) in a
separate environment, e.g. `python -m venv /tmp/dtvenv && /tmp/dtvenv/bin/pip install
datatrove==0.10.1 regex xxhash tokenizers nltk spacy`.
"""

from __future__ import annotations

import argparse
import gzip
import json
import time
from pathlib import Path

from datatrove.executor import LocalPipelineExecutor
from datatrove.pipeline.dedup.minhash import (
    MinhashConfig, MinhashDedupBuckets, MinhashDedupCluster, MinhashDedupFilter, MinhashDedupSignature,
)
from datatrove.pipeline.readers import JsonlReader
from datatrove.pipeline.writers import JsonlWriter


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("input")
    parser.add_argument("work", type=Path)
    parser.add_argument("--bands", type=int, required=True)
    parser.add_argument("--rows", type=int, required=True)
    parser.add_argument("--ngram", type=int, default=5)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    config = MinhashConfig(n_grams=args.ngram, num_buckets=args.bands, hashes_per_bucket=args.rows)
    work = args.work
    tasks = args.workers
    phases = {}

    def run(name, pipeline, num_tasks, workers):
        started = time.perf_counter()
        LocalPipelineExecutor(pipeline=pipeline, tasks=num_tasks, workers=workers,
                              logging_dir=str(work / "logs" / name), skip_completed=False).run()
        phases[name] = time.perf_counter() - started

    reader = lambda: JsonlReader(args.input, id_key="id", text_key="text")  # noqa: E731
    run("signatures", [reader(), MinhashDedupSignature(output_folder=str(work / "sigs"), config=config)],
        tasks, args.workers)
    run("buckets", [MinhashDedupBuckets(input_folder=str(work / "sigs"), output_folder=str(work / "buckets"),
                                        config=config)], args.bands, args.workers)
    run("cluster", [MinhashDedupCluster(input_folder=str(work / "buckets"), output_folder=str(work / "remove_ids"),
                                        config=config)], 1, 1)
    run("filter", [reader(), MinhashDedupFilter(input_folder=str(work / "remove_ids"),
                                                exclusion_writer=JsonlWriter(str(work / "removed")))],
        tasks, args.workers)
    removed = []
    for path in sorted((work / "removed").glob("*.jsonl.gz")):
        with gzip.open(path, "rt") as stream:
            removed.extend(json.loads(line)["id"] for line in stream)
    print(json.dumps({"phases": phases, "seconds": sum(phases.values()), "removed": removed}))


if __name__ == "__main__":
    main()
