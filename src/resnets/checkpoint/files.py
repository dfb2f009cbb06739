"""Checkpoints: one safetensors file per checkpoint, written atomically, loaded without pickle.

A file holds tensors under prefixes and one JSON record in the safetensors metadata:

* ``model.<key>``: the model's state dict (never with a ``torch.compile`` prefix);
* ``optim.<param index>.<key>``: tensor parts of the optimizer state (momentum buffers);
* ``rng.<name>``: RNG states (torch CPU / CUDA, numpy keys) for exact resume;
* ``extra.<key>``: other training-state tensors (metric accumulators);
* metadata ``"resnets"``: JSON with the model name and kwargs, classes, normalization, the
  resolved config, iteration, metrics, versions, the fingerprint of the training data
  (``data_fingerprint``; absent in checkpoints written before it, and in imported weights),
  and the non-tensor optimizer / RNG state.

Nothing in a checkpoint is executable, so loading one cannot run code. What a valid record
holds is checked by `resnets.checkpoint.schema`; how a run directory keeps ``last`` and
``previous`` (rotation, resume, stale temporaries) is `resnets.train.rundir`.
"""

from __future__ import annotations

import json
import os
import pickle
import pickletools
import random
import re
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
from ..models import create_model
from ..models.pretrained import get_weights
from ..version import versions
from .schema import (
    FORMAT,
    FORMAT_VERSION,
    META_KEY,
    InvalidRecord,
    invalid,
    validate_record,
)

LAST, PREVIOUS, BEST = "last.safetensors", "previous.safetensors", "best.safetensors"
FINAL = "final.safetensors"  # a finished run's last-iteration weights, without training state


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


def temp_name(name: str, pid: int | None = None) -> str:
    """The hidden name under which process ``pid`` writes ``name`` before renaming it: one per
    process, so that two writers never share a temporary file."""
    return f".{name}.{os.getpid() if pid is None else pid}.new"


# Temporaries: `.NAME.PID.new` (this version), `.NAME.tmp-PID` and `.last.safetensors.new`
# (earlier versions, which had no lock and one shared name).
_TEMP = re.compile(r"^\.(?P<name>.+?)(?:\.(?P<pid>\d+)\.new|\.tmp-(?P<old_pid>\d+)|\.new)$")


def parse_temp_name(name: str) -> tuple[str, int | None] | None:
    """``(target name, writer PID or None)`` of a checkpoint writer's temporary file."""
    m = _TEMP.match(name)
    if m is None:
        return None
    pid = m.group("pid") or m.group("old_pid")
    return m.group("name"), int(pid) if pid else None


def write_durable(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def fsync_dir(directory: Path) -> None:
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # make renames and links durable
    finally:
        os.close(dir_fd)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary sibling, fsync, then rename: readers see the old or the new file."""
    path = Path(path)
    tmp = path.with_name(temp_name(path.name))
    try:
        write_durable(tmp, data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)


def write_error(path: Path, e: OSError, kept: str) -> CheckpointError:
    return CheckpointError(f"could not write checkpoint {path} in {path.parent} "
                           f"({e.strerror or e}); {kept} Free space on that disk (or fix its "
                           f"permissions) and continue with --resume auto.")


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


class NonFiniteCheckpoint(CheckpointError):
    """The state to be saved holds NaN or inf: it is refused, and the file on disk is kept."""


def _refuse_nonfinite(tensors: dict[str, torch.Tensor], path: Path, meta: dict[str, Any]) -> None:
    # A NaN saved as the newest checkpoint would replace the last good state that resume and
    # eval read; one check before writing keeps every file on disk finite.
    floats = [(k, t) for k, t in tensors.items()
              if (k.startswith(("model.", "optim."))) and t.is_floating_point()]
    if not floats:
        return
    ok = torch.stack([torch.isfinite(t).all() for _, t in floats])
    if bool(ok.all()):
        return
    bad = [k for (k, _), good in zip(floats, ok.tolist(), strict=True) if not good]
    raise NonFiniteCheckpoint(
        f"refusing to write {path} at iteration {meta.get('iteration', '?')}: "
        f"{len(bad)} tensor(s) hold NaN or inf values (e.g. {', '.join(bad[:3])}). Nothing was "
        f"written; the previous checkpoint in {path.parent} is kept. Lower --lr, add a warm-up "
        f"(--warmup-lr), or check the data for corrupt images.")


def check_finite(path: str | os.PathLike, *, model: nn.Module,
                 optimizer: torch.optim.Optimizer | None = None,
                 meta: dict[str, Any] | None = None) -> None:
    """Raise `NonFiniteCheckpoint` (naming ``path``) if the weights, BN statistics or optimizer
    state hold NaN or inf."""
    tensors = {f"model.{k}": v.detach() for k, v in model.state_dict().items()}
    if optimizer is not None:
        tensors.update({k: v.detach() for k, v in
                        _split_optimizer(optimizer.state_dict())[0].items()})
    _refuse_nonfinite(tensors, Path(path), meta or {})


def checkpoint_bytes(
    path: str | os.PathLike,
    *,
    model: nn.Module,
    meta: dict[str, Any],
    optimizer: torch.optim.Optimizer | None = None,
    extra: dict[str, torch.Tensor] | None = None,
    include_rng: bool = False,
) -> bytes:
    """The safetensors bytes of a checkpoint destined for ``path`` (named in errors); refuses
    non-finite weights, BN statistics and optimizer state (`NonFiniteCheckpoint`)."""
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    record: dict[str, Any] = {"format": FORMAT, "format_version": FORMAT_VERSION,
                              "versions": versions(), **meta}
    if optimizer is not None:
        opt_tensors, record["optimizer"] = _split_optimizer(optimizer.state_dict())
        tensors.update({k: v.detach().cpu().contiguous() for k, v in opt_tensors.items()})
    _refuse_nonfinite(tensors, Path(path), meta)
    if include_rng:
        rng_tensors, record["rng"] = _rng_state()
        tensors.update(rng_tensors)
    for k, v in (extra or {}).items():
        tensors[f"extra.{k}"] = v.detach().cpu().contiguous()
    return st_save(tensors, metadata={META_KEY: json.dumps(record)})


def save_checkpoint(path: str | os.PathLike, **kwargs) -> Path:
    """Write a checkpoint atomically (keyword arguments of `checkpoint_bytes`)."""
    path = Path(path)
    data = checkpoint_bytes(path, **kwargs)
    try:
        atomic_write_bytes(path, data)
    except OSError as e:
        kept = "the file there is unchanged." if path.exists() else "no file was written."
        raise write_error(path, e, kept) from None
    return path


def named_weights(path: str | os.PathLike) -> Path:
    """``path``, or the sha256-checked file of the shipped weights it names
    (``resnet20.cifar10``): every option that takes weights takes a name too."""
    p = Path(path).expanduser()
    looks_like_a_name = (len(p.parts) == 1 and "." in p.name
                         and p.suffix not in (".safetensors", ".pth", ".pt", ".bin", ".th"))
    if p.exists() or not looks_like_a_name:
        return p
    return get_weights(p.name).verify()  # unknown names get the list of shipped ones


def read_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Read and validate a checkpoint file; every failure is a :class:`CheckpointError`.

    A shipped weight's name (``resnet20.cifar10``) stands for its file, sha256-checked."""
    path = named_weights(path)
    if path.is_dir():
        inside = sorted(p.name for p in path.glob("*.safetensors"))
        # The final weights are the ones to report; best was chosen on validation images.
        preferred = [n for n in (FINAL, LAST) if n in inside] or inside or [LAST]
        example = path / preferred[0]
        raise CheckpointError(f"checkpoint {path} is a directory, not a file (it holds "
                              f"{', '.join(inside) or 'no .safetensors file'}). Give the path of "
                              f"one checkpoint file, e.g. {example}.")
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist. Give the path of a "
                              f".safetensors file written by `resnets train` (in --out DIR).")
    if path.suffix in (".pth", ".pt", ".bin"):
        raise CheckpointError(f"{path} is a pickle-based torch file; it holds weights without "
                              f"the model metadata a resnets checkpoint needs. Import it with "
                              f"resnets.checkpoint.load_torch_weights() instead.")
    data = path.read_bytes()
    try:
        # Own copies: tensors viewing the read-only bytes must not be written in place
        # (optimizer momenta and metric accumulators are).
        tensors = {k: v.clone() for k, v in st_load(data).items()}
        record = json.loads(_header_metadata(data)[META_KEY])
    except (SafetensorError, ValueError, KeyError, TypeError, AttributeError) as e:
        size = len(data)
        raise CheckpointError(f"checkpoint {path} is unreadable ({size} bytes; {e}). It may be "
                              f"truncated or not a resnets checkpoint. Use an earlier "
                              f"checkpoint (previous.safetensors) or --resume auto, which "
                              f"skips damaged files.") from None
    except RecursionError:
        raise invalid(path, "its metadata is nested too deeply to be a record") from None
    if not isinstance(record, dict):
        raise invalid(path, f"its metadata is a JSON {type(record).__name__}, not an object")
    if record.get("format") != FORMAT:
        raise CheckpointError(f"{path} is a safetensors file but not a resnets checkpoint "
                              f"(no '{FORMAT}' record).")
    groups: dict[str, dict[str, torch.Tensor]] = {"model": {}, "optim": {}, "rng": {},
                                                  "extra": {}}
    for name, t in tensors.items():
        prefix, _, rest = name.partition(".")
        if prefix not in groups or not rest:
            raise invalid(path, f"tensor {name!r} is none of model.*, optim.*, rng.*, extra.*")
        groups[prefix][rest if prefix in ("model", "extra") else name] = t
    optimizer = record.pop("optimizer", None)
    rng = record.pop("rng", None)
    try:
        validate_record(record, groups, optimizer, rng)
    except InvalidRecord as e:
        raise invalid(path, str(e)) from None
    return Checkpoint(
        model_state=groups["model"],
        meta=record,
        optimizer_state=_join_optimizer(groups["optim"], optimizer) if optimizer else None,
        rng={"tensors": groups["rng"], "json": rng} if rng else None,
        extra=groups["extra"],
    )


def read_newest(run_dir: str | os.PathLike) -> tuple[Path, Checkpoint] | None:
    """A run directory's newest readable record and its path: the final weights of a finished
    run, else its last training state; None when it holds neither."""
    for name in (FINAL, LAST):
        path = Path(run_dir) / name
        try:
            return path, read_checkpoint(path)
        except CheckpointError:
            continue
    return None


def _header_metadata(data: bytes) -> dict[str, str]:
    """The string metadata of a safetensors byte string (8-byte header length, then JSON)."""
    n = int.from_bytes(data[:8], "little")
    return json.loads(data[8 : 8 + n]).get("__metadata__", {})


def build_model(meta: dict[str, Any]) -> nn.Module:
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


def _pickled_global(path: str | os.PathLike) -> str | None:
    """The first non-torch global a plain pickle file imports, or None (none, or not a pickle).

    Read with pickletools, which parses opcodes and runs nothing; torch's own error does not
    always get that far (it stops at opcodes its weights-only reader lacks).
    """
    strings: list[str] = []
    try:
        with open(path, "rb") as stream:
            for _ in range(4):  # torch's legacy format: a few pickles in a row
                for op, arg, _ in pickletools.genops(stream):
                    if isinstance(arg, str):
                        strings.append(arg)
                    name = (arg.replace(" ", ".") if op.name in ("GLOBAL", "INST")
                            else ".".join(strings[-2:]) if op.name == "STACK_GLOBAL" else None)
                    if name and not name.startswith(("torch.", "collections.OrderedDict")):
                        return name
    except Exception:  # not (or no longer) a pickle stream: nothing more to find
        pass
    return None


def load_torch_weights(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A state dict from a ``.pth`` file, with ``weights_only=True``: code in it is refused."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        # Only a pickle that names a function or class outside the allowed tensor types is
        # code; random or damaged bytes fail the same way and must not be reported as such.
        named = re.search(r"GLOBAL ([\w.]+)", str(e))
        named = named.group(1) if named else _pickled_global(path)
        if named is None:
            raise CheckpointError(f"{path} is not a readable torch file: damaged, truncated or "
                                  f"not saved by torch.save. Re-download or re-save it (a "
                                  f"state dict or safetensors).") from None
        raise CheckpointError(f"{path} needs arbitrary unpickling, which could run code, so it "
                              f"was refused (it names {named}). Re-save the weights "
                              f"as a plain state dict or as safetensors.") from None
    except (OSError, RuntimeError, EOFError, KeyError, ValueError, IndexError) as e:
        # What torch.load raises on bytes that only look like a pickle in part.
        raise CheckpointError(f"{path} is not a readable torch file ({type(e).__name__}: "
                              f"{e}).") from None
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path} does not hold a state dict (name -> tensor).")
    return obj
