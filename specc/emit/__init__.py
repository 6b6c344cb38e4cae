"""The emit phase: a validated spec and its plan rendered into a bundle directory.

`build_bundle` renders every file in memory (deterministic); `write_bundle` writes it
atomically. Torch-free, like validate and plan.
"""

from specc.emit.bundle import Bundle, EmitError, build_bundle, write_bundle

__all__ = ["Bundle", "EmitError", "build_bundle", "write_bundle"]
