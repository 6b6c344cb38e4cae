"""Under tensor parallelism the untied head leaves its logits vocab-sharded and the loss runs
under `loss_parallel`: no rank holds the whole vocabulary's logits (the planner's logits term
divides by tp on that basis). Traced on a fake 2-rank process group in a subprocess, so that the
fake group stays out of this test process."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from conftest import ROOT

pytestmark = pytest.mark.slow  # a fake process group in a subprocess, ~5 s

SCRIPT = textwrap.dedent("""
    import json, torch, torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import DTensor
    from torch.testing._internal.distributed.fake_pg import FakeStore
    from specc.runtime.train.loop import cross_entropy, plain
    from specc.runtime.train.model import Transformer
    from specc.runtime.train.parallelize import apply_tp, vocab_parallel_loss
    from specc.spec.model import ModelSpec

    dist.init_process_group("fake", rank=0, world_size=2, store=FakeStore())
    mesh = init_device_mesh("cpu", (2,))
    result = {}
    for tied in (False, True):
        spec = ModelSpec(num_layers=1, hidden_size=32, num_heads=4, ffn_hidden_size=64, vocab_size=96,
                         max_seq_len=16, tie_embeddings=tied)
        model = Transformer(spec)
        apply_tp(model, mesh, False)
        tokens = torch.randint(0, 96, (2, 16))
        logits = model(tokens)
        with vocab_parallel_loss(spec, 2):
            loss = cross_entropy(logits, tokens)
            loss.backward()
        local = logits.to_local() if isinstance(logits, DTensor) else logits
        result[str(tied)] = {"dtensor": isinstance(logits, DTensor), "local_vocab": local.shape[-1],
                             "loss_finite": bool(torch.isfinite(plain(loss)))}
    print(json.dumps(result))
    dist.destroy_process_group()
""")


@pytest.fixture(scope="module")
def traced():
    result = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_untied_head_keeps_logits_vocab_sharded(traced):
    assert traced["False"] == {"dtensor": True, "local_vocab": 48, "loss_finite": True}


def test_tied_head_is_replicated(traced):
    assert traced["True"] == {"dtensor": False, "local_vocab": 96, "loss_finite": True}
