"""What a cross-field rule is: a stable code, the sections it reads, and a check.

A rule reads only the sections it names; it runs when those sections validated, so one
broken section does not hide the findings about the others.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from specc.diagnostics.diagnostic import Severity


@dataclass(frozen=True)
class Finding:
    """A rule's verdict about one place in the spec."""

    path: tuple
    message: str
    hint: str | None = None
    severity: Severity = "error"


@dataclass(frozen=True)
class Rule:
    code: str
    needs: tuple[str, ...]
    check: Callable[..., Iterator[Finding]]

    @property
    def name(self) -> str:
        return self.check.__name__

    @property
    def documentation(self) -> str:
        return self.check.__doc__ or ""


def divisors(n: int) -> list[int]:
    """All positive divisors of n, ascending (for "what would fit" hints)."""
    return [d for d in range(1, n + 1) if n % d == 0]


def nearest_multiple(value: int, step: int) -> int:
    """The smallest multiple of `step` that is >= value."""
    return -(-value // step) * step
