"""Field types shared by the spec sections: unit-aware numbers and restricted identifiers.

Each type accepts the spellings of `specc.spec.units` and publishes a JSON Schema
that admits both the number and the string form, so editors do not flag `7B`.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BeforeValidator, Field, StringConstraints

from specc.spec import units

Count = Annotated[int, BeforeValidator(units.parse_count, json_schema_input_type=int | str)]
"""A whole count; `7B`, `2T`, `32k` (decimal suffixes)."""

Length = Annotated[int, BeforeValidator(units.parse_length, json_schema_input_type=int | str)]
"""A token length; `4k` = 4096 (binary suffixes, as in "4k context")."""

Bytes = Annotated[int, BeforeValidator(units.parse_bytes, json_schema_input_type=int | str)]
"""A size in bytes; `80GiB`, `40GB`."""

Number = Annotated[float, BeforeValidator(units.parse_float, json_schema_input_type=float | str)]
"""A float that also accepts `1e-4` written without a decimal point."""

Minutes = Annotated[float, BeforeValidator(units.parse_minutes, json_schema_input_type=float | str)]
"""A duration in minutes; `90`, `4h`, `90min`, `1-12:00:00`, `02:30:00`."""

PositiveCount = Annotated[Count, Field(gt=0)]
PositiveLength = Annotated[Length, Field(gt=0)]
"""A token length of at least one token: every sequence length, window, context and number of
generated tokens in a spec is this type, so `4k` means 4096 wherever a length is written."""
PositiveMinutes = Annotated[Minutes, Field(gt=0)]
Fraction = Annotated[Number, Field(ge=0.0, le=1.0)]

Identifier = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9._-]{0,62}$")]
"""A name that reaches file names and Slurm job names: lowercase letters, digits, `.`, `_`, `-`."""

SlurmWord = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")]
"""A Slurm partition, account or QOS name: letters, digits, `_`, `.`, `-`."""

SlurmConstraint = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.\-&|()\[\]*,:]{1,256}$")]
"""A Slurm `--constraint` expression: feature names joined by `&`, `|`, brackets and counts."""

Email = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}$")]
