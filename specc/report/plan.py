"""`specc plan SPEC --html PATH`: the plan drawn, before anything runs (Terraform shows its plan first).

From the plan contract (`plan.json`'s dict): memory per device by component against the
device's capacity (training, each alignment stage, each deploy target), the step time by
component, and the searched layouts compared side by side.
"""

from __future__ import annotations

from specc.report import charts
from specc.report.html import figures, page, paragraph, section, table

LAYOUT_KEYS = ("dp", "tp", "pp", "cp", "ep", "fsdp", "zero_stage", "micro_batch", "grad_accum", "recompute",
               "precision")


def layout_text(layout: dict) -> str:
    """`dp8 tp1 pp1 cp1 ep1 zero2 mb1 ga16 selective bf16` (FSDP shown when on)."""
    parts = [f"{k}{layout.get(k)}" for k in ("dp", "tp", "pp", "cp", "ep")]
    if layout.get("fsdp"):
        parts.append("fsdp")
    parts += [f"zero{layout.get('zero_stage', 0)}", f"mb{layout.get('micro_batch')}", f"ga{layout.get('grad_accum')}",
              str(layout.get("recompute")), str(layout.get("precision"))]
    return " ".join(parts)


def memory_section(plan: dict) -> str:
    memory = plan.get("memory") or {}
    capacity = memory.get("capacity_gib")
    training = charts.stacked_bar(f"training memory per device (peak at {memory.get('peak_phase', '?')})", "GiB",
                                  memory.get("breakdown_gib") or {}, capacity, f"capacity {capacity} GiB")
    rows = [[name, value, value / memory["per_device_gib"] if memory.get("per_device_gib") else None]
            for name, value in (memory.get("breakdown_gib") or {}).items()]
    rows += [[f"  of which {name}", value, None] for name, value in (memory.get("detail_gib") or {}).items()]
    rows.append(["total per device", memory.get("per_device_gib"), 1.0])
    rows.append(["capacity", capacity, None])
    stages = [("pretrain", memory.get("per_device_gib"), capacity)] if memory else []
    stages += [(entry["stage"], entry.get("per_device_gib"), entry.get("capacity_gib")) for entry in plan.get("alignment", [])]
    stages += [(f"deploy {entry['name']}", entry.get("per_device_gib"), entry.get("capacity_gib"))
               for entry in plan.get("deploy", [])]
    per_stage = charts.horizontal_bars(
        "per-device memory of every stage", "GiB", [s[0] for s in stages], [s[1] or 0.0 for s in stages],
        [f"{used or 0:.3g} of {cap} GiB" for _, used, cap in stages])
    verdict = "fits" if memory.get("fits") else "DOES NOT FIT"
    return section("memory", "Memory per device",
                   paragraph(f"training: {memory.get('per_device_gib')} of {capacity} GiB per device ({verdict})"),
                   figures(training, per_stage),
                   table(["component", "GiB", "share"], rows, "memory-table"))


def time_section(plan: dict) -> str:
    timing = plan.get("time") or {}
    breakdown = timing.get("breakdown_s") or {}
    chart = charts.stacked_bar(f"step time {timing.get('step_s')} s by component", "seconds", breakdown)
    rows = [[name, value, value / timing["step_s"] if timing.get("step_s") else None]
            for name, value in breakdown.items()]
    summary = [["step time (s)", timing.get("step_s")], ["tokens/s", timing.get("tokens_per_s")],
               ["MFU", timing.get("mfu")], ["HFU", timing.get("hfu")], ["steps", timing.get("steps")],
               ["training days", timing.get("train_days")], ["device hours", timing.get("device_hours")],
               ["cost (USD)", timing.get("cost_usd")]]
    return section("time", "Step time", figures(chart),
                   table(["component", "seconds", "share"], rows, "time-table"),
                   table(["figure", "value"], summary, "time-summary"))


def candidates_section(plan: dict) -> str:
    candidates = plan.get("candidates") or []
    if not candidates:
        return ""
    search = plan.get("search") or {}
    labels = [f"#{i + 1} {layout_text(c['layout'])}" for i, c in enumerate(candidates)]
    step = charts.horizontal_bars("step time of each candidate", "seconds", labels,
                                  [c["time"]["step_s"] for c in candidates])
    capacity = candidates[0]["memory"].get("capacity_gib")
    memory = charts.horizontal_bars("memory per device of each candidate", "GiB", labels,
                                    [c["memory"]["per_device_gib"] for c in candidates], limit=capacity,
                                    limit_label=f"capacity {capacity} GiB")
    rows = [[i + 1, layout_text(c["layout"]), c["time"]["step_s"], c["time"].get("mfu"), c["memory"]["per_device_gib"],
             "yes" if c["memory"].get("fits") else "no", c["time"].get("days") or c["time"].get("train_days")]
            for i, c in enumerate(candidates)]
    note = (f"searched {search.get('evaluated')} layouts, {search.get('fitting')} fit; rejected: "
            + ", ".join(f"{why} {count}" for why, count in (search.get("rejected") or {}).items())) if search else \
        "the spec fixes its layout (`specc plan --search` compares others)"
    return section("candidates", "Layouts compared", paragraph(note), figures(step, memory),
                   table(["rank", "layout", "step s", "MFU", "GiB per device", "fits", "days"], rows,
                         "candidates-table"))


def render(plan: dict) -> str:
    spec = plan.get("spec") or {}
    hardware = plan.get("hardware") or {}
    meta = (f"{hardware.get('count')} × {hardware.get('accelerator')} ({hardware.get('memory_gib')} GiB, "
            f"{hardware.get('precision')}) · layout {layout_text(plan.get('layout') or {})} · "
            f"{(plan.get('model') or {}).get('params', 0):,} parameters")
    findings = [[w.get("code"), w.get("severity", "warning"), w.get("message")] for w in plan.get("warnings", [])
                if isinstance(w, dict)]
    sections = [memory_section(plan), time_section(plan), candidates_section(plan)]
    if findings:
        sections.append(section("findings", "Findings", table(["code", "severity", "message"], findings)))
    return page(f"specc plan: {spec.get('name', '?')}", meta, [s for s in sections if s])
