"""The `tokenize` stage: train or load a byte-level BPE, report compression, write token shards."""
