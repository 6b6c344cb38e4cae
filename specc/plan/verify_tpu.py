"""`specc plan --verify`: check a TPU plan's memory per chip against libtpu's own compile of the step.

libtpu compiles for a TPU topology it is not attached to, so the planner's per-chip figure can be
checked on any Linux host (the method of `benchmarks/tpu_memory_truth.py`, MaxText's
`train_compile.py`). Three environments take part; this module (main environment) never imports
torch or JAX, it runs the other two as subprocesses:
1. export (the TPU environment, torch-xla on XLA's CPU backend with one virtual device per chip):
   `specc.runtime.tpu.export_step` traces one optimizer step of the spec's model in the plan's
   layout (fsdp x tensor mesh, micro-batch, sequence length, recompute) and writes StableHLO;
2. compile (a JAX environment with libtpu): `specc/plan/tpu_compile.py` compiles it for the spec's
   topology and reads `CompiledMemoryStats`;
3. compare: the compiled peak per chip is arguments + temporaries (parameters and AdamW state are
   donated, so outputs alias inputs); the planner's figure holds `RESERVE_GIB` for XLA's runtime
   that no compiled program holds, so the comparison is planned minus the reserve vs compiled.

The model is traced at its full size, never scaled down: a model whose CPU trace would not fit in
this host's memory is refused with the estimate (`export_ram_gib`), exit 1.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from specc.plan.tpu import RESERVE_GIB

ROOT = Path(__file__).resolve().parent.parent.parent
COMPILE_SCRIPT = Path(__file__).resolve().parent / "tpu_compile.py"
GIB = 2**30
JAX_PIN = "jax[tpu]==0.10.2"
TOLERANCE = 0.10
"""P250 when the planned and compiled figures differ by more than this fraction."""

EXPORT_BYTES_PER_PARAM = 16
"""Host bytes per parameter while the step is traced on XLA's CPU backend: the fp32 weights built on
the CPU (4 B) and their copy on the XLA devices (4 B), and the primed AdamW moments (8 B); the trace
itself holds no tensors (uncertain: an estimate from this layout of the export, not fitted)."""
EXPORT_BASE_GIB = 2.0
"""The torch-xla process and libtpu's compile of the module, whatever the model size (uncertain)."""

LIBTPU_NAMES = {"tpu-v5e": "v5e", "tpu-v5p": "v5p", "tpu-v6e": "v6e", "tpu-v4": "v4"}
"""Catalog id -> the generation name of libtpu's topology strings (`v5e:2x2`, `v5p:2x2x1`)."""


class VerifyError(Exception):
    """Verification cannot run here (no libtpu, no torch-xla, a GPU spec, a model too large to
    trace): one paragraph saying what to do; the CLI prints it and exits 1, without a traceback."""


@dataclass(frozen=True)
class Case:
    """What the export step traces and the compile step compiles (JSON to the export subprocess)."""

    model: dict
    parallel: dict
    seq_len: int
    devices: int
    topology: str

    def export_json(self) -> str:
        return json.dumps({"model": self.model, "parallel": self.parallel, "seq_len": self.seq_len})


# --- which pythons --------------------------------------------------------------------------------


def tpu_python() -> Path:
    """The TPU environment's python as the TPU tests find it: $SPECC_TPU_PYTHON, else `.venv-tpu`."""
    path = Path(os.environ.get("SPECC_TPU_PYTHON", ROOT / ".venv-tpu" / "bin" / "python"))
    if not path.exists():
        raise VerifyError(
            f"--verify traces the step with torch-xla, but the TPU environment was not found at {path}: "
            f"create it with scripts/setup-tpu-venv.sh (from the repository root), or point SPECC_TPU_PYTHON "
            f"at the python of an environment with torch-xla 2.9.0 and specc's runtime dependencies.")
    return path


def _has_libtpu(python: str) -> bool:
    result = subprocess.run([python, str(COMPILE_SCRIPT), "--probe"], capture_output=True, text=True)
    return result.returncode == 0


def jax_python(flag: str | None) -> str:
    """The python that compiles with libtpu: `--jax-python`, else $SPECC_JAX_PYTHON, else this
    interpreter when JAX and libtpu import here."""
    chosen = flag or os.environ.get("SPECC_JAX_PYTHON") or ""
    candidates = [chosen] if chosen else [sys.executable]
    for python in candidates:
        if Path(python).exists() and _has_libtpu(python):
            return python
    where = (f"{chosen} (from {'--jax-python' if flag else 'SPECC_JAX_PYTHON'}) cannot import jax and libtpu"
             if chosen else f"neither --jax-python nor SPECC_JAX_PYTHON is set, and this python ({sys.executable}) "
                            f"cannot import jax and libtpu")
    raise VerifyError(
        f"--verify compiles the step ahead of time with libtpu (no TPU needed), but {where}. Install it in a "
        f"separate virtual environment (Linux, Python 3.11+): `python3 -m venv jaxvenv && jaxvenv/bin/pip install "
        f"\"{JAX_PIN}\"` (the pin matters: the compile uses JAX's private APIs), then run `specc plan SPEC --verify "
        f"--jax-python jaxvenv/bin/python` or set SPECC_JAX_PYTHON=jaxvenv/bin/python.")


# --- what to verify -------------------------------------------------------------------------------


def topology(accelerator_id: str, torus: str, devices: int, max_slice_chips: int | None = None) -> str:
    """libtpu's topology string for one slice of `devices` chips: `v5e:2x4`, `v5p:2x2x2`.

    Slices grow from one host's 2x2 (2-D torus) or 2x2x1 (3-D) by doubling the shortest axis, the
    last on ties: 2x2 -> 2x4 -> 4x4 -> 4x8 ...; 2x2x1 -> 2x2x2 -> 2x2x4 -> 2x4x4 -> 4x4x4 ... (Cloud
    TPU's v5e and v4/v5p slice shapes). libtpu refuses single chips ("not divisible by the
    chips_per_host_bounds 2x2x1"), so a slice has at least four chips.
    """
    name = LIBTPU_NAMES.get(accelerator_id)
    if name is None:
        raise VerifyError(f"--verify knows libtpu's topology names of {', '.join(sorted(LIBTPU_NAMES))}, "
                          f"not {accelerator_id}")
    if devices < 4 or devices & (devices - 1):
        raise VerifyError(f"--verify compiles for a whole TPU slice: {devices} chips is not one (slices have "
                          f"4, 8, 16, ... chips, a power of two); set cluster.devices to one")
    if max_slice_chips is not None and devices > max_slice_chips:
        raise VerifyError(f"--verify compiles one TPU slice, and {devices} chips of {accelerator_id} span several "
                          f"(at most {max_slice_chips} per slice): multi-slice runs are not verified yet")
    axes = [2, 2] if torus == "2d" else [2, 2, 1]
    while _product(axes) < devices:
        shortest = min(axes)
        index = max(i for i, size in enumerate(axes) if size == shortest)
        axes[index] *= 2
    return f"{name}:{'x'.join(str(size) for size in axes)}"


def _product(values: list[int]) -> int:
    result = 1
    for value in values:
        result *= value
    return result


def export_ram_gib(params: int) -> float:
    """Host memory the CPU trace needs (`EXPORT_BYTES_PER_PARAM`, `EXPORT_BASE_GIB`)."""
    return params * EXPORT_BYTES_PER_PARAM / GIB + EXPORT_BASE_GIB


def available_ram_gib() -> float:
    """MemAvailable of /proc/meminfo (Linux; libtpu is Linux-only anyway)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024 / GIB
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / GIB


def case_for(spec, plan: dict) -> Case:
    """The spec's own planned layout as the export step takes it; refuses what cannot be verified."""
    from specc.spec.derived import cluster_accelerator, total_devices
    from specc.spec.parallel import ParallelSpec

    accelerator = cluster_accelerator(spec.cluster)
    if accelerator is None or accelerator.kind != "tpu":
        raise VerifyError(f"--verify compiles the training step with libtpu and is TPU-only for now; "
                          f"cluster.accelerator is {spec.cluster.accelerator}. Plan a TPU cluster "
                          f"(e.g. cluster.accelerator: tpu-v5e) to verify its memory.")
    if accelerator.id == "tpu-v4":
        raise VerifyError("--verify does not support TPU v4 yet: libtpu's v4 topologies count two devices per "
                          "chip (one per TensorCore), the runtime's mesh one; verify on v5e, v5p or v6e")
    if not plan.get("layout"):
        raise VerifyError("--verify checks the pretrain stage's layout, and this spec has no pretrain stage")
    devices = total_devices(spec.cluster)
    largest = accelerator.extra.get("max_slice_chips")
    topo = topology(accelerator.id, str(accelerator.extra.get("torus", "2d")), devices,
                    int(largest) if largest else None)
    layout = plan["layout"]
    fields = {key: value for key, value in layout.items() if key in ParallelSpec.model_fields}
    if fields.get("fsdp"):
        fields["zero_stage"] = 0  # the contract reports the sharded stage; the spec spells it fsdp
    parallel = ParallelSpec(**fields).model_dump(mode="json")
    return Case(model=spec.model.model_dump(mode="json"), parallel=parallel,
                seq_len=int(spec.schedule.seq_len), devices=devices, topology=topo)


# --- run and compare ------------------------------------------------------------------------------


def _failed(command: list[str], result: subprocess.CompletedProcess, step: str) -> VerifyError:
    tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-12:])
    return VerifyError(f"--verify's {step} step failed ({' '.join(command[:2])} ... exited "
                       f"{result.returncode}); its last lines:\n{tail}")


def export_step(case: Case, out: Path, python: Path) -> None:
    """Step 1: trace the step in the TPU environment on `case.devices` virtual CPU devices."""
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "XLA_FLAGS")}
    env.update(PJRT_DEVICE="CPU", CPU_NUM_DEVICES=str(case.devices), TF_CPP_MIN_LOG_LEVEL="2",
               PYTHONPATH=os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]))
    command = [str(python), "-m", "specc.runtime.tpu.export_step", case.export_json(), str(out)]
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise _failed(command, result, "export")


def compile_step(directory: Path, topology_name: str, python: str) -> dict:
    """Step 2: libtpu's compiled memory per chip, bytes (an over-HBM program is a result, not a failure)."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    command = [python, str(COMPILE_SCRIPT), str(directory), topology_name]
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        refusal = next((line.strip() for line in result.stderr.splitlines() if "exceeds available HBM" in line), None)
        if refusal:
            return {"refused": refusal}
        raise _failed(command, result, "compile")
    return json.loads(result.stdout.strip().splitlines()[-1])


def compare(planned_gib: float, compiled: dict, topology_name: str) -> dict:
    """The `verify` object of the plan JSON, with a P250 finding when the figures disagree."""
    result = {"topology": topology_name, "planned_gib": round(planned_gib, 4), "reserve_gib": RESERVE_GIB,
              "method": "torch-xla SPMD step (one micro-batch, AdamW) exported as StableHLO, compiled ahead of time "
                        f"by libtpu ({JAX_PIN}); compiled peak = arguments + temporaries per chip"}
    if "refused" in compiled:
        result.update(compiled_gib=None, refused=compiled["refused"], difference_pct=None)
        result["finding"] = {"code": "P250", "message": (
            f"libtpu refuses to compile the step for {topology_name}: {compiled['refused']}; the plan predicts "
            f"{planned_gib:.2f} GiB per chip")}
        return result
    peak = (compiled["argument_bytes"] + compiled["temp_bytes"]) / GIB
    program = planned_gib - RESERVE_GIB
    difference = 100 * (program / peak - 1) if peak > 0 else 0.0
    result.update(compiled_gib=round(peak, 4), argument_gib=round(compiled["argument_bytes"] / GIB, 4),
                  temp_gib=round(compiled["temp_bytes"] / GIB, 4), output_gib=round(compiled["output_bytes"] / GIB, 4),
                  planned_program_gib=round(program, 4), difference_pct=round(difference, 1))
    if abs(difference) > 100 * TOLERANCE:
        result["finding"] = {"code": "P250", "message": (
            f"the planned memory per chip ({program:.3f} GiB without the {RESERVE_GIB} GiB reserve) differs from "
            f"libtpu's compile of the step for {topology_name} ({peak:.3f} GiB) by {difference:+.0f}%: "
            f"trust the compiled figure for whether it fits")}
    return result


def verify(spec, plan: dict, jax_flag: str | None) -> dict:
    """Export, compile and compare the spec's planned layout; VerifyError when it cannot run here."""
    case = case_for(spec, plan)
    needed, available = export_ram_gib(int(plan["model"]["params"])), available_ram_gib()
    if needed > available:
        raise VerifyError(
            f"--verify traces the full model ({plan['model']['params'] / 1e9:.2f}B parameters) on this host's CPU, "
            f"which needs about {needed:.0f} GiB of memory ({EXPORT_BYTES_PER_PARAM} B per parameter + "
            f"{EXPORT_BASE_GIB:.0f} GiB), and {available:.0f} GiB is available: run it on a host with more memory. "
            f"It never verifies a scaled-down model in place of the spec's.")
    python, compiler = tpu_python(), jax_python(jax_flag)
    with tempfile.TemporaryDirectory(prefix="specc-verify-") as directory:
        print(f"verify: tracing the step on {case.devices} XLA CPU devices (torch-xla)...", file=sys.stderr, flush=True)
        export_step(case, Path(directory), python)
        print(f"verify: compiling it for {case.topology} with libtpu (minutes for large models)...",
              file=sys.stderr, flush=True)
        compiled = compile_step(Path(directory), case.topology, compiler)
    return compare(float(plan["memory"]["per_device_gib"]), compiled, case.topology)


def render(result: dict) -> str:
    """The text block `specc plan --verify` prints after the plan."""
    lines = [f"Verified against libtpu's compile for {result['topology']} (per chip):"]
    if result.get("refused"):
        lines.append(f"  libtpu refuses the step: {result['refused']}")
        lines.append(f"  planned {result['planned_gib']:.3f} GiB")
    else:
        lines.append(f"  planned   {result['planned_gib']:8.3f} GiB   ({result['planned_program_gib']:.3f} GiB without "
                     f"the {result['reserve_gib']} GiB runtime reserve)")
        lines.append(f"  compiled  {result['compiled_gib']:8.3f} GiB   (arguments {result['argument_gib']:.3f} + "
                     f"temporaries {result['temp_gib']:.3f}; the reserve is not part of a compiled program)")
        lines.append(f"  difference {result['difference_pct']:+.1f}% (planned without the reserve vs compiled)")
    if "finding" in result:
        lines.append(f"  warning[P250] {result['finding']['message']}")
    return "\n".join(lines)
