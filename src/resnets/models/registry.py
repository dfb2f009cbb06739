"""Name -> builder registry. Builders are keyword-only; names are unique (duplicates refused)."""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from ..errors import UserError
from .pretrained import get_weights, load_pretrained


@dataclass(frozen=True)
class ModelInfo:
    name: str
    family: str  # "cifar" (32x32 input, 3 stages) or "imagenet" (224x224 input, 4 stages)
    depth: int  # weighted layers, as the paper counts them
    input_size: tuple[int, int, int]  # default (C, H, W)
    builder: Callable[..., nn.Module]
    description: str


_REGISTRY: dict[str, ModelInfo] = {}


def register_model(*, family: str, depth: int, description: str | None = None):
    """Decorator that registers a keyword-only builder under its function name.

    The description `resnets models` shows is ``description``, else the builder's docstring.
    """
    size = {"cifar": (3, 32, 32), "imagenet": (3, 224, 224)}[family]

    def wrap(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        name = fn.__name__
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is already registered")
        text = description if description is not None else inspect.cleandoc(fn.__doc__ or "")
        if not text:
            raise ValueError(f"model {name!r} needs a description (or a docstring)")
        _REGISTRY[name] = ModelInfo(name, family, depth, size, fn, text)
        return fn

    return wrap


class UnknownModelError(UserError, KeyError):
    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


def model_info(name: str) -> ModelInfo:
    """The registry entry of ``name``; unknown names raise with the closest suggestions."""
    try:
        return _REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(name, _REGISTRY, n=3, cutoff=0.6)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise UnknownModelError(
            f"unknown model {name!r}.{hint} Run `resnets models` to list all "
            f"{len(_REGISTRY)} registered names."
        ) from None


def list_models(family: str | None = None) -> list[str]:
    """Registered model names, optionally only one family (``"cifar"`` or ``"imagenet"``)."""
    return sorted(
        (n for n, info in _REGISTRY.items() if family is None or info.family == family),
        key=lambda n: (_REGISTRY[n].family, n.rstrip("0123456789"), _REGISTRY[n].depth),
    )


def create_model(name: str, *, weights: str | None = None, **overrides) -> nn.Module:
    """Build a registered model; keyword ``overrides`` reach the `ResNet` constructor.

    ``weights`` loads shipped pretrained weights (``"cifar10"`` or ``"resnet20.cifar10"``;
    `list_weights()` names them), after checking their sha256; the net is built with the
    options they were trained with, so ``overrides`` that change its layout are refused."""
    if weights is None:
        return model_info(name).builder(**overrides)
    model_info(name)  # an unknown model name is reported as such, not as unknown weights
    w = get_weights(weights, model=name)
    trained = w.meta["model_kwargs"]
    clash = {k: v for k, v in overrides.items() if k in trained and trained[k] != v}
    if clash or set(overrides) - set(trained):
        raise UserError(f"weights {w.name!r} fix the net's options ({trained}); "
                        f"{overrides} cannot be applied to them. Build without weights, or "
                        f"load the weights and then change the net (e.g. reset_classifier).")
    return load_pretrained(model_info(name).builder(**trained), w)
