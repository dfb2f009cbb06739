"""Checkpoints: one safetensors file per checkpoint, written atomically, loaded without pickle.

A file holds tensors under prefixes and one JSON record in the safetensors metadata:

* ``model.<key>``: the model's state dict (never with a ``torch.compile`` prefix);
* ``optim.<param index>.<key>``: tensor parts of the optimizer state (momentum buffers);
* ``rng.<name>``: RNG states (torch CPU / CUDA, numpy keys) for exact resume;
* ``extra.<key>``: other training-state tensors (metric accumulators);
* metadata ``"resnets"``: JSON with the model name and kwargs, classes, normalization, the
  resolved config, iteration, metrics, versions, and the non-tensor optimizer / RNG state.

Nothing in a checkpoint is executable, so loading one cannot run code.
"""

from __future__ import annotations

import json
import os
import random
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import nn

from ..errors import CheckpointError

FORMAT = "resnets-checkpoint"
FORMAT_VERSION = 1
META_KEY = "resnets"
LAST, PREVIOUS, BEST = "last.safetensors", "previous.safetensors", "best.safetensors"


@dataclass
class Checkpoint:
    model_state: dict[str, torch.Tensor]
    meta: dict[str, Any]
    optimizer_state: dict[str, Any] | None = None
    rng: dict[str, Any] | None = None
    extra: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def iteration(self) -> int:
        return int(self.meta.get("iteration", 0))


def versions() -> dict[str, str]:
    import torchvision

    from .. import __version__

    return {"resnets": __version__, "torch": torch.__version__,
            "torchvision": torchvision.__version__, "python": sys.version.split()[0]}


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary sibling, fsync, then rename: readers see the old or the new file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # make the rename itself durable
    finally:
        os.close(dir_fd)


def _rng_state() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = s
    name, keys, pos, has_gauss, cached = np.random.get_state()
    tensors["rng.numpy"] = torch.from_numpy(keys.astype(np.int64))
    version, py_state, gauss = random.getstate()
    json_state = {"numpy": [name, int(pos), int(has_gauss), float(cached)],
                  "python": [version, list(py_state), gauss]}
    return tensors, json_state


def restore_rng(rng: dict[str, Any]) -> None:
    """Restore every RNG saved by :func:`save_checkpoint` (torch, CUDA, numpy, python)."""
    tensors, js = rng["tensors"], rng["json"]
    torch.set_rng_state(tensors["rng.torch"])
    cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("rng.cuda."))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    name, pos, has_gauss, cached = js["numpy"]
    np.random.set_state((name, tensors["rng.numpy"].numpy().astype(np.uint32), pos, has_gauss,
                         cached))
    version, py_state, gauss = js["python"]
    random.setstate((version, tuple(py_state), gauss))


def _split_optimizer(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, st in state["state"].items():
        for key, value in st.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{idx}.{key}"] = value
            else:
                scalars.setdefault(str(idx), {})[key] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _join_optimizer(tensors: dict[str, torch.Tensor], js: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        _, idx, key = name.split(".", 2)
        state.setdefault(int(idx), {})[key] = value
    for idx, st in js["scalars"].items():
        state.setdefault(int(idx), {}).update(st)
    return {"state": state, "param_groups": js["param_groups"]}


def save_checkpoint(
    path: str | os.PathLike,
    *,
    model: nn.Module,
    meta: dict[str, Any],
    optimizer: torch.optim.Optimizer | None = None,
    extra: dict[str, torch.Tensor] | None = None,
    include_rng: bool = False,
) -> Path:
    """Write a checkpoint atomically. ``meta`` must be JSON-serialisable."""
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    record: dict[str, Any] = {"format": FORMAT, "format_version": FORMAT_VERSION,
                              "versions": versions(), **meta}
    if optimizer is not None:
        opt_tensors, record["optimizer"] = _split_optimizer(optimizer.state_dict())
        tensors.update({k: v.detach().cpu().contiguous() for k, v in opt_tensors.items()})
    if include_rng:
        rng_tensors, record["rng"] = _rng_state()
        tensors.update(rng_tensors)
    for k, v in (extra or {}).items():
        tensors[f"extra.{k}"] = v.detach().cpu().contiguous()
    data = st_save(tensors, metadata={META_KEY: json.dumps(record)})
    atomic_write_bytes(Path(path), data)
    return Path(path)


def read_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Read and validate a checkpoint file; every failure is a :class:`CheckpointError`."""
    path = Path(path)
    if path.is_dir():
        inside = sorted(p.name for p in path.glob("*.safetensors"))
        example = path / (BEST if BEST in inside or not inside else inside[0])
        raise CheckpointError(f"checkpoint {path} is a directory, not a file (it holds "
                              f"{', '.join(inside) or 'no .safetensors file'}). Give the path of "
                              f"one checkpoint file, e.g. {example}.")
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist. Give the path of a "
                              f".safetensors file written by `resnets train` (in --out DIR).")
    if path.suffix in (".pth", ".pt", ".bin"):
        raise CheckpointError(f"{path} is a pickle-based torch file; it holds weights without "
                              f"the model metadata a resnets checkpoint needs. Import it with "
                              f"resnets.train.checkpoint.load_torch_weights() instead.")
    data = path.read_bytes()
    try:
        # Own copies: tensors viewing the read-only bytes must not be written in place
        # (optimizer momenta and metric accumulators are).
        tensors = {k: v.clone() for k, v in st_load(data).items()}
        record = json.loads(_header_metadata(data)[META_KEY])
    except (SafetensorError, ValueError, KeyError, json.JSONDecodeError) as e:
        size = len(data)
        raise CheckpointError(f"checkpoint {path} is unreadable ({size} bytes; {e}). It may be "
                              f"truncated or not a resnets checkpoint. Use an earlier "
                              f"checkpoint (previous.safetensors) or --resume auto, which "
                              f"skips damaged files.") from None
    if record.get("format") != FORMAT:
        raise CheckpointError(f"{path} is a safetensors file but not a resnets checkpoint "
                              f"(no '{FORMAT}' record).")
    groups: dict[str, dict[str, torch.Tensor]] = {"model": {}, "optim": {}, "rng": {},
                                                  "extra": {}}
    for name, t in tensors.items():
        prefix, _, rest = name.partition(".")
        groups[prefix][rest if prefix in ("model", "extra") else name] = t
    optimizer = record.pop("optimizer", None)
    rng = record.pop("rng", None)
    return Checkpoint(
        model_state=groups["model"],
        meta=record,
        optimizer_state=_join_optimizer(groups["optim"], optimizer) if optimizer else None,
        rng={"tensors": groups["rng"], "json": rng} if rng else None,
        extra=groups["extra"],
    )


def _header_metadata(data: bytes) -> dict[str, str]:
    """The string metadata of a safetensors byte string (8-byte header length, then JSON)."""
    n = int.from_bytes(data[:8], "little")
    return json.loads(data[8 : 8 + n]).get("__metadata__", {})


def build_model(meta: dict[str, Any]) -> nn.Module:
    from ..models import create_model

    return create_model(meta["model"], **meta.get("model_kwargs", {}))


def load_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu"):
    """Load a checkpoint for inference: returns ``(model in eval mode, metadata dict)``."""
    ckpt = read_checkpoint(path)
    model = build_model(ckpt.meta)
    try:
        model.load_state_dict(ckpt.model_state, strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"checkpoint {path}: weights do not fit model "
                              f"{ckpt.meta['model']!r} ({e}).") from None
    return model.to(device).eval(), ckpt.meta


def load_torch_weights(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A state dict from a ``.pth`` file, with ``weights_only=True``: code in it is refused."""
    import pickle

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(f"{path} needs arbitrary unpickling, which could run code, so it "
                              f"was refused ({str(e).splitlines()[0]}). Re-save the weights as "
                              f"a plain state dict or as safetensors.") from None
    except (OSError, RuntimeError, EOFError) as e:
        raise CheckpointError(f"{path} is not a readable torch file ({e}).") from None
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path} does not hold a state dict (name -> tensor).")
    return obj


def rotate_and_save(run_dir: Path, **kwargs) -> Path:
    """Save ``last`` and keep the one before as ``previous``: a crash at any point leaves at
    least one complete training checkpoint."""
    last, previous = run_dir / LAST, run_dir / PREVIOUS
    tmp = run_dir / f".{LAST}.new"
    save_checkpoint(tmp, **kwargs)
    if last.exists():
        os.replace(last, previous)
    os.replace(tmp, last)
    return last


def find_resume_checkpoint(run_dir: str | os.PathLike) -> tuple[Checkpoint, Path] | None:
    """The newest complete training checkpoint in ``run_dir`` (damaged ones are skipped)."""
    import warnings

    best: tuple[Checkpoint, Path] | None = None
    for name in (LAST, PREVIOUS):
        path = Path(run_dir) / name
        if not path.exists():
            continue
        try:
            ckpt = read_checkpoint(path)
        except CheckpointError as e:
            warnings.warn(f"skipping damaged checkpoint: {e}", stacklevel=2)
            continue
        if ckpt.optimizer_state is None:
            continue
        if best is None or ckpt.iteration > best[0].iteration:
            best = (ckpt, path)
    return best


def remove_stale_temporaries(run_dir: str | os.PathLike) -> list[Path]:
    """Delete the temporary files of checkpoint writers that were killed mid-save."""
    stale = [p for p in Path(run_dir).glob(".*.safetensors*")
             if ".tmp-" in p.name or p.name.endswith(".new")]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale
