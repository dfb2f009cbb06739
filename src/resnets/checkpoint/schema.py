"""What a checkpoint holds: one description, checked whenever a checkpoint is read.

Whatever a file says, reading it either gives a record the rest of the package can use, or an
`InvalidRecord` that `read_checkpoint` reports as "not a valid resnets checkpoint: ...". The
record's layout is described in `resnets.checkpoint`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..config import TrainConfig
from ..data.device_loader import Normalization
from ..data.fingerprint import FINGERPRINT_FIELDS
from ..errors import CheckpointError, UserError
from ..models import create_model

FORMAT = "resnets-checkpoint"
FORMAT_VERSION = 1
META_KEY = "resnets"

MAX_CLASSES = 100_000  # ImageNet-21k has 21,841; more is a damaged or hostile record
MAX_IMAGE_SIDE = 4096  # pixels; the networks here are trained at 32 and 224
WINDOW_KEYS = ("loss", "wrong", "seen", "steps")  # a training checkpoint's extra.* tensors


class InvalidRecord(Exception):
    """What is wrong with a record (`invalid` turns it into the user's error)."""


def invalid(path: Path, what: str) -> CheckpointError:
    return CheckpointError(f"{path} is not a valid resnets checkpoint: {what}. Use another "
                           f"checkpoint (e.g. previous.safetensors of the run).")


def _need(ok: bool, what: str) -> None:
    if not ok:
        raise InvalidRecord(what)


def _is_int(v: Any, lo: int = 0, hi: int | None = None) -> bool:
    return (isinstance(v, int) and not isinstance(v, bool) and v >= lo
            and (hi is None or v <= hi))


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def validate_record(record: dict[str, Any], groups: dict[str, dict[str, torch.Tensor]],
                    optimizer: Any = None, rng: Any = None) -> None:
    """Raise `InvalidRecord` (what is wrong) unless ``record`` and its tensors form a checkpoint."""

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
        raise InvalidRecord(f"its weights do not fit {model} with {kwargs} ({len(diff)} tensor(s) "
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
    if "selected_on" in record:  # `resnets eval` warns when asked to score on that split
        chosen = record["selected_on"]
        _need(isinstance(chosen, dict) and isinstance(chosen.get("what"), str)
              and chosen.get("eval_split") in (None, "train", "val", "test"),
              f"selected_on must name the images that chose the weights, got {chosen!r:.120}")
    if "normalization" in record:
        try:
            norm = Normalization.from_dict(record["normalization"])
            mean = torch.tensor(norm.mean, dtype=torch.float32)
            std = torch.tensor(norm.std if norm.std is not None else [], dtype=torch.float32)
        except (UserError, TypeError, ValueError, RuntimeError) as e:
            raise InvalidRecord(f"normalization: {str(e)[:200]}") from None
        _need(bool(torch.isfinite(mean).all() and torch.isfinite(std).all()),
              "normalization holds NaN or inf")
        _need(norm.kind != "per_pixel_mean" or size is None or list(mean.shape) == size,
              f"the per-pixel mean is {list(mean.shape)}, the image_size {size}")
    prep = record.get("preprocessing")
    _need(prep is None or (isinstance(prep, dict) and all(
        _is_int(prep.get(k), 1, 2 * MAX_IMAGE_SIDE) for k in ("crop", "resize"))),
        "preprocessing needs whole-number crop and resize sizes")
    _need(_is_int(record.get("iteration", 0)), "iteration is not a whole number >= 0")
    if "data_fingerprint" in record:  # absent from checkpoints written before it existed
        _validate_fingerprint(record["data_fingerprint"])
    training = optimizer is not None or record.get("kind") == "training"
    if "config" in record or training:
        _need(isinstance(record.get("config"), dict), "no training 'config' record")
        try:
            TrainConfig.from_dict(record["config"])
        except (UserError, TypeError, ValueError) as e:
            raise InvalidRecord(f"config: {str(e)[:200]}") from None
    if not training:
        _need(not groups["optim"] and rng is None, "optimizer or RNG state without a training "
                                                   "record")
        return
    _validate_train_state(record)
    _validate_optimizer(optimizer, groups["optim"], len(expected))
    _validate_rng(rng, groups["rng"])
    _need(set(groups["extra"]) >= set(WINDOW_KEYS),
          f"the metric accumulators ({', '.join(WINDOW_KEYS)}) are missing")


def _validate_fingerprint(fp: Any) -> None:
    """The record `resnets.data.data_fingerprint` writes: what the run's images were."""
    _need(isinstance(fp, dict) and set(FINGERPRINT_FIELDS) <= set(fp),
          f"data_fingerprint must be an object with {', '.join(FINGERPRINT_FIELDS)}")
    sha = fp["sha256"]
    _need(isinstance(sha, str) and len(sha) == 64
          and all(c in "0123456789abcdef" for c in sha),
          "data_fingerprint.sha256 is not a sha256 in hex")
    _need(_is_int(fp["images"]), "data_fingerprint.images is not a whole number >= 0")
    _need(isinstance(fp["classes"], list) and all(isinstance(c, str) for c in fp["classes"]),
          "data_fingerprint.classes is not a list of names")
    _need(isinstance(fp["source"], dict), "data_fingerprint.source is not an object")


def _build_on_meta(model: str, kwargs: dict) -> nn.Module:
    """The network a record describes, built without memory (a hostile size costs nothing)."""
    try:
        with torch.device("meta"):
            return create_model(model, **kwargs)
    except (UserError, TypeError, ValueError, KeyError, AssertionError, RuntimeError) as e:
        raise InvalidRecord(f"model {model!r:.80} with model_kwargs {kwargs!r:.200} cannot be "
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


