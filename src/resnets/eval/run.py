"""Evaluate a saved checkpoint on a split of a dataset source."""

from __future__ import annotations

from ..data import DeviceLoader, Normalization, load_image_set, split_indices
from ..errors import DataError
from ..train.checkpoint import load_checkpoint
from ..train.loop import resolve_device
from .evaluate import evaluate


def checkpoint_split(meta: dict, *, data: str | None, split: str,
                     cache_dir: str | None = None) -> tuple:
    """``(images, labels, source)`` of ``split`` of ``data`` (default: the checkpoint's own data).

    ``val`` and ``train`` re-create the checkpoint run's held-out split (same size and seed).
    The data's classes must be the checkpoint's.
    """
    cfg = meta["config"]
    source = data if data is not None else cfg.get("data")
    image_set = load_image_set(source, split="test" if split == "test" else "train",
                               cache_dir=cache_dir or cfg.get("cache_dir"))
    if list(image_set.classes) != list(meta["classes"]):
        raise DataError(
            f"the classes of {image_set.source} ({', '.join(image_set.classes)}) do not match "
            f"the checkpoint's ({', '.join(meta['classes'])}). Evaluate on data with the same "
            f"class folders, or fine-tune the checkpoint on this data first.")
    images, labels = image_set.images, image_set.labels
    if split != "test":
        train_idx, val_idx = split_indices(len(labels), cfg["val_split"], cfg["seed"])
        idx = val_idx if split == "val" else train_idx
        if len(idx) == 0:
            raise DataError("the checkpoint's run used --val-split 0, so there is no val split;"
                            " use --split test or --split train.")
        images, labels = images[idx], labels[idx]
    return images, labels, image_set.source


def evaluate_checkpoint(checkpoint: str, *, data: str | None = None, split: str = "val",
                        batch_size: int = 500, device: str = "auto",
                        cache_dir: str | None = None) -> dict:
    """Errors as fractions in [0, 1], with ``n``, per-class accuracy and the confusion matrix."""
    dev = resolve_device(device)
    model, meta = load_checkpoint(checkpoint, device=dev)
    images, labels, source = checkpoint_split(meta, data=data, split=split, cache_dir=cache_dir)
    loader = DeviceLoader(images, labels, batch_size=batch_size, device=dev,
                          normalization=Normalization.from_dict(meta["normalization"]),
                          train=False)
    res = evaluate(model, loader.epoch_batches(0), len(meta["classes"]))
    return {"model": meta["model"], "checkpoint": str(checkpoint), "split": split,
            "data_source": source, "classes": meta["classes"], **res}
