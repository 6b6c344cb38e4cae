"""Scaling-law check: tokens per parameter, compute-optimal allocation, predicted final loss.

Parametric fit L(N, D) = E + A / N^alpha + B / D^beta (Hoffmann et al. 2022, "Training
Compute-Optimal Large Language Models", eq. 2 / Approach 3), with the unrounded constants as
quoted by Besiroglu et al. 2024 ("Chinchilla Scaling: A replication attempt", arXiv 2404.10102,
Table 1) and Epoch AI's refit from the same paper. Losses are in nats per token on the
Chinchilla (MassiveText) distribution: a guide to how far a budget is from optimal, not a
promise for another corpus or tokenizer.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LossFit:
    name: str
    E: float
    A: float
    B: float
    alpha: float
    beta: float
    source: str

    def loss(self, params: float, tokens: float) -> float:
        """L(N, D) = E + A/N^alpha + B/D^beta (Hoffmann et al. 2022, eq. 2)."""
        return self.E + self.A / params**self.alpha + self.B / tokens**self.beta

    def optimal_params(self, compute: float) -> float:
        """N* = G (C/6)^(beta/(alpha+beta)), G = (alpha A / (beta B))^(1/(alpha+beta)), with C = 6ND
        (Hoffmann et al. 2022, eq. 4; docs/formulas.md section 6)."""
        g = (self.alpha * self.A / (self.beta * self.B)) ** (1 / (self.alpha + self.beta))
        return g * (compute / 6) ** (self.beta / (self.alpha + self.beta))

    def optimal_tokens(self, compute: float) -> float:
        """D* = (C/6) / N*."""
        return compute / 6 / self.optimal_params(compute)


HOFFMANN = LossFit("hoffmann2022", 1.6934, 406.4, 410.7, 0.3392, 0.2849,
                   "Hoffmann et al. 2022 Approach 3, unrounded TeX constants as quoted by Besiroglu et al. 2024")
BESIROGLU = LossFit("besiroglu2024", 1.8172, 482.01, 2085.43, 0.3478, 0.3658,
                    "Besiroglu, Erdil, Barnett, You 2024, arXiv 2404.10102, Table 1 (Epoch AI replication)")

CHINCHILLA_TOKENS_PER_PARAM = 20.0
"""The rule of thumb from Hoffmann et al. 2022 Table 3 (~20 tokens per parameter at the optimum)."""

FAR_FROM_OPTIMAL = 4.0
"""Warn when the budget is more than this factor away from the compute-optimal token count in either
direction under the replication fit (over-training on purpose, as Llama 3 did, is common: a note, not
an error)."""


@dataclass(frozen=True)
class ScalingCheck:
    tokens_per_param: float
    chinchilla_tokens: float
    """Compute-optimal tokens for this run's compute under the replication fit."""
    chinchilla_params: float
    predicted_loss: float
    """Replication fit (Besiroglu et al. 2024) at this model size and token budget."""
    predicted_loss_hoffmann: float
    compute_flops: float

    def contract(self) -> dict:
        return {
            "tokens_per_param": round(self.tokens_per_param, 4),
            "chinchilla_tokens": float(f"{self.chinchilla_tokens:.6g}"),
            "chinchilla_params": float(f"{self.chinchilla_params:.6g}"),
            "predicted_loss": round(self.predicted_loss, 4),
            "predicted_loss_hoffmann": round(self.predicted_loss_hoffmann, 4),
            "compute_flops": float(f"{self.compute_flops:.6g}"),
            "fit": BESIROGLU.name,
            "fit_source": BESIROGLU.source,
        }

    def warning(self) -> str | None:
        """A message when the budget is far from compute-optimal, else None."""
        actual = self.tokens_per_param
        optimal = self.chinchilla_tokens / self.chinchilla_params
        if actual > optimal * FAR_FROM_OPTIMAL:
            return (f"{actual:.0f} tokens per parameter is {actual / optimal:.0f}x the compute-optimal {optimal:.0f} "
                    f"(Besiroglu et al. 2024 fit): a smaller model trained on the same compute would reach a lower loss; "
                    f"fine if inference cost matters more")
        if actual < optimal / FAR_FROM_OPTIMAL:
            return (f"{actual:.1f} tokens per parameter is {optimal / actual:.0f}x below the compute-optimal {optimal:.0f}: "
                    f"the model is under-trained for its size")
        return None


def scaling_check(params: float, tokens: float) -> ScalingCheck:
    """Scaling check for a run of `tokens` on `params` parameters, C = 6 N D (Hoffmann et al. 2022).
    The caller passes non-embedding parameters (active ones for MoE), the N of Kaplan et al. 2020."""
    n = max(float(params), 1.0)
    compute = 6.0 * n * tokens
    return ScalingCheck(tokens_per_param=tokens / n, chinchilla_tokens=BESIROGLU.optimal_tokens(compute),
                        chinchilla_params=BESIROGLU.optimal_params(compute),
                        predicted_loss=BESIROGLU.loss(n, tokens), predicted_loss_hoffmann=HOFFMANN.loss(n, tokens),
                        compute_flops=compute)
