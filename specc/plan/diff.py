"""`specc plan --against old.json`: what changed between two plans (layout, memory, time, cost),
Terraform-style, with `--detailed-exitcode` (0 = no change, 2 = changes)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

COMPARED = {
    "model": ("params", "active_params", "flops_per_token"),
    "hardware": ("accelerator", "count", "precision"),
    "layout": ("dp", "tp", "pp", "cp", "ep", "vpp", "zero_stage", "fsdp", "micro_batch", "grad_accum", "recompute"),
    "memory": ("per_device_gib", "fits", "loss"),
    "memory.breakdown_gib": ("params", "grads", "optimizer", "activations", "other"),
    "time": ("step_s", "tokens_per_s", "mfu", "train_days", "device_hours", "cost_usd"),
    "scaling": ("tokens_per_param", "predicted_loss"),
}

RELATIVE_TOLERANCE = 1e-9


@dataclass(frozen=True)
class Change:
    path: str
    old: object
    new: object

    def text(self) -> str:
        if isinstance(self.old, (int, float)) and isinstance(self.new, (int, float)) and not isinstance(self.old, bool) \
                and self.old:
            return f"  ~ {self.path}: {self.old:g} -> {self.new:g} ({(self.new - self.old) / abs(self.old):+.1%})"
        return f"  ~ {self.path}: {self.old} -> {self.new}"


def _get(data: dict, dotted: str):
    """The mapping at `dotted`; {} where a key is absent or null (a plan without a pretrain stage)."""
    for key in dotted.split("."):
        data = data.get(key) or {} if isinstance(data, dict) else {}
    return data


def _get_raw(data: dict, dotted: str):
    """The value at `dotted`, or None where a key on the way is absent."""
    for key in dotted.split("."):
        data = data.get(key) if isinstance(data, dict) else None
    return data


def _differs(old, new) -> bool:
    if isinstance(old, (int, float)) and isinstance(new, (int, float)) and not isinstance(old, bool):
        return abs(new - old) > RELATIVE_TOLERANCE * max(abs(old), abs(new), 1e-300)
    return old != new


def diff_plans(old: dict, new: dict) -> list[Change]:
    """Changed fields, in a fixed order (section, then field)."""
    changes = []
    for section, keys in COMPARED.items():
        before, after = _get(old, section), _get(new, section)
        for key in keys:
            if key not in before and key not in after:
                continue
            if _differs(before.get(key), after.get(key)):
                changes.append(Change(f"{section}.{key}", before.get(key), after.get(key)))
    return changes


def render_diff(changes: list[Change], old_name: str, new_name: str) -> str:
    if not changes:
        return f"No changes: {new_name} plans the same layout, memory, time and cost as {old_name}."
    lines = [f"{len(changes)} change(s) from {old_name} to {new_name}:"]
    lines.extend(change.text() for change in changes)
    return "\n".join(lines)


def compare_with_file(path: Path, new: dict, as_json: bool, new_name: str) -> tuple[str, bool]:
    """(report text, whether anything changed) of `new` against the plan stored at `path`.
    A missing, unreadable or foreign file raises ValueError with a one-line reason."""
    try:
        old = json.loads(path.read_text())
    except OSError as error:
        raise ValueError(f"cannot read plan {path}: {error.strerror}") from None
    except ValueError as error:
        raise ValueError(f"cannot read plan {path}: not JSON ({error})") from None
    if not isinstance(old, dict) or old.get("schema_version") != new["schema_version"]:
        raise ValueError(f"{path} is not a schema_version {new['schema_version']} plan")
    for section in COMPARED:  # a hand-edited section of another shape is named, not a traceback
        value = _get_raw(old, section)
        if value is not None and not isinstance(value, dict):
            raise ValueError(f"{path}: {section}: expected a JSON object, got {type(value).__name__}")
    changes = diff_plans(old, new)
    if as_json:
        return json.dumps({"changes": [vars(c) for c in changes]}, indent=2, sort_keys=True), bool(changes)
    return render_diff(changes, str(path), new_name), bool(changes)
