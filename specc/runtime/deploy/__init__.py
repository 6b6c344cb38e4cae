"""Deployment: Hugging Face / safetensors export, int8 and NF4 quantization, draft distillation."""
