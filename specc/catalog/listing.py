"""`specc catalog`: the accelerator ids a spec may name, with what the planner and validate read
from each (memory, dense peaks, fp8) and which specc runtime trains on it. Torch-free."""

from __future__ import annotations

from specc.catalog import load_catalog
from specc.spec.capabilities import capabilities_for


def catalog_entries() -> list[dict]:
    """One JSON-ready row per catalog id, in catalog order. Peaks are dense (no sparsity), in
    TFLOP/s; None where the device has no such format."""
    rows = []
    for accelerator in load_catalog().values():
        capabilities = capabilities_for(accelerator)
        rows.append({
            "id": accelerator.id, "name": accelerator.name, "target": capabilities.target,
            "runtime": capabilities.runtime, "memory_gib": round(accelerator.memory_gib, 1),
            "bf16_tflops": accelerator.peak_tflops.get("bf16"), "fp8_tflops": accelerator.peak_tflops.get("fp8"),
            "fp8": accelerator.fp8, "bf16": accelerator.bf16, "devices_per_node": accelerator.devices_per_node,
        })
    return rows


def render_catalog(rows: list[dict]) -> None:
    """A rich table of `catalog_entries()`."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    table = Table(title="Accelerators: put the id in cluster.accelerator or deploy.targets[].accelerator",
                  caption="GiB: memory per device; TF: dense peak TFLOP/s per device; node: devices per node",
                  box=box.SIMPLE_HEAD)
    table.add_column("id", no_wrap=True, style="bold")
    table.add_column("name", min_width=8)
    table.add_column("target", no_wrap=True)
    for column in ("GiB", "bf16 TF", "fp8 TF"):
        table.add_column(column, justify="right", no_wrap=True)
    table.add_column("fp8", justify="center", no_wrap=True)
    table.add_column("node", justify="right", no_wrap=True)
    for row in rows:
        table.add_row(row["id"], row["name"], row["target"], f"{row['memory_gib']:.1f}",
                      _tflops(row["bf16_tflops"]), _tflops(row["fp8_tflops"]), "yes" if row["fp8"] else "no",
                      str(row["devices_per_node"]))
    Console().print(table)


def _tflops(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"
