"""Alignment stages: SFT, reward model, PPO, DPO and constitutional data (one resumable loop)."""
