"""Checkpoint files: one safetensors file with the tensors and one JSON record, validated
against one schema wherever it is read; and state dicts from other weights files.

A record of a run, not a training concept: evaluation, serving and training all read it.
"""

from .files import (
    BEST,
    FINAL,
    LAST,
    PREVIOUS,
    Checkpoint,
    NonFiniteCheckpoint,
    atomic_write_bytes,
    build_model,
    check_finite,
    checkpoint_bytes,
    fsync_dir,
    load_checkpoint,
    load_torch_weights,
    named_weights,
    parse_temp_name,
    read_checkpoint,
    read_newest,
    restore_rng,
    save_checkpoint,
    temp_name,
    write_durable,
    write_error,
)
from .schema import FORMAT, FORMAT_VERSION, META_KEY, WINDOW_KEYS
from .state_dicts import HEAD, load_state_dict_for_model, read_state_dict, weights_record

__all__ = [
    "BEST", "FINAL", "FORMAT", "FORMAT_VERSION", "HEAD", "LAST", "META_KEY", "PREVIOUS",
    "WINDOW_KEYS", "Checkpoint", "NonFiniteCheckpoint", "atomic_write_bytes", "build_model",
    "check_finite", "checkpoint_bytes", "fsync_dir", "load_checkpoint", "load_state_dict_for_model",
    "load_torch_weights", "named_weights", "parse_temp_name", "read_checkpoint", "read_newest",
    "read_state_dict", "restore_rng", "save_checkpoint", "temp_name", "weights_record",
    "write_durable", "write_error",
]
