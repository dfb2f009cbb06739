"""Evaluate a saved checkpoint on a split of a dataset source."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

from torch.utils.data import TensorDataset

from ..checkpoint import BEST, load_checkpoint
from ..data import (
    DeviceLoader,
    ImageSet,
    Normalization,
    data_fingerprint,
    describe_data,
    load_image_set,
    same_images,
)
from ..device import resolve_device
from ..errors import DataError
from ..models import model_info
from .metrics import evaluate
from .run_split import run_split


def checkpoint_split(meta: dict, *, data: str | None, split: str,
                     cache_dir: str | None = None, name: str = "the checkpoint",
                     members: Sequence[tuple[str, dict]] | None = None) -> tuple:
    """``(images, labels, source)`` of ``split`` of ``data``.

    ``val`` and ``train`` re-create the images the checkpoint's run validated and trained on
    (`run_split`: same held-out size, seed and training subset; unreadable files skipped
    again where the run skipped them). They are positions in the data, so the data must be
    the run's: its fingerprint (``data_fingerprint``) must match the one of the records in
    ``members`` (``(name, meta)`` pairs; default: ``(name, meta)``), else a `DataError`
    explains why and what to give instead. A record without one (written before resnets
    recorded them) is evaluated with a warning that the split cannot be verified.
    A trained checkpoint without ``data`` reads nothing the run did not: the torchvision
    copy in the cache if the run used it (never a download), else a `DataError` naming the
    run's data.
    A checkpoint without a training config (imported weights, kind ``"weights"``) was never
    trained here: ``data`` must be given, ``train`` is every training image of it and
    ``test`` its test split; it has no ``val`` split. The data's classes must be the
    checkpoint's.
    """
    cfg = meta.get("config")
    download = True
    if cfg is None:
        source = _untrained_source(meta, data, split)
        cfg = {}
    else:
        # Paths come from the user (--data, --cache-dir, $RESNETS_CACHE), never from the file
        # being read: a checkpoint's config.data / cache_dir are a record, not a place to go.
        source = data
        if data is None:
            _no_data(name, meta, split)
            download = False  # the run used torchvision's copy: it is in the cache, or not
    image_set = load_image_set(source, split="test" if split == "test" else "train",
                               cache_dir=cache_dir, download=download,
                               skip_bad_images=bool(cfg.get("skip_bad_images", False)))
    if list(image_set.classes) != list(meta["classes"]):
        raise DataError(
            f"the classes of {image_set.source} ({', '.join(image_set.classes)}) do not match "
            f"the checkpoint's ({', '.join(meta['classes'])}). Evaluate on data with the same "
            f"class folders, or fine-tune the checkpoint on this data first.")
    images, labels = image_set.images, image_set.labels
    if split != "test" and cfg:
        for member, record in [(name, meta)] if members is None else members:
            verify_run_data(member, record, image_set, data=data, split=split)
        train_idx, val_idx = run_split(len(labels), val_split=cfg["val_split"], seed=cfg["seed"],
                                       train_subset=cfg.get("train_subset"),
                                       source=image_set.source)
        idx = val_idx if split == "val" else train_idx
        if len(idx) == 0:
            raise DataError("the checkpoint's run used --val-split 0, so there is no val split;"
                            " use --split test or --split train.")
        images, labels = images[idx], labels[idx]
    return images, labels, image_set.source


def recorded_data(meta: dict) -> str:
    """The run's data in words, for messages: its fingerprint's description, or what a
    checkpoint from before fingerprints recorded (``data_source``)."""
    fp = meta.get("data_fingerprint")
    if fp:
        return describe_data(fp)
    return str(meta.get("data_source") or (meta.get("config") or {}).get("data")
               or "data it does not name")


def _run_data_path(cfg: dict) -> str:
    """The run's --data as recorded, and whether it exists here (it may be relative to the
    directory the run was started in)."""
    path = cfg.get("data")
    where = "it exists on this machine" if Path(str(path)).exists() else \
        "not found here: give its path on this machine"
    return f"--data {path} ({where})"


def _no_data(name: str, meta: dict, split: str) -> None:
    """Refuse to guess the data of a trained checkpoint given no --data (a DataError), unless
    its run read CIFAR-10 through torchvision (``config.data`` None)."""
    cfg = meta["config"]
    if cfg.get("data") is None:
        return
    test = ("; or --split test with --data of a source that has a test split"
            if split != "test" else " that has a test split")
    raise DataError(
        f"{name} was trained on {recorded_data(meta)}, recorded as {_run_data_path(cfg)}. "
        f"Without --data "
        f"nothing is read or downloaded: another copy of CIFAR-10 holds other images in "
        f"another order, and --split {split} would pick the wrong ones. Give --data with the "
        f"path of the run's data on this machine{test}.")


def verify_run_data(name: str, meta: dict, image_set: ImageSet, *, data: str | None,
                    split: str) -> None:
    """Refuse (`DataError`) to re-create ``split`` of ``name``'s run from ``image_set`` unless
    it holds the images the run had, in the same order; warn where the record predates
    fingerprints. ``data`` is what the user gave (None: the torchvision copy)."""
    cfg = meta.get("config") or {}
    recorded = meta.get("data_fingerprint")
    given = data_fingerprint(image_set)
    shown = f"--data {data}" if data is not None else "the torchvision CIFAR-10 copy"
    if recorded is None:
        warnings.warn(
            f"{name} was written before resnets recorded a fingerprint of the training data, "
            f"so it cannot be verified that {shown} holds the images its run trained on, in "
            f"the same order; --split {split} is the run's {split} split only if it does (the "
            f"run recorded: {recorded_data(meta)}).", stacklevel=3)
        return
    if same_images(recorded, given):
        return
    raise DataError(
        f"refusing --split {split}: {name} was trained on {recorded_data(meta)}, but {shown} "
        f"holds {describe_data(given)}. The {split} split is re-created by position "
        f"({cfg.get('val_split')} images held out by seed {cfg.get('seed')}), so on other "
        f"images, or the same ones in another order, it would hold other images, many of them "
        f"trained on, and the error would look better than it is. Give the run's own data, "
        f"{_run_data_path(cfg)}, or measure on a test split with --split test.")


def _untrained_source(meta: dict, data: str | None, split: str) -> str:
    """``data`` for a checkpoint that records no training run, or a `DataError` with the fix."""
    what = (f"this {meta.get('kind', 'weights')} checkpoint of {meta.get('model', 'a model')} "
            f"has no training config (e.g. written by `resnets import`)")
    if data is None:
        raise DataError(f"{what}, so it names no dataset: give --data SOURCE, a dataset with "
                        f"its {len(meta.get('classes', []))} classes "
                        f"({', '.join(meta.get('classes', [])[:4])}, ...).")
    if split == "val":
        raise DataError(f"{what}, so there is no held-out val split to re-create: use "
                        f"--split test (the test split of --data) or --split train (every "
                        f"training image of --data).")
    return data


def selection_warning(meta: dict, checkpoint, split: str) -> str | None:
    """Why the error of ``checkpoint`` on ``split`` is no number to report, or None: the split
    holds the images that chose it (a ``best`` checkpoint, whose record names them in
    ``selected_on``; a ``best.safetensors`` from before that record, on ``--split val``)."""
    chosen = meta.get("selected_on")
    if chosen is not None:
        if chosen.get("eval_split") != split:
            return None
        what = chosen["what"]
    elif Path(str(checkpoint)).name == BEST and meta.get("config") and split == "val":
        what = ("its run's validation images (it records no `selected_on`: written before runs "
                "named the images that chose their best weights)")
    else:
        return None
    return (f"{checkpoint} holds the weights of the lowest validation error on {what}, the "
            f"images of --split {split}: its error there was chosen to be low and is no number "
            f"to report. Report the run's final weights (last.safetensors, or an experiment's "
            f"final.safetensors) on this split, or this checkpoint on another split.")


def evaluate_checkpoint(checkpoint: str, *, data: str | None = None, split: str = "val",
                        batch_size: int = 500, device: str = "auto",
                        cache_dir: str | None = None, protocol: str | None = None,
                        workers: int = 4) -> dict:
    """Errors as fractions in [0, 1], with ``n`` (and for plain evaluation per-class accuracy
    and the confusion matrix), and ``warning`` where ``split`` chose the checkpoint
    (`selection_warning`).

    CIFAR-family checkpoints read any CIFAR source; ImageNet-family ones a folder
    ``ROOT/<split>/<class>/...`` (``val`` by default). ``protocol`` (center, ten_crop,
    multi_scale) follows `resnets.eval.protocols`; for CIFAR, ``None`` is the plain single
    view of training-time validation.
    """
    dev = resolve_device(device)
    model, meta = load_checkpoint(checkpoint, device=dev)
    family = model_info(meta["model"]).family
    normalization = Normalization.from_dict(meta["normalization"])
    warning = selection_warning(meta, checkpoint, split)
    flagged = {"warning": warning} if warning else {}
    if family == "imagenet":
        return {**evaluate_folder(model, meta, checkpoint, data=data, split=split,
                                  batch_size=batch_size, device=dev,
                                  protocol=protocol or "center", workers=workers), **flagged}
    images, labels, source = checkpoint_split(meta, data=data, split=split, cache_dir=cache_dir,
                                              name=str(checkpoint))
    head = {"model": meta["model"], "checkpoint": str(checkpoint), "split": split,
            "data_source": source, "classes": meta["classes"], **flagged}
    if protocol is not None:
        # The protocols (and the folder pipeline below) import torchvision, about a second:
        # the plain CIFAR evaluation, the common case, does without it.
        from .protocols import evaluate_protocol

        res = evaluate_protocol(model, TensorDataset(images, labels), protocol,
                                normalization=normalization, family="cifar",
                                batch_size=batch_size, device=dev)
        return {**head, **res}
    loader = DeviceLoader(images, labels, batch_size=batch_size, device=dev,
                          normalization=normalization, train=False)
    res = evaluate(model, loader.epoch_batches(0), len(meta["classes"]))
    return {**head, **res}


def evaluate_folder(model, meta, checkpoint, *, data, split, batch_size, device, protocol,
                     workers, return_probs: bool = False) -> dict:
    # torchvision, imported on use as above
    from ..data.folder import FolderDataset
    from .protocols import evaluate_protocol, protocol_for_size

    root = data  # paths come from the user, never from the checkpoint being read
    if root is None:
        raise DataError("an ImageNet-family checkpoint needs --data ROOT, a folder holding "
                        f"{split}/<class>/<images>.")
    dataset = FolderDataset(root, split)
    if list(dataset.classes) != list(meta["classes"]):
        raise DataError(f"the class folders of {root}/{split} do not match the checkpoint's "
                        f"{len(meta['classes'])} classes. Evaluate on data with the same "
                        f"class folders.")
    prep = meta.get("preprocessing") or {"crop": 224, "resize": 256}
    if prep["crop"] != 224:  # trained at another size: the protocol follows it
        protocol = protocol_for_size(protocol, prep["crop"], prep["resize"])
    res = evaluate_protocol(model, dataset, protocol,
                            normalization=Normalization.from_dict(meta["normalization"]),
                            family="imagenet", batch_size=min(batch_size, 128), device=device,
                            workers=workers, return_probs=return_probs)
    return {"model": meta["model"], "checkpoint": str(checkpoint), "split": split,
            "data_source": f"image folder {root}/{split}", "classes": meta["classes"], **res}
