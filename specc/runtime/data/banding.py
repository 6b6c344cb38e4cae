"""LSH banding arithmetic (standard library only, so `specc plan` can size the dedup without
importing datasketch or numpy). Candidate probability 1 - (1 - s^rows)^bands: Leskovec,
Rajaraman & Ullman, Mining of Massive Datasets, ch. 3; the choice of bands x rows is explained in
`specc.runtime.data.dedup`."""

from __future__ import annotations

from specc.spec.data import MinHashSpec

MIN_CANDIDATE_PROBABILITY = 0.97


def candidate_probability(similarity: float, bands: int, rows: int) -> float:
    return 1.0 - (1.0 - similarity**rows) ** bands


def lsh_params(spec: MinHashSpec) -> tuple[int, int]:
    """(bands, rows): the spec's, else the most rows per band (fewest false candidates) whose
    candidate probability at the threshold is at least MIN_CANDIDATE_PROBABILITY."""
    if spec.bands is not None and spec.rows is not None:
        return spec.bands, spec.rows
    for bands in range(1, spec.num_perm + 1):
        rows = spec.num_perm // bands
        if candidate_probability(spec.threshold, bands, rows) >= MIN_CANDIDATE_PROBABILITY:
            return bands, rows
    return spec.num_perm, 1


def verify_threshold(spec: MinHashSpec) -> float:
    """The estimated similarity a candidate needs: threshold minus two standard errors."""
    sigma = (spec.threshold * (1 - spec.threshold) / spec.num_perm) ** 0.5
    return spec.threshold - 2 * sigma
