"""Class predictions for image files with a checkpoint: the logic of `resnets predict`.

An image goes through the same steps as the checkpoint's training or eval data:

1. read the file through the data layer (`resnets.data.files.read_file`: regular files only,
   so a FIFO is reported instead of waited on), decode it with Pillow (any format it reads,
   except EPS, which runs Ghostscript) and convert to 8-bit RGB with the data pipeline's own
   converter (16-bit grey scaled, transparency composited onto black);
2. resize: CIFAR checkpoints (no ``preprocessing`` record) resize the whole image to
   ``image_size``, bilinear, as the training data was decoded; imported ImageNet weights
   resize the shorter side to ``preprocessing["resize"]`` and center-crop ``image_size``,
   as torchvision's and timm's eval transforms do;
3. normalize the uint8 batch with the checkpoint's `Normalization`.

Files are decoded one by one and run through the network in batches; a file that cannot be
read becomes a `Failure` carrying its path and the reason, and the rest goes on.

`EnsemblePredictor` does the same with several checkpoints (the paper's Table 5): each file is
decoded once, each member resizes and normalizes it as its own checkpoint records, and the
members' softmax probabilities are averaged (optionally weighted).
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..checkpoint import load_checkpoint
from ..data.decode import to_rgb8
from ..data.device_loader import Normalization
from ..data.files import UnreadableFile, list_files, read_file
from ..errors import CheckpointError, UserError, printable
from ..eval.ensemble import check_same_classes, ensemble_weights

__all__ = ["EnsemblePredictor", "Failure", "Prediction", "Predictor", "Preprocessing",
           "find_images", "image_extensions"]

# Pillow plugins that hand the file to an external program are never used on user files.
_EXTERNAL_DECODERS = frozenset({"EPS"})


def _read_formats() -> tuple[str, ...]:
    Image.init()  # registers every plugin, so OPEN lists all readable formats
    return tuple(sorted(f for f in Image.OPEN if f not in _EXTERNAL_DECODERS))


def image_extensions() -> frozenset[str]:
    """File extensions (lower case, with the dot) of the formats Pillow can read here; a
    folder search takes only these files (files named on the command line are all tried)."""
    formats = set(_read_formats())
    return frozenset(ext for ext, fmt in Image.registered_extensions().items()
                     if fmt in formats)


@dataclass
class Prediction:
    path: str  # as the file system names it (may hold undecodable bytes: see `printable`)
    topk: list[tuple[str, float]]  # (class name, probability), most probable first
    # Ensembles only: each member's top class and its probability, in member order.
    members: list[tuple[str, float]] | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready record; names that are not UTF-8 show their bytes as ``\\xNN``."""
        out: dict[str, Any] = {"path": printable(self.path),
                               "topk": [{"class": printable(c), "prob": p} for c, p in self.topk]}
        if self.members is not None:
            out["members"] = [{"class": printable(c), "prob": p} for c, p in self.members]
        return out

    def line(self) -> str:
        """``PATH: class prob, ...`` (and the members' top classes), printable as UTF-8."""
        text = f"{printable(self.path)}: " + ", ".join(f"{printable(c)} {p:.4f}"
                                                       for c, p in self.topk)
        if self.members is not None:
            text += "  (members: " + ", ".join(f"{printable(c)} {p:.4f}"
                                               for c, p in self.members) + ")"
        return text


@dataclass
class Failure:
    path: str  # as the file system names it
    error: str  # why the file could not be used

    def to_dict(self) -> dict[str, Any]:
        return {"path": printable(self.path), "error": printable(self.error)}

    def line(self) -> str:
        """``PATH: error: WHY``, printable as UTF-8."""
        return f"{printable(self.path)}: error: {printable(self.error)}"


@dataclass(frozen=True)
class Preprocessing:
    """How a decoded RGB image becomes a uint8 (3, H, W) network input."""

    size: tuple[int, int]  # (H, W) of the network input: the checkpoint's image_size
    resize: int | None = None  # shorter side before a center crop; None: resize to `size`
    interpolation: str = "bilinear"  # bilinear | bicubic | nearest

    @classmethod
    def from_meta(cls, meta: dict[str, Any]) -> Preprocessing:
        _, h, w = meta["image_size"]
        pre = meta.get("preprocessing") or {}
        return cls((int(h), int(w)), pre.get("resize"), pre.get("interpolation", "bilinear"))

    def __call__(self, img: Image.Image) -> np.ndarray:
        """An RGB PIL image -> uint8 (3, H, W)."""
        # torchvision takes about a second to import: only ImageNet-style checkpoints
        # (resize + crop) pay for it, CIFAR predictions do not
        from torchvision.transforms import InterpolationMode
        from torchvision.transforms import functional as TF

        mode = InterpolationMode(self.interpolation)
        h, w = self.size
        if self.resize is None:
            if img.size != (w, h):
                # Aspect ratio not kept: the training decoder (data.sources) does the same.
                img = TF.resize(img, [h, w], interpolation=mode)
        else:
            # torchvision's eval transform step by step, so imported weights see exactly
            # the inputs their published accuracy was measured with.
            img = TF.center_crop(TF.resize(img, self.resize, interpolation=mode), [h, w])
        return np.array(img, dtype=np.uint8).transpose(2, 0, 1)  # a writable copy


def find_images(inputs: Iterable[str | os.PathLike]) -> tuple[list[Path], list[Failure]]:
    """Expand files and folders into image paths: folders recursively (hidden entries
    skipped, folder links followed without looping: `resnets.data.files.list_files`), sorted,
    keeping files whose extension Pillow reads; named files as given. Inputs that do not
    exist are returned as failures."""
    extensions = image_extensions()
    found: list[Path] = []
    missing: list[Failure] = []
    for item in inputs:
        path = Path(item).expanduser()
        if path.is_dir():
            found += [file for file in list_files(path) if file.suffix.lower() in extensions]
        elif path.exists():
            found.append(path)
        else:
            missing.append(Failure(str(path), "no such file or folder"))
    return found, missing


class _BatchedPredictor:
    """Reads files in batches of ``batch_size`` and turns the class probabilities that
    ``_probabilities`` gives for them into `Prediction`s; unreadable files into `Failure`s."""

    classes: list[str]
    batch_size: int

    def _load(self, path: str | os.PathLike) -> Any:  # what `_probabilities` takes, per file
        raise NotImplementedError

    def _probabilities(self, items: list) -> tuple[torch.Tensor, list | None]:
        """(B, num_classes) probabilities on the CPU, and per image the members' top classes
        (None for a single checkpoint)."""
        raise NotImplementedError

    def predict(self, paths: Iterable[str | os.PathLike], topk: int = 5
                ) -> Iterator[Prediction | Failure]:
        """One result per path, in the order given: the ``topk`` classes (at most all of
        them) with their probabilities, or a `Failure` for a file that could not be read."""
        k = max(1, min(topk, len(self.classes)))
        chunk: list[str | os.PathLike] = []
        for path in paths:
            chunk.append(path)
            if len(chunk) == self.batch_size:
                yield from self._predict_chunk(chunk, k)
                chunk = []
        if chunk:
            yield from self._predict_chunk(chunk, k)

    def _predict_chunk(self, paths: list, k: int) -> Iterator[Prediction | Failure]:
        results: list[Prediction | Failure | None] = []
        items, slots = [], []
        for path in paths:
            try:
                items.append(self._load(path))
            except UnreadableFile as e:  # not a regular file, too large: the reason says it
                results.append(Failure(str(path), str(e)))
                continue
            except Exception as e:  # Pillow raises many exception types on bad input
                results.append(Failure(str(path), f"{type(e).__name__}: {e}"))
                continue
            slots.append(len(results))
            results.append(None)
        if items:
            all_probs, member_tops = self._probabilities(items)
            probs, index = all_probs.topk(k, dim=1)
            for j, (slot, p, i) in enumerate(zip(slots, probs.tolist(), index.tolist(),
                                                 strict=True)):
                results[slot] = Prediction(
                    str(paths[slot]), [(self.classes[c], v) for c, v in zip(i, p, strict=True)],
                    None if member_tops is None else member_tops[j])
        yield from results  # every slot is filled by now


@dataclass
class Predictor(_BatchedPredictor):
    """A checkpoint loaded once for prediction on image files.

    >>> predictor = Predictor.from_checkpoint("runs/r20/best.safetensors")
    >>> for result in predictor.predict(["cat.png", "photos/"], topk=3): print(result)
    """

    model: torch.nn.Module  # eval mode, on `device`
    meta: dict[str, Any]
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    batch_size: int = 64

    def __post_init__(self) -> None:
        need = [k for k in ("classes", "normalization", "image_size") if k not in self.meta]
        if need:
            raise CheckpointError(
                f"the checkpoint has no {', '.join(need)} record, which prediction needs to "
                f"prepare images. Write it with `resnets train` or `resnets import`.")
        if self.batch_size < 1:
            raise UserError(f"--batch-size must be at least 1, got {self.batch_size}.")
        self.classes: list[str] = list(self.meta["classes"])
        self.normalization = Normalization.from_dict(self.meta["normalization"])
        self.preprocessing = Preprocessing.from_meta(self.meta)
        self._formats = _read_formats()

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, *, device: str | torch.device = "cpu",
                        batch_size: int = 64) -> Predictor:
        """Load ``path`` (a resnets ``.safetensors`` checkpoint) onto ``device``."""
        model, meta = load_checkpoint(path, device=device)
        return cls(model, meta, torch.device(device), batch_size)

    def load_image(self, path: str | os.PathLike) -> torch.Tensor:
        """Decode and resize one file to a uint8 (3, H, W) tensor; raises as `decode`."""
        return torch.from_numpy(self.preprocessing(self.decode(path)))

    @torch.no_grad()
    def probabilities(self, images: torch.Tensor) -> torch.Tensor:
        """Class probabilities (B, num_classes), float32 on the CPU, of a uint8 (B, 3, H, W)
        batch."""
        x = self.normalization.apply(images.to(self.device))  # (B, 3, H, W) float32
        return torch.softmax(self.model(x).float(), dim=1).cpu()

    def _load(self, path: str | os.PathLike) -> torch.Tensor:
        return self.load_image(path)

    def _probabilities(self, items: list[torch.Tensor]) -> tuple[torch.Tensor, None]:
        return self.probabilities(torch.stack(items)), None

    def decode(self, path: str | os.PathLike) -> Image.Image:
        """Decode one file to an RGB PIL image (before resizing).

        Raises:
            UnreadableFile: not a regular file (a FIFO, a device), or over
                `resnets.data.files.MAX_FILE_BYTES`; checked before any byte is read.
            Exception: Pillow's errors on files it cannot decode (OSError,
                DecompressionBombError, ...).
        """
        data = read_file(path)
        try:
            img = Image.open(io.BytesIO(data), formats=self._formats)
        except Image.UnidentifiedImageError:
            # Pillow would name the in-memory buffer; name the file as it does for paths.
            raise Image.UnidentifiedImageError(
                f"cannot identify image file {os.fspath(path)!r}") from None
        with img:
            img.load()
            # A copy: a closed image can no longer be read.
            return img.copy() if img.mode == "RGB" else to_rgb8(img)


@dataclass
class EnsemblePredictor(_BatchedPredictor):
    """Several checkpoints predicting together: the weighted mean of their softmax
    probabilities, each member preparing the image as its checkpoint records.

    >>> ensemble = EnsemblePredictor.from_checkpoints(["a/best.safetensors", "resnet20.cifar10"])
    >>> for result in ensemble.predict(["cat.png"], topk=3): print(result.topk, result.members)
    """

    members: list[Predictor]
    weights: str | list[float] | None = None  # as `ensemble_weights`; normalized to sum to 1
    batch_size: int = 64
    names: list[str] | None = None  # the members' checkpoints, for messages

    def __post_init__(self) -> None:

        if not self.members:
            raise UserError("an ensemble needs at least one --checkpoint.")
        if self.batch_size < 1:
            raise UserError(f"--batch-size must be at least 1, got {self.batch_size}.")
        self.names = self.names or [f"member {i}" for i in range(len(self.members))]
        self.classes = check_same_classes([m.meta for m in self.members], self.names)
        self.weights = ensemble_weights(self.weights, len(self.members))

    @classmethod
    def from_checkpoints(cls, paths: Iterable[str | os.PathLike], *,
                         device: str | torch.device = "cpu", batch_size: int = 64,
                         weights: str | list[float] | None = None) -> EnsemblePredictor:
        """Load every checkpoint (path or shipped weight name) onto ``device``; ``weights``
        as `resnets.eval.ensemble.ensemble_weights` (default: equal)."""
        paths = [str(p) for p in paths]
        members = [Predictor.from_checkpoint(p, device=device, batch_size=batch_size)
                   for p in paths]
        return cls(members, weights, batch_size, paths)

    def _load(self, path: str | os.PathLike) -> Image.Image:
        return self.members[0].decode(path)  # once; each member resizes it its own way

    def _probabilities(self, items: list[Image.Image]
                       ) -> tuple[torch.Tensor, list[list[tuple[str, float]]]]:
        total = None
        tops = []  # per member: (top probability, class index), each (B,)
        for member, weight in zip(self.members, self.weights, strict=True):
            batch = torch.stack([torch.from_numpy(member.preprocessing(img)) for img in items])
            probs = member.probabilities(batch)  # (B, num_classes)
            tops.append(probs.max(dim=1))
            total = weight * probs if total is None else total + weight * probs
        per_image = [[(self.classes[int(t.indices[b])], float(t.values[b])) for t in tops]
                     for b in range(len(items))]
        return total, per_image
