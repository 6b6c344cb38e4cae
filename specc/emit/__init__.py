"""The emit phase: a validated spec and its plan rendered into a bundle directory.

`specc.emit.bundle.build_bundle` renders every file in memory (deterministic); `write_bundle`
writes it atomically; `specc.emit.configs` builds each stage's config. Torch-free, like
validate and plan. (Nothing is imported here, so that the stage registry can import the
config builders without importing the whole emitter.)
"""
