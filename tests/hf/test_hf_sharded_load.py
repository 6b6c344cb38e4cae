"""Each rank reads only its shards: a Hugging Face directory loaded into a meta-device model
parallelized with FSDP2 (2 gloo ranks) or tensor parallelism gives transformers' logits, and each
rank reads about half of the weight bytes a single process reads."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hf_helpers import make_hf_model

pytestmark = pytest.mark.slow  # torchrun, 2 processes
TORCHRUN = Path(sys.executable).with_name("torchrun")
ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("architecture,layout", [("qwen2", "fsdp"), ("mixtral", "fsdp"), ("llama", "tp")])
def test_sharded_load_matches_transformers(tmp_path, architecture, layout):
    import transformers

    from specc.runtime.hf.load import WeightReader, hf_model_spec, materialize_from_hf, meta_model

    source = make_hf_model(tmp_path / "hf", architecture)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    subprocess.run([str(TORCHRUN), "--standalone", "--nproc_per_node=2", str(Path(__file__).with_name("hf_dist_worker.py")),
                    str(source), layout, str(tmp_path)], env=env, check=True, capture_output=True, timeout=300)
    reference = transformers.AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32).eval()
    tokens = torch.randint(0, 320, (2, 19), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = reference(tokens).logits
    single = materialize_from_hf(meta_model(hf_model_spec(source)), source, "cpu", hf_model_spec(source))
    for rank in range(2):
        torch.testing.assert_close(torch.load(tmp_path / f"logits-{rank}.pt"), expected, atol=2e-5, rtol=0)
        stats = json.loads((tmp_path / f"stats-{rank}.json").read_text())
        read = stats["bytes_read"]
        assert stats["tied"] is (architecture == "qwen2")  # the tiny Qwen2 ties its head to the embedding
        # FSDP2 shards every parameter; TP leaves norms (and the embedding) whole on every rank
        assert read < (0.55 if layout == "fsdp" else 0.8) * single["bytes_read"], (read, single)
    assert WeightReader(source).bytes_read == 0
