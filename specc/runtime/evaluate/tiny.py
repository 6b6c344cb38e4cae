"""Tiny generated task, corpus and alignment files (not copied from any benchmark).

Everything here is a function of a seed, so tests and `benchmarks/deploy_quality.py` get
the same files on every machine: small-number arithmetic and word opposites, asked in the
harness's `Question: ... Answer:` format, plus prose for held-out perplexity. A model
pretrained for a few hundred steps on `tiny_corpus` scores well above chance on the tasks,
which is what makes the harness's numbers meaningful in a smoke test.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

OPPOSITES = [("hot", "cold"), ("big", "small"), ("up", "down"), ("day", "night"), ("fast", "slow"),
             ("light", "dark"), ("old", "new"), ("open", "closed"), ("early", "late"), ("full", "empty"),
             ("high", "low"), ("left", "right"), ("wet", "dry"), ("hard", "soft"), ("loud", "quiet")]
SUBJECTS = ["The cat", "A small dog", "The old man", "My sister", "The teacher", "A red bird", "The farmer"]
VERBS = ["walks to", "looks at", "sings near", "waits by", "runs past", "reads beside", "paints"]
PLACES = ["the river", "the green house", "the market", "a tall tree", "the quiet road", "the garden"]
GENERATIVE_PATTERN = r"(-?[0-9]+)"
"""The answer is the first integer of the generation (GSM8K's own pattern is `#### (\\-?[0-9.,]+)`)."""


def arithmetic_question(a: int, b: int) -> str:
    return f"What is {a} plus {b}?"


def sentence(rng: random.Random) -> str:
    return f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(PLACES)}."


def tiny_corpus(seed: int, num_documents: int) -> list[str]:
    """Pretraining documents: solved questions in the harness format mixed with prose."""
    rng = random.Random(seed)
    documents = []
    for _ in range(num_documents):
        lines = []
        for _ in range(rng.randint(2, 5)):
            kind = rng.random()
            if kind < 0.4:
                a, b = rng.randint(0, 9), rng.randint(0, 9)
                lines.append(f"Question: {arithmetic_question(a, b)}\nAnswer: {a + b}")
            elif kind < 0.7:
                word, opposite = rng.choice(OPPOSITES)
                lines.append(f"Question: What is the opposite of {word}?\nAnswer: {opposite}")
            else:
                lines.append(" ".join(sentence(rng) for _ in range(rng.randint(1, 3))))
        documents.append("\n\n".join(lines))
    return documents


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def write_tiny_tasks(directory: Path, seed: int = 0, num_examples: int = 40) -> dict[str, Path]:
    """mc_arithmetic, mc_opposites (multiple choice), gen_arithmetic (generative, scored with
    `GENERATIVE_PATTERN`) and heldout (perplexity) under `directory`."""
    rng = random.Random(seed)
    arithmetic, opposites, generative = [], [], []
    for _ in range(num_examples):
        a, b = rng.randint(0, 9), rng.randint(0, 9)
        wrong = rng.sample([n for n in range(19) if n != a + b], 3)
        choices = [str(n) for n in wrong + [a + b]]
        rng.shuffle(choices)
        arithmetic.append({"question": arithmetic_question(a, b), "choices": choices,
                           "answer": choices.index(str(a + b))})
        word, opposite = rng.choice(OPPOSITES)
        distractors = rng.sample([w for pair in OPPOSITES for w in pair if w not in (word, opposite)], 3)
        options = distractors + [opposite]
        rng.shuffle(options)
        opposites.append({"question": f"What is the opposite of {word}?", "choices": options,
                          "answer": "ABCD"[options.index(opposite)]})
        c, d = rng.randint(0, 9), rng.randint(0, 9)
        generative.append({"question": arithmetic_question(c, d), "answer": str(c + d)})
    heldout = [{"text": " ".join(sentence(rng) for _ in range(4))} for _ in range(num_examples)]
    return {"mc_arithmetic": _write_jsonl(directory / "mc_arithmetic.jsonl", arithmetic),
            "mc_opposites": _write_jsonl(directory / "mc_opposites.jsonl", opposites),
            "gen_arithmetic": _write_jsonl(directory / "gen_arithmetic.jsonl", generative),
            "heldout": _write_jsonl(directory / "heldout.jsonl", heldout)}


def write_tiny_alignment_data(directory: Path, seed: int = 0, num_examples: int = 48) -> dict[str, Path]:
    """sft (chat messages and prompt/response rows), preference pairs (the right opposite over a
    wrong one or over a refusal), and PPO prompts."""
    rng = random.Random(seed)
    sft, pairs, prompts = [], [], []
    for index in range(num_examples):
        word, opposite = rng.choice(OPPOSITES)
        question = f"What is the opposite of {word}?"
        answer = f"The opposite of {word} is {opposite}."
        if index % 2:
            sft.append({"prompt": question, "response": answer})
        else:
            sft.append({"messages": [{"role": "system", "content": "Answer briefly."},
                                     {"role": "user", "content": question},
                                     {"role": "assistant", "content": answer}]})
        wrong = rng.choice([w for pair in OPPOSITES for w in pair if w not in (word, opposite)])
        rejected = f"The opposite of {word} is {wrong}." if index % 2 else "I do not know."
        pairs.append({"prompt": question, "chosen": answer, "rejected": rejected})
        prompts.append({"prompt": question})
    return {"sft": _write_jsonl(directory / "sft.jsonl", sft),
            "preferences": _write_jsonl(directory / "preferences.jsonl", pairs),
            "prompts": _write_jsonl(directory / "prompts.jsonl", prompts)}


def train_tiny_tokenizer(texts: list[str], vocab_size: int, path: Path,
                         special_tokens: tuple[str, ...] = ("<|endoftext|>", "<|pad|>")) -> Path:
    """A byte-level BPE `tokenizer.json` (the tokenizer stage's format) trained on `texts`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(special_tokens),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tokenizer.train_from_iterator(texts, trainer)
    path.parent.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(path))
    return path


def write_bundled_files(directory: Path) -> list[Path]:
    """The files `specs/tiny.yaml` points at (`specs/data/tiny/`), regenerated by
    `python -m specc.runtime.evaluate.tiny specs/data/tiny`; a test keeps them current."""
    tasks = write_tiny_tasks(directory / "tasks", seed=1)
    alignment = write_tiny_alignment_data(directory / "alignment", seed=0)
    return sorted(list(tasks.values()) + list(alignment.values()))


if __name__ == "__main__":
    import sys

    if len(sys.argv) != 2:
        print("usage: python -m specc.runtime.evaluate.tiny OUT_DIR", file=sys.stderr)
        sys.exit(1)
    for written in write_bundled_files(Path(sys.argv[1])):
        print(written)
