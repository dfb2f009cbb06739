"""A fingerprint of the images a run was given: what makes `--split val` trustworthy.

A run's held-out split is re-created by index (`split_indices`): the same positions of the
same source. On other images, or the same images in another order, those positions name other
images, many of them trained on, and the "validation" error comes out too good. The fingerprint
says which images a run had, in which order: their number, the class list, a sha256 of the
labels and decoded pixels in source order, and a description of the source (kind, file or
folder name, size). Two sources with the same digest give the same splits, whatever their
paths or packing (a folder and a tar of it); the description only serves the messages.

The digest is computed once per decoding and saved in the decoded-data cache beside the
tensors (`resnets.data.cache`), so later runs and evaluations read it for free.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from .imageset import ImageSet

__all__ = ["FINGERPRINT_FIELDS", "data_fingerprint", "describe_data", "image_digest",
           "same_images"]

# What every fingerprint record holds (checked by the checkpoint schema).
FINGERPRINT_FIELDS = ("images", "classes", "image_size", "sha256", "source")


def image_digest(image_set: ImageSet) -> str:
    """sha256 of the class list, the labels and the pixels, in the set's order; cached on the
    set (and by `resnets.data.cache` in its file), since 50k CIFAR images take ~0.3 s."""
    if image_set.digest is None:
        h = hashlib.sha256()
        h.update(json.dumps({"classes": image_set.classes,
                             "shape": list(image_set.images.shape)}).encode())
        h.update(image_set.labels.contiguous().numpy().tobytes())
        h.update(image_set.images.contiguous().numpy().data)  # no copy of the pixels
        image_set.digest = h.hexdigest()
    return image_set.digest


def data_fingerprint(image_set: ImageSet) -> dict[str, Any]:
    """The JSON record of what ``image_set`` is (see the module docstring)."""
    return {"images": len(image_set), "classes": list(image_set.classes),
            "image_size": list(image_set.images.shape[1:]), "sha256": image_digest(image_set),
            "source": dict(image_set.origin or {"kind": "unknown"})}


def same_images(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether two fingerprints name the same images in the same order."""
    return a.get("sha256") == b.get("sha256")


def describe_data(fp: dict[str, Any]) -> str:
    """One line for messages: "image-folder archive x.tar.xz (12.3 MB): 50,000 images of 10
    classes (airplane, automobile, ...), sha256 0123456789ab"."""
    src = fp.get("source") or {}
    size = []
    if src.get("files") is not None:
        size.append(f"{src['files']:,} files")
    if src.get("bytes") is not None:
        size.append(f"{src['bytes'] / 1e6:,.1f} MB")
    where = f"{src.get('kind', 'data')} {src.get('name') or ''}".strip()
    classes = list(fp.get("classes") or [])
    shown = ", ".join(classes[:3]) + (", ..." if len(classes) > 3 else "")
    return (f"{where}{' (' + ', '.join(size) + ')' if size else ''}: {fp.get('images', 0):,} "
            f"images of {len(classes)} classes ({shown}), sha256 {str(fp.get('sha256'))[:12]}")
