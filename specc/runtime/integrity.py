"""The integrity helpers live in `specc.integrity` (torch-free, shared by launch and runtime);
this module re-exports them for the runtime's existing imports."""

from specc.integrity import (  # noqa: F401
    StageError,
    IntegrityError,
    StorageError,
    NonFiniteLossError,
    new_hash,
    entry_algorithm,
    digest_bytes,
    file_digest,
    entry_problem,
    manifest_of,
    manifest_problems,
    listing,
    verify_manifest,
    read_json,
    write_bytes,
    free_space,
    storage_error,
    storage_errors,
    staged_directory,
    storage_cause,
    HASH,
    CHUNK,
    STORAGE_ERRNOS,
)
