"""Deployment: Hugging Face exports (full precision, or int8/int4/GPTQ in the compressed-tensors
format), specc's own int8/NF4 layout, draft distillation. GGUF: `specc.runtime.hf.gguf_export`."""
