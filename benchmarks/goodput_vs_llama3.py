"""The plan's failure budget (specc/plan/reliability.py, docs/formulas.md section 8) against Llama 3's
reported figures: 419 unexpected interruptions in 54 days on 16,384 H100s and "more than 90%
effective training time" (Dubey et al. 2024, sec. 3.3.4), 2 TB/s sustained checkpoint storage.

    python benchmarks/goodput_vs_llama3.py

Prints the model's goodput at the Young/Daly interval for a range of restart delays (Llama 3 does not
publish its restart time), and the delay at which the model meets the reported 90%.
"""

from __future__ import annotations

from specc.plan.reliability import daly_interval, expected_wall_s, young_interval
from specc.spec.reliability import LLAMA3_DAYS, LLAMA3_DEVICES, LLAMA3_INTERRUPTIONS, LLAMA3_INTERRUPTIONS_PER_DEVICE_DAY

PARAMS = 405e9
CHECKPOINT_BYTES = 12 * PARAMS  # fp32 weights + Adam m, v (memory.state_bytes less gradients)
STORAGE_BYTES_PER_S = 2e12  # Tectonic, sustained (Llama 3 sec. 3.3.1)
SOLVE_S = LLAMA3_DAYS * 86400.0


def goodput(restart_delay_s: float, mtbf_s: float, write_s: float) -> tuple[float, float]:
    interval = daly_interval(write_s, mtbf_s)
    wall = expected_wall_s(SOLVE_S, interval, write_s, restart_delay_s + write_s, mtbf_s)
    return SOLVE_S / wall, interval


def main() -> None:
    mtbf_s = 86400 / (LLAMA3_INTERRUPTIONS_PER_DEVICE_DAY * LLAMA3_DEVICES)
    write_s = CHECKPOINT_BYTES / STORAGE_BYTES_PER_S
    print(f"Llama 3: {LLAMA3_INTERRUPTIONS} interruptions / {LLAMA3_DAYS} days / {LLAMA3_DEVICES} GPUs "
          f"= {LLAMA3_INTERRUPTIONS_PER_DEVICE_DAY:.4g} per GPU-day; MTBF {mtbf_s / 3600:.3g} h")
    print(f"checkpoint {CHECKPOINT_BYTES / 2**40:.3g} TiB at {STORAGE_BYTES_PER_S / 1e12:g} TB/s: write {write_s:.3g} s; "
          f"Young {young_interval(write_s, mtbf_s):.0f} s, Daly {daly_interval(write_s, mtbf_s):.0f} s")
    print("restart delay   goodput at the Daly interval   hours lost in 54 days of training")
    for minutes in (1, 3, 5, 10, 15, 20, 30):
        value, _ = goodput(minutes * 60, mtbf_s, write_s)
        print(f"{minutes:>8} min   {value:>10.1%}   {SOLVE_S * (1 / value - 1) / 3600:>10.0f}")
    low, high = 0.0, 3600.0
    for _ in range(60):  # bisection: the delay at which goodput is 90%
        middle = (low + high) / 2
        low, high = (middle, high) if goodput(middle, mtbf_s, write_s)[0] > 0.9 else (low, middle)
    print(f"reported > 90% effective training time <=> restart delay <= {low / 60:.1f} min in this model "
          f"(restarts cost {LLAMA3_INTERRUPTIONS} x delay; writes and lost work ~{1 - goodput(0.0, mtbf_s, write_s)[0]:.1%})")


if __name__ == "__main__":
    main()
