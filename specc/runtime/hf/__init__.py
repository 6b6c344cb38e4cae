"""Hugging Face checkpoints in and out: `names` maps parameter names, `load` reads a local HF
directory into specc's Transformer (each rank only its shards), `export` writes one that
`transformers` loads. The torch-free half (config.json <-> ModelSpec) is `specc.spec.hf_config`."""
