"""One special-token behaviour for every consumer of tokenizer.json (issue 18, item 5b).

A literal `<|endoftext|>` in text is the one end-of-document token for the tokenize stage's
encoder, for eval and alignment (TextCodec: SFT spans, DPO pairs, PPO prompts) and for a
Hugging Face client of the exported folder, because that is what the saved file says. The
earlier stage set the library's `encode_special_tokens`, which the file does not record, so
it alone spelled the literal as ~20 ordinary tokens.
"""

from __future__ import annotations

import json

import pytest

from specc.runtime.align.chat import load_template
from specc.runtime.align.data import encode_conversation
from specc.runtime.hf.export import write_tokenizer
from specc.runtime.infer.weights import load_codec
from specc.runtime.tokenizer.bpe import Encoder, encode, load_tokenizer, save_tokenizer, train_bpe

SPECIAL = ["<|endoftext|>", "<|pad|>", "<|im_start|>", "<|im_end|>"]
TEXT = "first document<|endoftext|>second document <|pad|> end"


@pytest.fixture(scope="module")
def tokenizer_json(tmp_path_factory):
    texts = [f"plain text number {i}, with words and more words." for i in range(200)]
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    save_tokenizer(train_bpe(texts, 300, SPECIAL, 2), path)
    return path


def test_the_saved_file_records_the_special_tokens(tokenizer_json):
    added = json.loads(tokenizer_json.read_text())["added_tokens"]
    assert [(t["content"], t["id"], t["special"]) for t in added] == [(s, i, True) for i, s in enumerate(SPECIAL)]


def test_every_consumer_reads_a_literal_special_token_as_that_token(tokenizer_json, tmp_path):
    transformers = pytest.importorskip("transformers")
    stage = Encoder(load_tokenizer(tokenizer_json, SPECIAL), threads=2).encode([TEXT])[0].tolist()  # the stage's
    assert stage == encode(load_tokenizer(tokenizer_json, SPECIAL), [TEXT])[0]  # compression report's encoder
    codec = load_codec(tokenizer_json)  # eval, SFT/DPO/PPO
    write_tokenizer(tokenizer_json, tmp_path, "<|endoftext|>", "<|pad|>", None)  # the deploy stage's HF folder
    hf = transformers.AutoTokenizer.from_pretrained(tmp_path)
    assert stage == codec.encode(TEXT) == hf(TEXT, add_special_tokens=False)["input_ids"]
    assert stage.count(codec.eos_id) == 1 and stage.count(codec.pad_id) == 1
    assert codec.decode(stage) == TEXT


def test_chat_markers_are_single_tokens_in_alignment_data(tokenizer_json):
    codec = load_codec(tokenizer_json)
    template = load_template("chatml")
    example = encode_conversation({"messages": [{"role": "user", "content": "hi"},
                                                {"role": "assistant", "content": "hello"}]}, template, codec)
    start = codec.tokenizer.token_to_id("<|im_start|>")
    assert example.tokens.count(start) == 2


def test_saving_a_tokenizer_that_spells_special_tokens_as_text_is_refused(tokenizer_json, tmp_path):
    tokenizer = load_tokenizer(tokenizer_json, SPECIAL)
    tokenizer.encode_special_tokens = True
    with pytest.raises(AssertionError, match="not saved in tokenizer.json"):
        save_tokenizer(tokenizer, tmp_path / "tokenizer.json")


def test_the_fast_batch_encoder_gives_the_ids_of_the_full_one(tokenizer_json):
    """`encode` uses `encode_batch_fast` (no offsets); its ids must be `encode_batch`'s, special
    tokens, non-ASCII and empty texts included."""
    tokenizer = load_tokenizer(tokenizer_json, SPECIAL)
    texts = [TEXT, "", "zażółć gęślą jaźń — 東京 <|im_start|>user\nhi<|im_end|>", " leading  spaces\t\n"]
    full = [e.ids for e in tokenizer.encode_batch(texts, add_special_tokens=False)]
    assert encode(tokenizer, texts) == full and all(full[i] for i in (0, 2, 3))
