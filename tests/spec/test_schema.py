"""The committed JSON Schema matches the models (regenerate with `specc schema -o specc/schema/spec.schema.json`)."""

from __future__ import annotations

import json

import pytest

from specc.spec.schema import SCHEMA_FILE, schema_text


@pytest.mark.golden
def test_committed_schema_is_current(update_golden):
    current = schema_text()
    if update_golden:
        SCHEMA_FILE.write_text(current)
    assert SCHEMA_FILE.read_text() == current, (
        "specc/schema/spec.schema.json is stale: run `specc schema -o specc/schema/spec.schema.json`")


def test_schema_documents_fields():
    schema = json.loads(schema_text())
    model = schema["$defs"]["ModelSpec"]["properties"]
    assert "Key/value heads" in model["num_kv_heads"]["description"]
    assert schema["additionalProperties"] is False


def test_schema_accepts_unit_strings():
    schema = json.loads(schema_text())
    budget = schema["$defs"]["ScheduleSpec"]["properties"]["token_budget"]
    assert {"type": "string"} in budget["anyOf"][0]["anyOf"] or {"type": "string"} in budget["anyOf"]
