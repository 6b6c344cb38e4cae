"""Constitutional-style data (Bai et al. 2022, section 3.1): respond, critique, revise.

For each prompt the current model writes a response; then, for each of `rounds`, a principle
is drawn from the spec's list, the model critiques its latest response against it
(`templates/constitutional/critique.jinja`, asked as the next user turn) and rewrites it
(`revision.jinja`). The result is SFT data (`{"prompt", "response": final revision}`) or DPO
pairs (`{"prompt", "chosen": final revision, "rejected": first response}`), written to
`<run_dir>/<name>/data.jsonl`, which later `sft`/`dpo` stages name as their `data`.

Deterministic with the stage's seed: prompt i samples from its own generator seeded by
(seed, i), and draws principles from its own seeded RNG, so a resumed run (which skips
prompts already in `traces.jsonl`) writes the same file as an uninterrupted one.
"""

from __future__ import annotations

import json
import random

import torch
from jinja2 import StrictUndefined
from jinja2.sandbox import ImmutableSandboxedEnvironment

from specc.runtime.align.chat import templates_root
from specc.runtime.align.common import StageContext, finish, inputs_record
from specc.runtime.align.ppo import response_stop
from specc.runtime.evaluate.tasks import read_jsonl
from specc.runtime.infer.decode import SamplingSettings, generate
from specc.runtime.infer.weights import load_model
from specc.runtime.io import atomic_write_text

SAMPLING = SamplingSettings(temperature=0.7, top_p=0.95)
"""Sampling for responses, critiques and revisions (the paper samples at temperature 1 from a
52B model; a lower temperature keeps small models on topic)."""


def render(name: str, **values: str) -> str:
    environment = ImmutableSandboxedEnvironment(undefined=StrictUndefined, keep_trailing_newline=False)
    source = (templates_root() / "constitutional" / f"{name}.jinja").read_text()
    return environment.from_string(source).render(**values).strip()


class Writer:
    """The model's next assistant turn for a conversation, sampled with a given generator."""

    def __init__(self, model, context: StageContext):
        self.model, self.context = model, context
        self.stop = response_stop(context)

    def reply(self, messages: list[dict], generator: torch.Generator) -> str:
        context, stage = self.context, self.context.stage
        prompt = context.codec.encode(context.template.prompt(messages))
        room = context.seq_len - stage.max_new_tokens
        prompt = prompt[-room:] if room > 0 else prompt[-1:]
        tokens = generate(self.model, prompt, stage.max_new_tokens, SAMPLING, stop_ids=(context.codec.eos_id,),
                          generator=generator, stop_when=self.stop).tokens
        text = context.codec.decode([t for t in tokens if t != context.codec.eos_id])
        end = context.template.end_of_turn
        return (text.split(end)[0] if end else text).strip()


def constitutional_trace(writer: Writer, prompt: str, principles: list[str], rounds: int, seed: int,
                         index: int) -> dict:
    """Response, then `rounds` of (principle, critique, revision) for one prompt."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + index)
    rng = random.Random(seed * 1_000_003 + index)
    conversation = [{"role": "user", "content": prompt}]
    response = writer.reply(conversation, generator)
    current, steps = response, []
    for _ in range(rounds):
        principle = rng.choice(principles)
        exchange = conversation + [{"role": "assistant", "content": current}]
        critique_turn = {"role": "user", "content": render("critique", principle=principle)}
        critique = writer.reply(exchange + [critique_turn], generator)
        revision_turn = {"role": "user", "content": render("revision", principle=principle, critique=critique)}
        revision = writer.reply(exchange + [critique_turn, {"role": "assistant", "content": critique}, revision_turn],
                                generator)
        steps.append({"principle": principle, "critique": critique, "revision": revision})
        current = revision
    return {"index": index, "prompt": prompt, "response": response, "rounds": steps, "final": current}


def as_training_row(trace: dict, output: str) -> dict:
    if output == "sft":
        return {"prompt": trace["prompt"], "response": trace["final"]}
    return {"prompt": trace["prompt"], "chosen": trace["final"], "rejected": trace["response"]}


def run_constitutional(context: StageContext) -> None:
    stage = context.stage
    model = load_model(context.path("init_checkpoint"), "cuda" if torch.cuda.is_available() else "cpu")
    prompts = [str(row["prompt"]) for row in read_jsonl(context.data_path(stage.prompts))]
    traces_path = context.out_dir / "traces.jsonl"
    context.out_dir.mkdir(parents=True, exist_ok=True)
    done = [json.loads(line) for line in traces_path.read_text().splitlines()] if traces_path.exists() else []
    done = [trace for position, trace in enumerate(done) if trace.get("index") == position]
    atomic_write_text(traces_path, "".join(json.dumps(t) + "\n" for t in done))
    writer = Writer(model, context)
    print(f"{stage.name}: {len(prompts)} prompts, {len(stage.principles)} principles, {stage.rounds} round(s), "
          f"{len(done)} already done")
    with open(traces_path, "a", buffering=1) as stream:
        for index in range(len(done), len(prompts)):
            trace = constitutional_trace(writer, prompts[index], stage.principles, stage.rounds, stage.seed, index)
            stream.write(json.dumps(trace) + "\n")
            done.append(trace)
    rows = [as_training_row(trace, stage.output) for trace in done if trace["final"]]
    atomic_write_text(context.out_dir / "data.jsonl", "".join(json.dumps(row) + "\n" for row in rows))
    changed = sum(trace["final"] != trace["response"] for trace in done)
    finish(context, inputs_record(context, ("init_checkpoint",)),
           {"prompts": len(done), "rows": len(rows), "revised": changed, "output": stage.output})
