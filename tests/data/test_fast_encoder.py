"""The tokenize stage's tiktoken encoder gives exactly the ids of the `tokenizers` tokenizer
(issue 18, item 6), and falls back to that tokenizer, saying why, where it could not."""

from __future__ import annotations

import json
import random

import pytest
import tiktoken
from tokenizers import Tokenizer

from specc.runtime.tokenizer.bpe import Encoder, encode, first_difference, train_bpe
from specc.runtime.tokenizer.fast import GPT2_PATTERN, CharClasses, FastEncoder, byte_decoder, equivalence_problem

SPECIAL = ["<|endoftext|>", "<|pad|>", "<|im_start|>", "<|im_end|>"]
ADVERSARIAL = [
    "", " ", "\n", "<|endoftext|>", "<|endoftext|><|endoftext|>", "a<|endoftext|>b<|pad|>c",
    "<|endoftext", "|endoftext|>", "<|endoftext|>>", "<<|pad|>", "<|im_start|>user\nhi<|im_end|>\n",
    "zażółć gęślą jaźń — Łódź", "東京都 日本語のテキスト。", "Привет, мир! Україна", "مرحبا بالعالم", "नमस्ते दुनिया",
    "emoji 🎉🎉 👩‍👩‍👧 🇵🇱 ❤️", "it's they'll I'M we've She'D 'tis don't", "'s's''s 're've'm'll'd",
    "12345 3.14159 1,000,000 ٣٤٥ ⅷ ²³", "   leading", "trailing   ", "a  b   c    d\t\te\n\n\nf \n g",
    "\u00a0nbsp\u00a0\u00a0x", "\u3000ideographic\u3000space", "\u2009thin\u200bzero\u200dwidth", "\u0085next\u2028line",
    "\r\n\r\nwindows\r\n", "tabs\t\t\tand\x0bvertical\x0cfeed", "combining e\u0301 a\u0308 \u0915\u094d\u0937",
    "mixedCASE words123and456numbers", "punct!!! ??? ... --- ((( ))) $$$ @@@", "\x00\x01\x7f control",
    "a" * 300, " " * 50 + "x", "ab" * 200, "the the the the theory thesis",
]


@pytest.fixture(scope="module")
def tokenizer():
    rng = random.Random(0)
    words = ["the", "they", "there", "theory", "word", "words", "tokens", "zażółć", "東京", "Привет", "🎉", "123",
             "it's", "don't", "  ", "\n", "\t", "3.14", "über", "naïve", "<|endoftext|>"]
    texts = [" ".join(rng.choice(words) for _ in range(40)) for _ in range(400)] + ADVERSARIAL
    return train_bpe(texts, 700, SPECIAL, 2)


def test_tiktoken_gives_the_ids_of_tokenizers_on_adversarial_text(tokenizer):
    encoder = Encoder(tokenizer, threads=2)
    assert encoder.fast is not None, encoder.why_not_fast
    rng = random.Random(1)
    spliced = ["".join(rng.choice(ADVERSARIAL) for _ in range(6)) for _ in range(200)]
    texts = ADVERSARIAL + spliced
    assert [ids.tolist() for ids in encoder.encode(texts)] == encode(tokenizer, texts)
    assert encoder.fast.reference_documents == 0  # every character probed the same in both engines
    assert encoder.encode(["a<|endoftext|>b"])[0].tolist().count(tokenizer.token_to_id("<|endoftext|>")) == 1


def test_every_ascii_character_splits_the_same_in_both_regex_engines():
    classes = CharClasses()
    assert len(classes.agreed) == 128 and not classes.disagreed


def test_a_character_the_engines_split_differently_is_encoded_by_tokenizers(tokenizer):
    """A disagreement is simulated by marking a character as disagreed: texts holding it go to
    `tokenizers`, the others stay on tiktoken, ids and order unchanged."""
    encoder = Encoder(tokenizer, threads=2)
    encoder.fast.chars.disagreed.add("ż")
    texts = ["zażółć gęślą", "plain words", "東京 ż"]
    assert [ids.tolist() for ids in encoder.encode(texts)] == encode(tokenizer, texts)
    assert encoder.fast.reference_documents == 2


def _edited(tokenizer: Tokenizer, edit) -> Tokenizer:
    config = json.loads(tokenizer.to_str())
    edit(config)
    return Tokenizer.from_str(json.dumps(config))


def _swap_two_merges(config: dict) -> None:
    merges = config["model"]["merges"]
    merges[10], merges[11] = merges[11], merges[10]


def _drop_a_merge(config: dict) -> None:
    """Its token stays in the vocabulary, made by no merge."""
    config["model"]["merges"].pop(20)


@pytest.mark.parametrize(("edit", "reason"), [
    (lambda c: c.update(normalizer={"type": "NFC"}), "normalizer"),
    (lambda c: c["pre_tokenizer"].update(add_prefix_space=True), "pre-tokenizer"),
    (lambda c: c["model"].update(ignore_merges=True), "ignore_merges"),
    (lambda c: c["added_tokens"][1].update(lstrip=True), "not a plain special token"),
    (_swap_two_merges, "merge order"),
    (_drop_a_merge, "one token per merge"),
])
def test_a_tokenizer_outside_the_conditions_is_encoded_by_tokenizers(tokenizer, edit, reason):
    edited = _edited(tokenizer, edit)
    problem = equivalence_problem(edited)
    assert problem is not None and reason in problem
    encoder = Encoder(edited, threads=2)
    assert encoder.fast is None and encoder.description()["why_not_tiktoken"] == problem
    assert [ids.tolist() for ids in encoder.encode(ADVERSARIAL)] == encode(edited, ADVERSARIAL)


def _merges_bpe_does_not_follow(config: dict) -> None:
    """Appends merges ({, }) -> {}, (~, {) -> ~{, (~{, }) -> ~{}: BPE on "~{}" merges {} first
    and stops at [~, {}], so it never builds the token ~{} (condition C2 fails)."""
    model = config["model"]
    for a, b in (("{", "}"), ("~", "{"), ("~{", "}")):
        assert a + b not in model["vocab"]
        model["vocab"][a + b] = len(model["vocab"]) + len(config["added_tokens"])
        model["merges"].append([a, b])


def test_a_token_bpe_does_not_build_from_its_own_bytes_is_detected(tokenizer):
    """Without condition C2, tiktoken (which emits a piece that is a token directly, and merges
    any adjacent pair whose concatenation is a token) would encode "~{}" as one token where
    `tokenizers` gives two."""
    edited = _edited(tokenizer, _merges_bpe_does_not_follow)
    assert [t.value for t in edited.model.tokenize("~{}")] == ["~", "{}"]
    vocab, decoder = json.loads(edited.to_str())["model"]["vocab"], byte_decoder()
    naive = tiktoken.Encoding("naive", pat_str=GPT2_PATTERN, special_tokens={}, mergeable_ranks={
        bytes(decoder[ch] for ch in token): index for token, index in vocab.items() if token not in SPECIAL})
    assert len(naive.encode_ordinary("~{}")) == 1 and len(edited.encode("~{}").ids) == 2
    assert "BPE does not turn '~{}' into itself" in equivalence_problem(edited)
    encoder = Encoder(edited, threads=1)
    assert encoder.fast is None
    assert encoder.encode(["a ~{} b"])[0].tolist() == encode(edited, ["a ~{} b"])[0]


def test_fast_encoder_refuses_overlapping_special_tokens():
    tokenizer = train_bpe(["some text here"] * 20, 300, ["<|a|>", "<|a|>b"], 2)
    encoder, problem = FastEncoder.for_tokenizer(tokenizer, threads=1)
    assert encoder is None and "prefix" in problem


def test_the_build_time_guard_finds_a_text_two_encoders_disagree_on(tokenizer):
    """`Encoder` compares tiktoken with `tokenizers` on a sample before any shard is written;
    here the guard is pointed at a different tokenizer, so it must find a difference."""
    other = train_bpe(["completely different training text"] * 50, 300, SPECIAL, 2)
    fast, _ = FastEncoder.for_tokenizer(tokenizer, threads=1)
    assert first_difference(fast, tokenizer, ADVERSARIAL) is None
    assert first_difference(fast, other, ["", "the theory", "words"]) == "the theory"
