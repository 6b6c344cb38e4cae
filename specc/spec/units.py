"""Parsing of human-friendly quantities in specs: `7B`, `4k`, `2T`, `80GiB`, `1e-4`, `4h`.

Why a module of its own: the same spellings appear in many sections (parameter
counts, token budgets, sequence lengths, memory sizes, Slurm time limits) and users
expect them to mean the same thing everywhere. Each parser raises `ValueError` with
a message that says which spellings are accepted; pydantic turns that into a located
diagnostic.

Conventions (documented in the README):
- counts are decimal: k=1e3, M=1e6, B or G=1e9, T=1e12 (`2T` tokens, `7B` params);
- token lengths (sequence lengths, batch tokens) are binary, as in papers: `4k` = 4096,
  `128k` = 131072, `4M` batch tokens = 4,194,304 = 512 x 8192;
- byte sizes: `GB` = 1e9 bytes, `GiB` = 2**30 bytes;
- floats accept YAML's strict forms and also `1e-4` (PyYAML reads that as a string).
"""

from __future__ import annotations

import math
import re

_NUMBER = r"(?P<num>[0-9]+(?:\.[0-9]*)?(?:[eE][+-]?[0-9]+)?)"

_COUNT_SUFFIXES = {"": 1, "k": 10**3, "K": 10**3, "M": 10**6, "B": 10**9, "G": 10**9, "T": 10**12}
_LENGTH_SUFFIXES = {"": 1, "k": 1024, "K": 1024, "Ki": 1024, "M": 1024**2, "Mi": 1024**2}
_BYTE_SUFFIXES = {
    "": 1, "B": 1,
    "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
    "KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "TiB": 2**40,
}
_DURATION_SUFFIXES = {"s": 1 / 60, "min": 1, "m": 1, "h": 60, "d": 24 * 60}


def _split(text: str, suffixes: dict[str, int | float], what: str) -> tuple[float, int | float]:
    match = re.fullmatch(_NUMBER + r"\s*(?P<unit>[A-Za-z]*)", text.strip().replace("_", ""))
    if not match or match.group("unit") not in suffixes:
        units = ", ".join(repr(s) for s in suffixes if s)
        raise ValueError(f"cannot read {text!r} as {what}; write a number with an optional unit ({units})")
    number = float(match.group("num"))
    if not math.isfinite(number * suffixes[match.group("unit")]):
        raise ValueError(f"{text!r} is too large to be {what}")
    return number, suffixes[match.group("unit")]


def _no_bool(value: object, what: str) -> None:
    """YAML 1.1 reads yes/no/on/off/true as booleans and pydantic takes True as 1: refuse it."""
    if isinstance(value, bool):
        raise ValueError(f"expected {what}, got {str(value).lower()} (YAML reads yes/no/on/off/true/false as booleans)")


def _as_whole(value: float, text: str, what: str) -> int:
    if value != int(value):
        raise ValueError(f"{text!r} is not a whole number of {what}")
    return int(value)


def parse_count(value: object) -> object:
    """`7B` -> 7_000_000_000, `2T` -> 2e12, `32k` -> 32_000; other types pass through."""
    _no_bool(value, "a count")
    if isinstance(value, str):
        number, scale = _split(value, _COUNT_SUFFIXES, "a count")
        return _as_whole(number * scale, value, "units")
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def parse_length(value: object) -> object:
    """`4k` -> 4096, `128k` -> 131072 (sequence lengths count in binary thousands)."""
    _no_bool(value, "a length")
    if isinstance(value, str):
        number, scale = _split(value, _LENGTH_SUFFIXES, "a length")
        return _as_whole(number * scale, value, "tokens")
    return value


def parse_bytes(value: object) -> object:
    """`80GiB` -> 85_899_345_920, `40GB` -> 40_000_000_000."""
    _no_bool(value, "a size in bytes")
    if isinstance(value, str):
        number, scale = _split(value, _BYTE_SUFFIXES, "a size in bytes")
        return _as_whole(number * scale, value, "bytes")
    return value


def parse_float(value: object) -> object:
    """`1e-4` -> 0.0001 (PyYAML's YAML 1.1 resolver leaves it a string)."""
    _no_bool(value, "a number")
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            raise ValueError(f"cannot read {value!r} as a number") from None
    return value


def parse_minutes(value: object) -> object:
    """Slurm-style time limits to minutes: `45`, `4h`, `90min`, `1-12:00:00`, `02:30:00`.

    Slurm's own forms (sbatch(1) --time): "minutes", "minutes:seconds",
    "hours:minutes:seconds", "days-hours", "days-hours:minutes",
    "days-hours:minutes:seconds".
    """
    if isinstance(value, bool):
        raise ValueError("a time limit cannot be true/false")
    if isinstance(value, (int, float)):
        return float(value)
    if not isinstance(value, str):
        return value
    text = value.strip()
    slurm = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", text)
    if slurm:
        days, first, second, third = slurm.groups()
        days = int(days or 0)
        if days and second is None:  # days-hours
            return days * 1440 + int(first) * 60.0
        if days:  # days-hours:minutes[:seconds]
            return days * 1440 + int(first) * 60 + int(second) + int(third or 0) / 60
        if third is not None:  # hours:minutes:seconds
            return int(first) * 60 + int(second) + int(third) / 60
        if second is not None:  # minutes:seconds
            return int(first) + int(second) / 60
        return float(first)
    number, scale = _split(text, _DURATION_SUFFIXES, "a duration")
    return number * scale


def format_minutes_for_slurm(minutes: float) -> str:
    """Minutes -> Slurm's `D-HH:MM:SS`, the unambiguous form for `#SBATCH --time`."""
    total = int(round(minutes * 60))
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    mins, secs = divmod(rest, 60)
    return f"{days}-{hours:02d}:{mins:02d}:{secs:02d}"
