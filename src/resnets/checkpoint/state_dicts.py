"""State dicts from any weights file, and loading one into a model with every mismatch named.

Used to start training from other weights (``--init``) and by the importers of torchvision,
timm and akamaster weights: a resnets checkpoint, a plain safetensors file or a torch file
(read with ``weights_only=True``, so no code runs).
"""

from __future__ import annotations

import os
import warnings

import torch
from safetensors import SafetensorError, safe_open
from torch import nn

from ..errors import CheckpointError
from .files import load_torch_weights, named_weights, read_checkpoint
from .schema import META_KEY

HEAD = "fc"  # the classifier's module name, in resnets, torchvision and timm alike


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A name -> tensor dict from a ``.safetensors`` file (plain, or a resnets checkpoint) or a
    torch ``.pth``/``.pt``/``.bin`` file (read with ``weights_only=True``: no code runs), or the
    name of shipped weights (``resnet20.cifar10``)."""
    path = named_weights(path)
    if not path.is_file():
        raise CheckpointError(f"weights file {path} does not exist. Give a local .pth or "
                              f".safetensors file, or the name of shipped weights "
                              f"(`resnets weights` lists them).")
    if path.suffix != ".safetensors":
        return load_torch_weights(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            is_resnets = META_KEY in (f.metadata() or {})
            state = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{path} is not a readable safetensors file ({e}).") from None
    return read_checkpoint(path).model_state if is_resnets else state


def weights_record(path: str | os.PathLike) -> dict | None:
    """The record of a resnets checkpoint (a path or a shipped weight's name): its classes,
    normalization and so on; None for other weights files, which carry no such record."""
    path = named_weights(path)
    if path.suffix != ".safetensors" or not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as f:
            is_resnets = META_KEY in (f.metadata() or {})
    except (SafetensorError, OSError):
        return None  # read_state_dict names the problem when the weights are loaded
    return read_checkpoint(path).meta if is_resnets else None


def load_state_dict_for_model(model: nn.Module, state: dict[str, torch.Tensor],
                              num_classes: int | None = None) -> list[str]:
    """Load ``state`` into ``model``; returns the names of the head tensors left out.

    With ``num_classes`` the model's classifier is first resized to it (``reset_classifier``).
    If the classifier of ``state`` has another shape (weights for 1000 ImageNet classes,
    a model for 10), the ``fc`` tensors are dropped with a warning and keep their fresh
    initialisation: the usual start of fine-tuning. Any other shape mismatch, missing or
    unexpected tensor is a `CheckpointError` naming the tensors and their shapes.
    """
    head = getattr(model, HEAD, None)
    if num_classes is not None and isinstance(head, nn.Linear) \
            and head.out_features != num_classes:
        model.reset_classifier(num_classes)
    own = model.state_dict()
    # BN counters are absent from state dicts saved before PyTorch 0.4.1 (e.g. torchvision's
    # original resnet50 file); BatchNorm fills them in itself.
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        found = "; ".join(_listing(what, keys) for what, keys in
                          (("missing", missing), ("unexpected", unexpected)) if keys)
        raise CheckpointError(
            f"the weights do not fit {type(model).__name__}: {found}. The file may hold "
            f"another architecture (check --model) or a variant with other layers.")
    wrong = [(k, tuple(state[k].shape), tuple(own[k].shape)) for k in own
             if k in state and state[k].shape != own[k].shape]
    body = [w for w in wrong if not w[0].startswith(HEAD + ".")]
    if body:
        shown = "; ".join(f"{k}: weights {a} vs model {b}" for k, a, b in body[:5])
        more = f"; and {len(body) - 5} more" if len(body) > 5 else ""
        raise CheckpointError(f"tensor shapes differ between the weights and the model: "
                              f"{shown}{more}. Check --model (depth, block type, "
                              f"shortcut option) against the weights.")
    dropped: list[str] = []
    if wrong:
        dropped = sorted(k for k in own if k.startswith(HEAD + "."))
        old = state.get(f"{HEAD}.weight")
        warnings.warn(
            f"the classifier weight is {tuple(old.shape) if old is not None else '?'} in the "
            f"weights but {tuple(own[HEAD + '.weight'].shape)} in the model: dropping "
            f"{', '.join(dropped)}; they keep their fresh initialisation, to be fine-tuned.",
            stacklevel=2)
        state = {k: v for k, v in state.items() if k not in dropped}
    result = model.load_state_dict(state, strict=not dropped)
    if dropped:
        left = [k for k in result.missing_keys if k not in dropped]
        if left or result.unexpected_keys:  # cannot happen after the checks above
            raise CheckpointError(f"loading left {left + list(result.unexpected_keys)} unset.")
    return dropped


def _listing(what: str, keys: list[str]) -> str:
    more = f" and {len(keys) - 6} more" if len(keys) > 6 else ""
    return f"{len(keys)} {what} tensors ({', '.join(keys[:6])}{more})"
