"""The published JSON Schema of the spec (for editors via yaml-language-server)."""

from __future__ import annotations

import json
from pathlib import Path

from specc.spec.root import Spec

SCHEMA_FILE = Path(__file__).resolve().parent.parent / "schema" / "spec.schema.json"
"""The committed copy, shipped as package data; a test keeps it current."""


def schema_text() -> str:
    """The spec's JSON Schema as stable, sorted JSON text."""
    schema = Spec.model_json_schema(mode="validation")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "https://specc.dev/schema/spec.schema.json"
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"
