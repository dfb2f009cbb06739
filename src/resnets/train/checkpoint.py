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
import math
import os
import random
import re
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
from ..models.pretrained import get_weights

FORMAT = "resnets-checkpoint"
FORMAT_VERSION = 1
META_KEY = "resnets"
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


def versions() -> dict[str, str]:
    import torchvision

    from .. import __version__

    return {"resnets": __version__, "torch": torch.__version__,
            "torchvision": torchvision.__version__, "python": sys.version.split()[0]}


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


def _write_durable(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _fsync_dir(directory: Path) -> None:
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
        _write_durable(tmp, data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)


def _write_error(path: Path, e: OSError, kept: str) -> CheckpointError:
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
        raise _write_error(path, e, kept) from None
    return path


def _named_weights(path: str | os.PathLike) -> Path:
    p = Path(path)
    looks_like_a_name = (len(p.parts) == 1 and "." in p.name
                         and p.suffix not in (".safetensors", ".pth", ".pt", ".bin", ".th"))
    if p.exists() or not looks_like_a_name:
        return p
    return get_weights(p.name).verify()  # unknown names get the list of shipped ones


def read_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Read and validate a checkpoint file; every failure is a :class:`CheckpointError`.

    A shipped weight's name (``resnet20.cifar10``) stands for its file, sha256-checked."""
    path = _named_weights(path)
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
    except (SafetensorError, ValueError, KeyError, TypeError, AttributeError) as e:
        size = len(data)
        raise CheckpointError(f"checkpoint {path} is unreadable ({size} bytes; {e}). It may be "
                              f"truncated or not a resnets checkpoint. Use an earlier "
                              f"checkpoint (previous.safetensors) or --resume auto, which "
                              f"skips damaged files.") from None
    except RecursionError:
        raise _invalid(path, "its metadata is nested too deeply to be a record") from None
    if not isinstance(record, dict):
        raise _invalid(path, f"its metadata is a JSON {type(record).__name__}, not an object")
    if record.get("format") != FORMAT:
        raise CheckpointError(f"{path} is a safetensors file but not a resnets checkpoint "
                              f"(no '{FORMAT}' record).")
    groups: dict[str, dict[str, torch.Tensor]] = {"model": {}, "optim": {}, "rng": {},
                                                  "extra": {}}
    for name, t in tensors.items():
        prefix, _, rest = name.partition(".")
        if prefix not in groups or not rest:
            raise _invalid(path, f"tensor {name!r} is none of model.*, optim.*, rng.*, extra.*")
        groups[prefix][rest if prefix in ("model", "extra") else name] = t
    optimizer = record.pop("optimizer", None)
    rng = record.pop("rng", None)
    try:
        validate_record(record, groups, optimizer, rng)
    except _Invalid as e:
        raise _invalid(path, str(e)) from None
    return Checkpoint(
        model_state=groups["model"],
        meta=record,
        optimizer_state=_join_optimizer(groups["optim"], optimizer) if optimizer else None,
        rng={"tensors": groups["rng"], "json": rng} if rng else None,
        extra=groups["extra"],
    )


# ------------------------------------------------------------------------------ the schema
# One description of what a checkpoint holds, checked whenever one is read: whatever a file
# says, reading it either gives a record the rest of the package can use, or this error.

MAX_CLASSES = 100_000  # ImageNet-21k has 21,841; more is a damaged or hostile record
MAX_IMAGE_SIDE = 4096  # pixels; the networks here are trained at 32 and 224
WINDOW = ("loss", "wrong", "seen", "steps")  # the metric accumulators of a training checkpoint


class _Invalid(Exception):
    pass


def _invalid(path: Path, what: str) -> CheckpointError:
    return CheckpointError(f"{path} is not a valid resnets checkpoint: {what}. Use another "
                           f"checkpoint (e.g. previous.safetensors of the run).")


def _need(ok: bool, what: str) -> None:
    if not ok:
        raise _Invalid(what)


def _is_int(v: Any, lo: int = 0, hi: int | None = None) -> bool:
    return (isinstance(v, int) and not isinstance(v, bool) and v >= lo
            and (hi is None or v <= hi))


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def validate_record(record: dict[str, Any], groups: dict[str, dict[str, torch.Tensor]],
                    optimizer: Any = None, rng: Any = None) -> None:
    """Raise `_Invalid` (what is wrong) unless ``record`` and its tensors form a checkpoint."""
    from ..data.device_loader import Normalization
    from ..errors import UserError

    version = record.get("format_version", FORMAT_VERSION)
    _need(_is_int(version, 1, FORMAT_VERSION),
          f"format_version {version!r} (this resnets reads up to {FORMAT_VERSION})")
    _need(record.get("kind", "weights") in ("training", "weights"),
          f"kind {record.get('kind')!r} is neither 'training' nor 'weights'")
    model = record.get("model")
    _need(isinstance(model, str) and model != "", "no 'model' name")
    kwargs = record.get("model_kwargs", {})
    _need(isinstance(kwargs, dict), f"model_kwargs is {type(kwargs).__name__}, not an object")
    _need("weights" not in kwargs, "model_kwargs names weights to load")
    outputs = kwargs.get("num_classes")
    _need(outputs is None or _is_int(outputs, 1, MAX_CLASSES),
          f"model_kwargs.num_classes must be 1..{MAX_CLASSES}, got {outputs!r}")
    net = _build_on_meta(model, kwargs)
    expected = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    found = {k: tuple(v.shape) for k, v in groups["model"].items()}
    if found != expected:
        diff = sorted(set(found) ^ set(expected)) or sorted(
            k for k in found if found[k] != expected[k])
        raise _Invalid(f"its weights do not fit {model} with {kwargs} ({len(diff)} tensor(s) "
                       f"missing, extra or of another shape, e.g. {diff[0]})")
    classes = record.get("classes")
    if classes is not None or record.get("kind") == "training":
        _need(isinstance(classes, list) and all(isinstance(c, str) for c in classes),
              "'classes' is not a list of names")
        outputs = net.fc.out_features if hasattr(net, "fc") else len(classes)
        _need(len(classes) == outputs,
              f"{len(classes)} class names for a network with {outputs} outputs")
    size = record.get("image_size")
    if size is not None:
        _need(isinstance(size, list) and len(size) == 3 and size[:1] == [3]
              and all(_is_int(v, 1, MAX_IMAGE_SIDE) for v in size[1:]),
              f"image_size must be [3, H, W] with 1 <= H, W <= {MAX_IMAGE_SIDE}, got {size!r:.80}")
    if "normalization" in record:
        try:
            norm = Normalization.from_dict(record["normalization"])
            mean = torch.tensor(norm.mean, dtype=torch.float32)
            std = torch.tensor(norm.std if norm.std is not None else [], dtype=torch.float32)
        except (UserError, TypeError, ValueError, RuntimeError) as e:
            raise _Invalid(f"normalization: {str(e)[:200]}") from None
        _need(bool(torch.isfinite(mean).all() and torch.isfinite(std).all()),
              "normalization holds NaN or inf")
        _need(norm.kind != "per_pixel_mean" or size is None or list(mean.shape) == size,
              f"the per-pixel mean is {list(mean.shape)}, the image_size {size}")
    prep = record.get("preprocessing")
    _need(prep is None or (isinstance(prep, dict) and all(
        _is_int(prep.get(k), 1, 2 * MAX_IMAGE_SIDE) for k in ("crop", "resize"))),
        "preprocessing needs whole-number crop and resize sizes")
    _need(_is_int(record.get("iteration", 0)), "iteration is not a whole number >= 0")
    training = optimizer is not None or record.get("kind") == "training"
    if "config" in record or training:
        from .config import TrainConfig

        _need(isinstance(record.get("config"), dict), "no training 'config' record")
        try:
            TrainConfig.from_dict(record["config"])
        except (UserError, TypeError, ValueError) as e:
            raise _Invalid(f"config: {str(e)[:200]}") from None
    if not training:
        _need(not groups["optim"] and rng is None, "optimizer or RNG state without a training "
                                                   "record")
        return
    _validate_train_state(record)
    _validate_optimizer(optimizer, groups["optim"], len(expected))
    _validate_rng(rng, groups["rng"])
    _need(set(groups["extra"]) >= set(WINDOW),
          f"the metric accumulators ({', '.join(WINDOW)}) are missing")


def _build_on_meta(model: str, kwargs: dict) -> nn.Module:
    """The network a record describes, built without memory (a hostile size costs nothing)."""
    from ..errors import UserError
    from ..models import create_model

    try:
        with torch.device("meta"):
            return create_model(model, **kwargs)
    except (UserError, TypeError, ValueError, KeyError, AssertionError, RuntimeError) as e:
        raise _Invalid(f"model {model!r:.80} with model_kwargs {kwargs!r:.200} cannot be "
                       f"built ({str(e)[:200]})") from None


def _validate_train_state(record: dict[str, Any]) -> None:
    st = record.get("train_state")
    _need(isinstance(st, dict), "a training checkpoint without 'train_state'")
    _need(isinstance(st.get("in_warmup"), bool), "train_state.in_warmup is not true/false")
    for key in ("nonfinite_in_row", "nonfinite_total"):
        _need(_is_int(st.get(key)), f"train_state.{key} is not a whole number >= 0")
    _need(st.get("best_val_error") is None or _is_number(st["best_val_error"]),
          "train_state.best_val_error is not a number")
    _need(_is_number(st.get("elapsed_s")), "train_state.elapsed_s is not a number")
    plateau = st.get("plateau", {"drops": 0, "best": None, "bad": 0})
    _need(isinstance(plateau, dict) and _is_int(plateau.get("drops"))
          and _is_int(plateau.get("bad"))
          and (plateau.get("best") is None or _is_number(plateau["best"])),
          "train_state.plateau is not a plateau-schedule record")
    metrics = record.get("metrics")
    _need(isinstance(metrics, dict) and isinstance(metrics.get("train"), dict)
          and isinstance(metrics.get("val"), dict), "no 'metrics' record (train, val)")


def _validate_optimizer(js: Any, tensors: dict[str, torch.Tensor], n_params: int) -> None:
    _need(isinstance(js, dict), "a training checkpoint without an optimizer record")
    groups, scalars = js.get("param_groups"), js.get("scalars")
    _need(isinstance(groups, list) and len(groups) >= 1 and all(
        isinstance(g, dict) and isinstance(g.get("params"), list)
        and all(_is_int(i, 0, n_params) for i in g["params"])
        and all(_is_number(g.get(k, 0)) for k in ("lr", "momentum", "weight_decay"))
        for g in groups), "optimizer.param_groups is not a list of SGD parameter groups")
    indices = {i for g in groups for i in g["params"]}
    _need(isinstance(scalars, dict) and all(
        isinstance(v, dict) and k.isdigit() and int(k) in indices for k, v in scalars.items()),
        "optimizer.scalars does not match the parameter groups")
    for name, t in tensors.items():
        _, idx, key = (name.split(".", 2) + ["", ""])[:3]
        _need(idx.isdigit() and int(idx) in indices and key != "",
              f"optimizer tensor {name!r} belongs to no parameter")
        _need(t.is_floating_point(), f"optimizer tensor {name!r} is not floating point")


def _validate_rng(js: Any, tensors: dict[str, torch.Tensor]) -> None:
    if js is None:
        _need(not tensors, "RNG tensors without their record")
        return
    _need(isinstance(js, dict), "the RNG record is not an object")
    state = tensors.get("rng.torch")
    _need(state is not None and state.dtype == torch.uint8
          and state.shape == torch.get_rng_state().shape, "rng.torch is not a torch RNG state")
    keys = tensors.get("rng.numpy")
    _need(keys is not None and keys.shape == (624,) and not keys.is_floating_point(),
          "rng.numpy is not a numpy MT19937 key")
    for name, t in tensors.items():
        _need(name in ("rng.torch", "rng.numpy") or (
            name.startswith("rng.cuda.") and name[9:].isdigit() and t.dtype == torch.uint8),
            f"unknown RNG tensor {name!r}")
    numpy_js, python_js = js.get("numpy"), js.get("python")
    _need(isinstance(numpy_js, list) and len(numpy_js) == 4 and numpy_js[0] == "MT19937"
          and _is_int(numpy_js[1], 0, 624) and numpy_js[2] in (0, 1)
          and _is_number(numpy_js[3]), "the numpy RNG record is malformed")
    _need(isinstance(python_js, list) and len(python_js) == 3 and _is_int(python_js[0])
          and isinstance(python_js[1], list) and len(python_js[1]) == 625
          and all(_is_int(v, 0, 2**32) for v in python_js[1])
          and (python_js[2] is None or _is_number(python_js[2])),
          "the python RNG record is malformed")


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


def _pickled_global(path: str | os.PathLike) -> str | None:
    """The first non-torch global a plain pickle file imports, or None (none, or not a pickle).

    Read with pickletools, which parses opcodes and runs nothing; torch's own error does not
    always get that far (it stops at opcodes its weights-only reader lacks).
    """
    import pickletools

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
    import pickle

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


def rotate_and_save(run_dir: str | os.PathLike, **kwargs) -> Path:
    """Save ``last`` and keep the one before as ``previous``, so that at every instant the
    newest complete checkpoint lies under a name `find_resume_checkpoint` reads:

    1. write the new checkpoint to this process's temporary file and fsync it;
    2. point ``previous`` at the current ``last`` (hard link, then rename over ``previous``):
       ``last`` itself is never moved away;
    3. rename the temporary file over ``last``.

    A crash before 3 leaves the new checkpoint complete in its temporary file (resume reads
    it), and ``last`` untouched; an error while writing (a full disk) leaves every earlier file
    as it was.
    """
    run_dir = Path(run_dir)
    last, previous = run_dir / LAST, run_dir / PREVIOUS
    new = run_dir / temp_name(LAST)
    data = checkpoint_bytes(last, **kwargs)
    try:
        _write_durable(new, data)
    except OSError as e:
        new.unlink(missing_ok=True)
        kept = (f"{last} still holds the previous checkpoint." if last.exists()
                else "no checkpoint was written.")
        raise _write_error(last, e, kept) from None
    # From here on `new` is complete: an error must not delete it.
    try:
        if last.exists():
            link = run_dir / temp_name(PREVIOUS)
            link.unlink(missing_ok=True)
            try:
                os.link(last, link)
            except OSError:  # a file system without hard links: copy instead
                _write_durable(link, last.read_bytes())
            os.replace(link, previous)
        os.replace(new, last)
        _fsync_dir(run_dir)
    except OSError as e:
        kept = (f"the new checkpoint is complete in {new}, which --resume auto reads."
                if new.exists() else f"{last} holds the new checkpoint.")
        raise _write_error(last, e, kept) from None
    return last


def _resume_candidates(run_dir: Path) -> list[Path]:
    """``last``, ``previous`` and every temporary ``last`` a killed writer left behind."""
    temps = sorted(p for p in run_dir.glob(f".{LAST}*")
                   if (parse_temp_name(p.name) or ("",))[0] == LAST)
    return [run_dir / LAST, run_dir / PREVIOUS, *temps]


def find_resume_checkpoint(run_dir: str | os.PathLike) -> tuple[Checkpoint, Path] | None:
    """The newest complete training checkpoint in ``run_dir``, or None where the run has none.

    Damaged ``last`` / ``previous`` files are skipped with a warning, partial temporary files
    silently; if checkpoints exist but none can be resumed, that is a `CheckpointError`
    (starting over would overwrite the run).
    """
    import warnings

    run_dir = Path(run_dir)
    best: tuple[Checkpoint, Path] | None = None
    unusable: list[str] = []
    for path in _resume_candidates(run_dir):
        if not path.is_file():
            continue
        temporary = path.name not in (LAST, PREVIOUS)
        try:
            ckpt = read_checkpoint(path)
        except CheckpointError as e:
            if not temporary:
                warnings.warn(f"skipping damaged checkpoint: {e}", stacklevel=2)
                unusable.append(f"{path.name}: damaged")
            continue
        if ckpt.optimizer_state is None:
            if not temporary:
                unusable.append(f"{path.name}: weights only, no training state")
            continue
        if best is None or ckpt.iteration > best[0].iteration:
            best = (ckpt, path)
    if best is None and unusable:
        raise CheckpointError(
            f"cannot resume the run in {run_dir}: it has checkpoints, but none can be resumed "
            f"({'; '.join(unusable)}). Nothing was changed. Resume from a copy you trust with "
            f"--resume PATH, or start the run over with --overwrite (which deletes its files).")
    return best


def promote_to_last(run_dir: str | os.PathLike, path: Path) -> Path:
    """Finish the rotation a killed writer left at ``path`` (a complete temporary ``last``):
    the old ``last`` becomes ``previous`` and ``path`` becomes ``last``."""
    run_dir = Path(run_dir)
    last, previous = run_dir / LAST, run_dir / PREVIOUS
    if path == last:
        return last
    if last.exists() and path.name != PREVIOUS:
        link = run_dir / temp_name(PREVIOUS)
        link.unlink(missing_ok=True)
        try:
            os.link(last, link)
        except OSError:
            _write_durable(link, last.read_bytes())
        os.replace(link, previous)
    if path.name == PREVIOUS:  # last is damaged: a copy of previous takes its place
        atomic_write_bytes(last, path.read_bytes())
    else:
        os.replace(path, last)
        _fsync_dir(run_dir)
    return last


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def remove_stale_temporaries(run_dir: str | os.PathLike) -> list[Path]:
    """Delete the temporary files of checkpoint writers that were killed mid-save: this
    process's own and those of processes that no longer exist (never a live writer's)."""
    stale = []
    for p in Path(run_dir).iterdir():
        parsed = parse_temp_name(p.name)
        if parsed is None or not p.is_file():
            continue
        pid = parsed[1]
        if pid is None or pid == os.getpid() or not _alive(pid):
            p.unlink(missing_ok=True)
            stale.append(p)
    return stale
