"""Ensembles of checkpoints, as in the paper's Table 5 (ILSVRC 2015: six nets of different
depth, 3.57% top-5 error): the class scores of the ensemble are the mean of its members'
softmax probabilities, image by image.

Every member is run by the single-checkpoint code (`resnets.eval.checkpoint_eval`, the test
protocols), with its own recorded preprocessing: normalization, image size, protocol views. Only the
probabilities meet: for a protocol each member first averages over its views, then the
ensemble averages over members (optionally weighted), which is the mean over all of them.

The members must share their class list, and they are tested on the same images: for
``--split val`` that means the same held-out split (same data, ``val_split`` and seed in
their training configs), since nets whose held-out images differ have each trained on some
of the others' validation images.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.utils.data import TensorDataset

from ..checkpoint import load_checkpoint, read_checkpoint
from ..data import DeviceLoader, Normalization
from ..device import resolve_device
from ..errors import DataError, UserError
from ..models import model_info
from .checkpoint_eval import checkpoint_split, evaluate_folder, selection_warning
from .metrics import confusion_matrix, evaluate, per_class_accuracy, topk_correct

__all__ = ["check_same_classes", "ensemble_weights", "evaluate_ensemble", "score_probabilities"]


def ensemble_weights(weights: str | Sequence[float] | None, count: int) -> list[float]:
    """The members' weights, normalized to sum to 1: ``None`` gives equal weights; a string
    is comma-separated (``"0.5,0.5"``, ``"2,1,1"``). Each must be finite and positive, one
    per member."""
    if weights is None:
        return [1.0 / count] * count
    if isinstance(weights, str):
        try:
            values = [float(w) for w in weights.split(",")]
        except ValueError:
            raise UserError(f"--weights {weights!r} is not a comma-separated list of numbers; "
                            f"give one positive number per checkpoint, e.g. --weights "
                            f"{','.join(['1'] * count)}.") from None
    else:
        values = [float(w) for w in weights]
    if len(values) != count:
        raise UserError(f"--weights has {len(values)} value(s) but there are {count} "
                        f"checkpoints: give one weight per --checkpoint, in the same order.")
    bad = [w for w in values if not (math.isfinite(w) and w > 0)]
    if bad:
        raise UserError(f"--weights must be finite and positive, got {bad[0]} in "
                        f"{', '.join(str(w) for w in values)}.")
    total = sum(values)
    return [w / total for w in values]


def _show_classes(classes: Sequence[str]) -> str:
    shown = ", ".join(classes[:20])
    more = f", ... ({len(classes)} in all)" if len(classes) > 20 else ""
    return f"[{shown}{more}]"


def check_same_classes(metas: Sequence[dict], names: Sequence[str]) -> list[str]:
    """The class list every member shares; a `UserError` naming both lists when one
    differs (an average of scores is only meaningful class by class)."""
    first = list(metas[0]["classes"])
    for meta, name in zip(metas[1:], names[1:], strict=True):
        other = list(meta["classes"])
        if other != first:
            where = next((i for i, (a, b) in enumerate(zip(first, other, strict=False))
                          if a != b), min(len(first), len(other)))
            raise UserError(
                f"the ensemble's members predict different classes: {names[0]} has "
                f"{len(first)} {_show_classes(first)}, {name} has {len(other)} "
                f"{_show_classes(other)} (first difference at position {where}). Ensemble "
                f"only checkpoints trained on the same classes, in the same order.")
    return first


def _split_key(meta: dict, by_fingerprint: bool) -> tuple | None:
    """What decides a run's held-out split: (data, val_split, seed), the data known by its
    fingerprint (``by_fingerprint``, when every member records one) or else by its recorded
    path; None without a training config (imported weights)."""
    cfg = meta.get("config")
    if not cfg:
        return None
    data = meta["data_fingerprint"]["sha256"][:12] if by_fingerprint else cfg.get("data")
    return (data, cfg.get("val_split"), cfg.get("seed"))


def _shared_split(metas: Sequence[dict], names: Sequence[str], split: str
                  ) -> tuple[dict, str | None, bool]:
    """``(meta, note, shared)``: the record whose split `checkpoint_split` re-creates for
    every member, a note for the output when it is not any member's own, and whether it is
    every member's own split (the data must then be every member's data)."""
    by_fingerprint = all(m.get("data_fingerprint") for m in metas)
    keys = [_split_key(m, by_fingerprint) for m in metas]
    if split == "test" or len(set(keys)) == 1:
        return metas[0], None, True
    if split == "val":
        untrained = [n for n, k in zip(names, keys, strict=True) if k is None]
        if untrained:
            raise DataError(f"{untrained[0]} has no training config (imported weights), so it "
                            f"has no held-out val split to share with the other members: use "
                            f"--split test, or --split train (every training image of --data).")
        splits = "; ".join(f"{n}: data {k[0]}, val_split {k[1]}, seed {k[2]}"
                           for n, k in zip(names, keys, strict=True))
        raise UserError(f"the members were trained with different held-out splits ({splits}). "
                        f"On one member's val split the others would be tested on images they "
                        f"trained on. Use --split test (the test split of --data), or --split "
                        f"train (every training image), or ensemble runs with the same data, "
                        f"--val-split and --seed.")
    # --split train over differing splits: every training image of the data, one set for all.
    meta = {**metas[0], "config": {"val_split": 0, "seed": 0}}
    return meta, "members' held-out splits differ: train is every training image of the data", \
        False


class _Softmax(nn.Module):
    """Passes a model's logits through and keeps their softmax, batch by batch, so that the
    plain evaluation loop yields both its usual numbers and the probabilities to average."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.probs: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.model(x)
        self.probs.append(logits.float().softmax(dim=1))
        return logits


def _member_cifar(model: nn.Module, meta: dict, images: torch.Tensor, labels: torch.Tensor,
                  *, protocol: str | None, batch_size: int, device: torch.device) -> dict:
    """What `evaluate_checkpoint` reports for this member on these images, plus ``probs``."""
    normalization = Normalization.from_dict(meta["normalization"])
    if protocol is not None:
        from .protocols import evaluate_protocol  # torchvision: on use, as in checkpoint_eval

        return evaluate_protocol(model, TensorDataset(images, labels), protocol,
                                 normalization=normalization, family="cifar",
                                 batch_size=batch_size, device=device, return_probs=True)
    recorder = _Softmax(model)
    loader = DeviceLoader(images, labels, batch_size=batch_size, device=device,
                          normalization=normalization, train=False)
    res = evaluate(recorder, loader.epoch_batches(0), len(meta["classes"]))
    return {**res, "probs": torch.cat(recorder.probs).cpu(), "labels": labels.cpu()}


def score_probabilities(probs: torch.Tensor, labels: torch.Tensor, *,
                        confusion: bool = False) -> dict:
    """Top-1 / top-5 error (fractions), loss (mean negative log probability of the true class)
    of class probabilities ``probs`` (N, classes) against ``labels`` (N,); with ``confusion``
    also per-class accuracy and the confusion matrix."""
    n = labels.numel()
    true_prob = probs.gather(1, labels[:, None]).squeeze(1)
    res = {"n": n, "loss": float(-true_prob.clamp_min(1e-12).log().mean()),
           "top1_error": 1.0 - topk_correct(probs, labels, 1).item() / n,
           "top5_error": 1.0 - topk_correct(probs, labels, 5).item() / n}
    if confusion:
        matrix = confusion_matrix(probs.argmax(1), labels, probs.shape[1])
        res["per_class_accuracy"] = per_class_accuracy(matrix).tolist()
        res["confusion"] = matrix.tolist()
    return res


def evaluate_ensemble(checkpoints: Sequence[str], *, weights: str | Sequence[float] | None = None,
                      data: str | None = None, split: str = "val", batch_size: int = 500,
                      device: str = "auto", cache_dir: str | None = None,
                      protocol: str | None = None, workers: int = 4) -> dict:
    """Evaluate the ensemble of ``checkpoints`` (paths or shipped weight names) and each of
    its members on the same images.

    Arguments as `resnets.eval.checkpoint_eval.evaluate_checkpoint`; ``weights`` as
    `ensemble_weights`.

    Returns:
        ``{"split", "data_source", "classes", "n", "note", "members": [...], "ensemble":
        {...}}``: each member's dict is what `evaluate_checkpoint` gives for it (plus its
        ``weight``); the ensemble's holds the same error fields, computed from the weighted
        mean of the members' probabilities. Errors are fractions in [0, 1].
    """
    if not checkpoints:
        raise UserError("an ensemble needs at least one --checkpoint.")
    names = [str(c) for c in checkpoints]
    w = ensemble_weights(weights, len(names))
    metas = [read_checkpoint(c).meta for c in names]
    classes = check_same_classes(metas, names)
    families = {model_info(m["model"]).family for m in metas}
    if len(families) > 1:
        raise UserError(f"the members mix model families ({', '.join(sorted(families))}): "
                        f"CIFAR-style and ImageNet-style nets read different data; ensemble "
                        f"nets of one family.")
    family = families.pop()
    dev = resolve_device(device)

    note = None
    if family == "cifar":
        split_meta, note, shared = _shared_split(metas, names, split)
        members = list(zip(names, metas, strict=True)) if shared else []
        images, labels, source = checkpoint_split(split_meta, data=data, split=split,
                                                  cache_dir=cache_dir, name=names[0],
                                                  members=members)
    else:
        source = None  # the folder's name, as the first member reports it

    total: torch.Tensor | None = None
    truth: torch.Tensor | None = None
    members = []
    for name, weight in zip(names, w, strict=True):
        model, meta = load_checkpoint(name, device=dev)
        if family == "cifar":
            res = _member_cifar(model, meta, images, labels, protocol=protocol,
                                batch_size=batch_size, device=dev)
        else:
            res = evaluate_folder(model, meta, name, data=data, split=split,
                                   batch_size=batch_size, device=dev,
                                   protocol=protocol or "center", workers=workers,
                                   return_probs=True)
        del model
        probs, member_labels = res.pop("probs"), res.pop("labels")
        if truth is None:
            truth, total = member_labels, weight * probs
        else:
            if not torch.equal(member_labels, truth):  # both read the same, ordered folder
                raise DataError(f"{name} was tested on other images than {names[0]}.")
            total += weight * probs
        source = res.pop("data_source", source)
        warning = selection_warning(meta, name, split)
        members.append({"model": meta["model"], "checkpoint": name, "weight": weight,
                        **{k: v for k, v in res.items()
                           if k not in ("model", "checkpoint", "split", "classes")},
                        **({"warning": warning} if warning else {})})

    # The weights sum to 1, so `total` is the weighted mean of the probabilities.
    ensemble = score_probabilities(total, truth,
                                   confusion=family == "cifar" and protocol is None)
    view = {k: members[0][k] for k in ("protocol", "family", "views_per_image")
            if k in members[0]}
    if len({tuple(m.get("scales", ())) for m in members}) == 1 and "scales" in members[0]:
        # multi_scale's sides follow each member's training size: shown when they agree
        view.update(scales=members[0]["scales"], views_per_scale=members[0]["views_per_scale"])
    return {"split": split, "data_source": source, "classes": classes, "n": ensemble["n"],
            "note": note, "members": members,
            "ensemble": {"models": [m["model"] for m in members], "weights": w, **view,
                         **ensemble}}
