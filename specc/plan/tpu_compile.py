"""Compile an exported SPMD step ahead of time for a TPU topology and print its memory per chip.

Step 2 of `specc plan --verify` (and of `benchmarks/tpu_memory_truth.py`), run as a script by the
python of a JAX environment with libtpu (`jax[tpu]==0.10.2`; private JAX APIs, hence the pin).
libtpu compiles for a topology it is not attached to (MaxText's `train_compile.py` does the same).
Three patches make torch-xla's module compilable for the topology: the partition count, the
output shardings (`outputs.json`; unannotated outputs would be read as replicated), and boolean
constants (`unpack_i1_constants`). Prints one JSON
line: `CompiledMemoryStats`' argument, output, temporary and alias bytes per chip.

Stand-alone on purpose: it is run as a file (`python tpu_compile.py DIR TOPOLOGY`), so it imports
only the standard library and JAX, never the `specc` package (whose dependencies the JAX
environment lacks).

Usage: `python tpu_compile.py EXPORT_DIR TOPOLOGY` (TOPOLOGY as libtpu names it, e.g. `v5e:2x2`),
or `python tpu_compile.py --probe` (exit 0 when JAX and libtpu import).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

I1_HEX = re.compile(r'dense<"0x([0-9A-Fa-f]+)"> : tensor<([0-9x]*)xi1>')


def unpack_i1_constants(text: str) -> str:
    """Rewrite bit-packed boolean constants one byte per element.

    torch-xla 2.9's MLIR prints a non-splat `tensor<...xi1>` constant in hex with 8 elements per byte
    (element i at bit i % 8 of byte i // 8, LLVM's old storage); the MLIR of jax 0.10.2 reads i1 hex as
    one byte per element and rejects the packed form ("elements hex data size is invalid"), seen with
    the rotary embedding's masks. One byte per element is unambiguous for more than one element.
    """
    def unpack(match: re.Match) -> str:
        data, shape = bytes.fromhex(match.group(1)), match.group(2)
        count = 1
        for size in (int(s) for s in shape.split("x") if s):
            count *= size
        if count <= 1 or len(data) == count or len(data) != -(-count // 8):
            return match.group(0)
        flat = bytes((data[i // 8] >> (i % 8)) & 1 for i in range(count))
        return f'dense<"0x{flat.hex().upper()}"> : tensor<{shape}xi1>'

    return I1_HEX.sub(unpack, text)


def compile_for_topology(directory: Path, topology: str) -> dict:
    """`CompiledMemoryStats` of `directory/step.mlir` compiled for `topology`, in bytes per chip."""
    import numpy as np
    from jax._src import compiler
    from jax._src.interpreters import mlir
    from jax._src.lib import xla_client as xc
    from jax._src.lib.mlir import ir
    from jax.experimental import topologies

    devices = topologies.get_topology_desc(topology, "tpu").devices
    meta = json.loads((directory / "outputs.json").read_text())
    if meta["num_devices"] != len(devices):
        raise ValueError(f"exported for {meta['num_devices']} devices, topology {topology} has {len(devices)}")
    with mlir.make_ir_context():
        module = ir.Module.parse(unpack_i1_constants((directory / "step.mlir").read_text()))
        i32 = ir.IntegerType.get_signless(32)
        module.operation.attributes["mhlo.num_partitions"] = ir.IntegerAttr.get(i32, len(devices))
        module.operation.attributes["mhlo.num_replicas"] = ir.IntegerAttr.get(i32, 1)
        main = next(op for op in module.body.operations if ir.StringAttr(op.attributes["sym_name"]).value == "main")
        main.attributes["res_attrs"] = ir.ArrayAttr.get(
            [ir.DictAttr.get({"mhlo.sharding": ir.StringAttr.get(s)}) for s in meta["shardings"]])
        client = devices[0].client
        options = compiler.get_compile_options(num_replicas=1, num_partitions=len(devices),
                                               device_assignment=np.array(devices).reshape(1, -1), backend=client)
        options.executable_build_options.use_shardy_partitioner = False  # the module carries GSPMD shardings
        executable = compiler.backend_compile_and_load(client, module, xc.DeviceList(tuple(devices)), options, [])
    stats = executable.get_compiled_memory_stats()
    return {"argument_bytes": stats.argument_size_in_bytes, "output_bytes": stats.output_size_in_bytes,
            "temp_bytes": stats.temp_size_in_bytes, "alias_bytes": stats.alias_size_in_bytes}


def probe() -> None:
    """Import what a compile needs; an ImportError (exit 1) means this python cannot verify."""
    import jax  # noqa: F401
    import libtpu  # noqa: F401
    from jax.experimental import topologies  # noqa: F401


if __name__ == "__main__":
    if sys.argv[1:] == ["--probe"]:
        probe()
    else:
        print(json.dumps(compile_for_topology(Path(sys.argv[1]), sys.argv[2])))
