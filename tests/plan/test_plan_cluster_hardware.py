"""`cluster.accelerator_overrides` and `cluster.network`: custom parts and networks the catalog lacks."""

from __future__ import annotations

import json

from conftest import ROOT
from specc.cli import main

SPEC = str(ROOT / "specs" / "llama3-70b-h100x64.yaml")


def _plan(capsys, *sets: str) -> dict:
    argv = ["plan", SPEC, "--json"]
    for item in sets:
        argv += ["--set", item]
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


def test_a_custom_part_changes_memory_and_peak(capsys):
    """torchtitan's H100: 96 GB HBM2e at 2.4 TB/s, power-capped to a 912 TFLOP/s bf16 peak."""
    base = _plan(capsys)
    custom = _plan(capsys, "+cluster.accelerator_overrides.memory_gb=96",
                   "+cluster.accelerator_overrides.memory_bw_tbps=2.4",
                   "+cluster.accelerator_overrides.peak_tflops.bf16=912")
    assert custom["hardware"]["memory_gib"] == round(96e9 / 2**30, 4) > base["hardware"]["memory_gib"]
    assert custom["hardware"]["peak_tflops"] == 912
    assert custom["time"]["step_s"] > base["time"]["step_s"]


def test_a_slower_network_slows_the_data_parallel_sync(capsys):
    base = _plan(capsys)
    slow = _plan(capsys, "+cluster.network.inter_node_gbps=5")
    assert slow["time"]["breakdown_s"]["dp_comm"] > base["time"]["breakdown_s"]["dp_comm"]


def test_an_nvlink_domain_across_nodes_keeps_collectives_on_nvlink(capsys):
    """NVL72-style: 64 GPUs in one NVLink domain; the FSDP sync no longer crosses InfiniBand."""
    base = _plan(capsys)
    nvl = _plan(capsys, "+cluster.network.fast_domain_devices=64")
    assert nvl["time"]["breakdown_s"]["dp_comm"] < base["time"]["breakdown_s"]["dp_comm"]


def test_network_and_overrides_are_validated_with_locations(capsys):
    assert main(["validate", SPEC, "--set", "+cluster.network.fast_domain_devices=12"]) == 1
    err = capsys.readouterr()
    text = err.out + err.err
    assert "R252" in text and "cluster.network.fast_domain_devices" in text
    assert main(["validate", SPEC, "--set", "+cluster.accelerator_overrides.peak_tflops.int4=5"]) == 1


def test_degenerate_figures_are_refused_or_printed_without_a_crash(capsys):
    """memory_gb of 1e308 overflowed the plan's byte counts to inf (a NaN memory bar, `Infinity`
    in plan.json): the schema bounds it. A 1e-300 GB/s network is a legal number whose wall time
    overflows: the plan prints that instead of failing on `wall_days: None`."""
    assert main(["validate", SPEC, "--set", "+cluster.accelerator_overrides.memory_gb=1e308"]) == 1
    text = "".join(capsys.readouterr())
    assert "S006" in text and "cluster.accelerator_overrides.memory_gb: must be at most 100000" in text
    assert main(["plan", SPEC, "--set", "+cluster.network.intra_node_gbps=1e-300",
                 "--set", "+cluster.network.inter_node_gbps=1e-300"]) == 0
    assert "a wall time too long to compute" in " ".join(capsys.readouterr().out.split())
