"""The `data` stage: read sources, filter, deduplicate and mix documents.

Modules here import only the standard library and numpy at module level, except
`stage` (the job entry point) and the readers that load optional libraries lazily. The
stage's config is built by `specc.emit.configs.data`.
"""
