"""Evaluation: perplexity, multiple-choice and generative tasks, and the `eval` stage."""
