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
