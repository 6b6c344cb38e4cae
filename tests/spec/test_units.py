"""Unit spellings: counts are decimal, token lengths binary, bytes both, durations Slurm-style."""

from __future__ import annotations

import pytest

from specc.spec import units


@pytest.mark.parametrize("text, value", [("7B", 7_000_000_000), ("2T", 2 * 10**12), ("32k", 32_000),
                                         ("1.2T", 1_200_000_000_000), ("1_000", 1000), (12, 12), (3.0, 3)])
def test_counts(text, value):
    assert units.parse_count(text) == value


@pytest.mark.parametrize("text, value", [("4k", 4096), ("128k", 131072), ("4M", 4 * 2**20), ("2048", 2048)])
def test_lengths(text, value):
    assert units.parse_length(text) == value


@pytest.mark.parametrize("text, value", [("80GiB", 80 * 2**30), ("40GB", 40 * 10**9), ("512MiB", 512 * 2**20)])
def test_bytes(text, value):
    assert units.parse_bytes(text) == value


@pytest.mark.parametrize("text, minutes", [("45", 45), ("4h", 240), ("90min", 90), ("30s", 0.5), ("1-12:00:00", 2160),
                                           ("02:30:00", 150), ("10:30", 10.5), ("2-6", 3240), ("1-00:30", 1470)])
def test_durations(text, minutes):
    assert units.parse_minutes(text) == pytest.approx(minutes)


@pytest.mark.parametrize("bad", ["7X", "", "B7", "1.5k-tokens", "0.5"])
def test_bad_counts_say_what_is_accepted(bad):
    with pytest.raises(ValueError, match="cannot read|whole number"):
        units.parse_count(bad)


def test_float_strings():
    assert units.parse_float("1e-4") == 1e-4
    with pytest.raises(ValueError):
        units.parse_float("fast")


def test_slurm_time_format_round_trips():
    assert units.format_minutes_for_slurm(2160) == "1-12:00:00"
    assert units.parse_minutes(units.format_minutes_for_slurm(95.5)) == pytest.approx(95.5)


# --- every token length in a spec is the one binary Length type ----------------------------

import typing  # noqa: E402

from pydantic import BaseModel, TypeAdapter  # noqa: E402

from specc.spec.root import Spec  # noqa: E402

TOKEN_LENGTH_FIELDS = {
    ("ModelSpec", "max_seq_len"), ("ModelSpec", "sliding_window"),
    ("ScheduleSpec", "seq_len"), ("ScheduleSpec", "global_batch_tokens"),
    ("SFTStage", "seq_len"), ("RewardModelStage", "seq_len"), ("PPOStage", "seq_len"), ("DPOStage", "seq_len"),
    ("PPOStage", "max_new_tokens"), ("ConstitutionalStage", "max_new_tokens"),
    ("EvalTask", "max_new_tokens"), ("DeployTarget", "max_context"), ("SpeculativeSpec", "num_tokens"),
    ("ParallelSpec", "loss_chunk_tokens"),
}
"""Every field that is a number of tokens in one sequence (lengths, windows, contexts, generated
tokens) or a batch of them. Totals (`token_budget`, `corpus.target_tokens`) are counts, decimal
like parameter counts (`2T` tokens)."""


def _models(annotation, seen: set) -> None:
    """Every model class reachable from `annotation` (through unions, lists, dicts, Annotated)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        if annotation not in seen:
            seen.add(annotation)
            for info in annotation.model_fields.values():
                _models(info.annotation, seen)
        return
    for arg in typing.get_args(annotation):
        _models(arg, seen)


def _all_fields() -> list[tuple[type, str]]:
    seen: set = set()
    _models(Spec, seen)
    return sorted(((model, name) for model in seen for name in model.model_fields), key=lambda f: (f[0].__name__, f[1]))


def _uses_length(model: type, name: str) -> bool:
    info = model.model_fields[name]
    return "parse_length" in repr((info.annotation, info.metadata))


def test_token_length_fields_are_found():
    names = {(model.__name__, name) for model, name in _all_fields()}
    assert TOKEN_LENGTH_FIELDS <= names


@pytest.mark.parametrize("model, name", [f for f in _all_fields() if (f[0].__name__, f[1]) in TOKEN_LENGTH_FIELDS],
                         ids=lambda v: v if isinstance(v, str) else v.__name__)
def test_token_lengths_read_4k_as_4096(model, name):
    info = model.model_fields[name]
    annotation = typing.Annotated[(info.annotation, *info.metadata)] if info.metadata else info.annotation
    value = "4" if name == "num_tokens" else "4k"  # num_tokens is bounded to 1..16
    assert TypeAdapter(annotation).validate_python(value) == (4 if name == "num_tokens" else 4096)


@pytest.mark.parametrize("model, name", _all_fields(), ids=lambda v: v if isinstance(v, str) else v.__name__)
def test_only_token_lengths_use_the_length_type(model, name):
    """A field reads `k` as 1024 exactly when it is a token length: no other field does, and no
    token length is left a decimal count (where `4k` would read 4000)."""
    assert _uses_length(model, name) == ((model.__name__, name) in TOKEN_LENGTH_FIELDS)


def test_alignment_seq_len_and_window_read_binary():
    """The reported bug: `alignment[].seq_len: 4k` and `model.sliding_window: 4k` read 4000."""
    from specc.diagnostics.check import check_file

    result = check_file("specs/tiny.yaml", ["model.max_seq_len=8k", "+model.sliding_window=4k",
                                            "+alignment.0.seq_len=4k", "deploy.targets.0.format=safetensors"])
    assert result.valid, [d.to_text() for d in result.diagnostics]
    assert result.spec.model.sliding_window == 4096 and result.spec.alignment[0].seq_len == 4096


def test_booleans_are_never_quantities():
    import pytest
    from specc.spec import units
    for parse in (units.parse_count, units.parse_length, units.parse_bytes, units.parse_float):
        with pytest.raises(ValueError, match="boolean"):
            parse(True)


def test_overflowing_magnitudes_are_value_errors():
    import pytest
    from specc.spec import units
    with pytest.raises(ValueError, match="too large"):
        units.parse_count("1e400")
    with pytest.raises(ValueError, match="too large"):
        units.parse_length("1e308M")
