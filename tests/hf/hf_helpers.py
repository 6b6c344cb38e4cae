"""Tiny random-weight Hugging Face checkpoints made locally with `transformers` (no downloads),
one per architecture specc loads, and a small byte-level BPE tokenizer to go with them."""

from __future__ import annotations

from pathlib import Path

VOCAB = 320
SPECIAL = ["<|endoftext|>", "<|pad|>", "<|im_start|>", "<|im_end|>"]
CHATML = ("{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
          "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
COMMON = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, max_position_embeddings=64, rms_norm_eps=1e-5, tie_word_embeddings=False)
ARCHITECTURES = {
    "llama": ("LlamaConfig", "LlamaForCausalLM", dict(rope_theta=500000.0)),
    "mistral": ("MistralConfig", "MistralForCausalLM", dict(sliding_window=5, head_dim=16)),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", dict(tie_word_embeddings=True)),
    "mixtral": ("MixtralConfig", "MixtralForCausalLM", dict(num_local_experts=4, num_experts_per_tok=2)),
}
TEXT = ("The quick brown fox jumps over the lazy dog. Question: what is the opposite of hot? Answer: cold. "
        "A model reads tokens and predicts the next one; training makes the prediction better. ") * 8


def make_tokenizer(path: Path) -> Path:
    """A byte-level BPE (tokenizers library) with specc's and ChatML's special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB - 8, special_tokens=SPECIAL,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tokenizer.train_from_iterator([TEXT], trainer)
    tokenizer.save(str(path))
    return path


def make_hf_model(directory: Path, architecture: str, seed: int = 0, max_shard_size: str | None = "40KB",
                  **overrides) -> Path:
    """A random-weight model saved by `save_pretrained` (sharded above `max_shard_size`) with a
    tokenizer and a ChatML chat template, as a downloaded Hub snapshot would be laid out."""
    import json

    import torch
    import transformers

    config_name, model_name, extra = ARCHITECTURES[architecture]
    config = getattr(transformers, config_name)(**{**COMMON, **extra, "eos_token_id": 0, "bos_token_id": None,
                                                   "pad_token_id": 1, **overrides})
    torch.manual_seed(seed)
    model = getattr(transformers, model_name)(config).eval()
    with torch.no_grad():  # random init has zero biases and unit norms: make every weight matter
        for name, param in model.named_parameters():
            if name.endswith("bias") or "norm" in name:
                param.add_(torch.randn_like(param) * 0.1)
    kwargs = {"max_shard_size": max_shard_size} if max_shard_size else {}
    model.save_pretrained(directory, **kwargs)
    make_tokenizer(directory / "tokenizer.json")
    (directory / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "eos_token": "<|endoftext|>", "pad_token": "<|pad|>",
        "chat_template": CHATML}))
    return directory
