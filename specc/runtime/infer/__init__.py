"""Inference: the KV-cache decoder, sampling, speculative decoding, scoring, and model/tokenizer IO."""
