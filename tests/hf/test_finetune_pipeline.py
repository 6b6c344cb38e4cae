"""The tiny fine-tune end to end on CPU: a Llama checkpoint made here with `transformers` (random
weights, a byte-level BPE tokenizer with a ChatML chat template), a spec with `model.init_from` and
no corpus, `specc launch` on the local executor, and the deploy stage's HF export loaded back by
`transformers`: its logits and greedy generation equal specc's."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "launch"))
from hf_helpers import make_hf_model  # noqa: E402
from launch_helpers import run_dir, specc  # noqa: E402

SPEC = """name: finetune-tiny
description: SFT then DPO of a tiny Llama from a local Hugging Face directory (no corpus, no pretraining).
model:
  init_from: llama-tiny
alignment:
  - {{type: sft, name: sft, data: sft.jsonl, lr: 1e-2, epochs: 1, batch_size: 4}}
  - {{type: dpo, name: dpo, init_from: sft, data: prefs.jsonl, lr: 1e-3, epochs: 1, batch_size: 4, beta: 0.1}}
eval:
  perplexity:
    - {{name: heldout, path: heldout.jsonl}}
deploy:
  targets:
    - {{name: hf, format: hf, accelerator: cpu}}
schedule:
  lr: 1e-5
  seq_len: 48
  seed: {seed}
cluster:
  executor: local
  accelerator: cpu
"""


def _write_data(directory: Path) -> None:
    sft = [{"messages": [{"role": "user", "content": f"What is {a} plus {b}?"},
                         {"role": "assistant", "content": f"The answer is {a + b}."}]} for a in range(4) for b in range(2)]
    prefs = [{"prompt": f"What is {a} plus 1?", "chosen": f"The answer is {a + 1}.", "rejected": "I do not know."}
             for a in range(8)]
    heldout = [{"text": "The quick brown fox jumps over the lazy dog. A model reads tokens."}] * 4
    for name, rows in (("sft.jsonl", sft), ("prefs.jsonl", prefs), ("heldout.jsonl", heldout)):
        (directory / name).write_text("".join(json.dumps(row) + "\n" for row in rows))


@pytest.mark.slow  # transformers and four stage processes: ~40 CPU s (2-2.5 min wall on a loaded 2-core machine)
def test_finetune_launches_sft_dpo_eval_deploy_and_transformers_loads_the_export(tmp_path):
    import torch
    import transformers

    from specc.runtime.infer.decode import SamplingSettings, generate
    from specc.runtime.infer.weights import load_model

    make_hf_model(tmp_path / "llama-tiny", "llama")
    _write_data(tmp_path)
    spec = tmp_path / "finetune-tiny.yaml"
    spec.write_text(SPEC.format(seed=0))

    result = specc("launch", str(spec), "--executor", "local", "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr[-4000:]}"
    bundle = Path(next(line.split()[1] for line in result.stdout.splitlines() if line.startswith("bundle: ")))
    # the graph the spec describes: no data, tokenize or pretrain stage
    assert sorted(p.name for p in (bundle / "stages").iterdir()) == ["01-sft", "02-dpo", "03-eval", "04-deploy"]
    plan = json.loads((bundle / "plan.json").read_text())
    assert plan["stages"] == ["sft", "dpo", "eval", "deploy"] and plan["time"] is None and plan["layout"] is None

    run = run_dir(bundle)
    sft = json.loads((run / "sft" / "final" / "provenance.json").read_text())
    assert sft["inputs"]["init_checkpoint"]["path"] == str(tmp_path / "llama-tiny")
    # eval scores the HF directory's model (`base`) and each trained policy
    scores = json.loads((run / "eval" / "results.json").read_text())["results"]
    assert {row["model"] for row in scores} == {"base", "sft", "dpo"}
    report = json.loads((run / "deploy" / "hf" / "report.json").read_text())
    assert report["heldout_tokens"] == 0 and report["perplexity_full"] is None  # no corpus: nothing held out

    export = run / "deploy" / "hf" / "hf"
    tuned = load_model(run / "dpo" / "final")
    theirs = transformers.AutoModelForCausalLM.from_pretrained(export, dtype=torch.float32).eval()
    tokens = torch.randint(0, 320, (2, 19), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        difference = (theirs(tokens).logits - tuned(tokens)).abs().max().item()
    print(f"max |logits difference| transformers vs specc: {difference:.3g}")
    assert difference < 1e-4

    # the export carries the chat template the stages trained with (the directory's ChatML)
    tokenizer = transformers.AutoTokenizer.from_pretrained(export)
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "What is 2 plus 1?"}],
                                           add_generation_prompt=True, tokenize=True)
    prompt = list(prompt["input_ids"] if hasattr(prompt, "keys") else prompt)
    ours = generate(tuned, prompt, 12, SamplingSettings(), stop_ids=(0, tokenizer.convert_tokens_to_ids("<|im_end|>"))).tokens
    generated = theirs.generate(torch.tensor([prompt]), max_new_tokens=12, do_sample=False)[0, len(prompt):].tolist()
    assert generated == ours
