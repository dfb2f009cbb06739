"""The paper's test protocols (PAPER.md section 6) as pure tensor functions, plus a driver.

ImageNet (224x224 training crops):

- ``center``: shorter side resized to 256, the central 224x224 crop (1 view).
- ``ten_crop``: shorter side 256, the four corner and the central 224x224 crops, and the
  horizontal flip of each (10 views; view 5 + i is the mirror image of view i).
- ``multi_scale``: the whole image with its shorter side resized to each of
  {224, 256, 384, 480, 640}, and the flip of each (10 views of 5 sizes). The paper runs the
  network fully convolutionally (its fc as a 1x1 conv) and averages the score map; the
  networks here end in global average pooling followed by the linear fc, and averaging
  before or after a linear map is the same, so the plain forward pass gives that score.

CIFAR analogue (checkpoints trained on 32x32 images, PAPER.md section 4 / 5), selected with
``family="cifar"``:

- ``center``: the 32x32 image itself, the paper's CIFAR test view.
- ``ten_crop``: pad 4 pixels per side with zeros *after* normalization (the mean colour, as
  the training crops are padded), the 32x32 crops at the four corners and the centre of the
  40x40 result (the centre one is the image itself), and their flips.
- ``multi_scale``: the image resized to 32, 40 and 48 pixels, and their flips. This is the
  same fully convolutional rule, so it is defined and computed; but the CIFAR recipe trains at
  one scale only (no scale augmentation, unlike ImageNet's [256, 480]), so the larger views
  show objects at sizes the network never saw, and it should not be expected to help.

Scores: a view's class scores are its softmax probabilities; a protocol's prediction is the
mean of the probabilities over its views (the paper's "scores averaged", as in Caffe-style
testing where the network's last layer is the softmax).

Every view function takes a normalized image ``(..., C, H, W)`` (leading batch dimensions
allowed) and returns a list of views in a fixed order. Normalize first: the CIFAR padding
must be zero in normalized units, and for the ImageNet protocols per-channel normalization
commutes with cropping and bilinear resizing anyway.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms.v2 import functional as TF

from ..data.device_loader import Normalization
from ..device import autocast
from ..errors import UserError
from .metrics import topk_correct

__all__ = [
    "IMAGENET_SCALES",
    "PROTOCOL_NAMES",
    "Protocol",
    "center_crop_views",
    "evaluate_protocol",
    "get_protocol",
    "multi_scale_views",
    "predict_protocol",
    "ten_crop_views",
]

PROTOCOL_NAMES = ("center", "ten_crop", "multi_scale")
IMAGENET_SCALES = (224, 256, 384, 480, 640)
CIFAR_SCALES = (32, 40, 48)
FAMILIES = ("imagenet", "cifar")


# --------------------------------------------------------------------------------------------
# Views


def _resize_shorter(img: torch.Tensor, size: int | None) -> torch.Tensor:
    if size is None or min(img.shape[-2:]) == size:
        return img
    return TF.resize(img, [size], antialias=True)


def center_crop_views(img: torch.Tensor, resize: int | None = 256,
                      crop: int = 224) -> list[torch.Tensor]:
    """One view: shorter side resized to ``resize`` (None keeps the size), then the central
    ``crop`` x ``crop`` window."""
    img = _resize_shorter(img, resize)
    return [TF.center_crop(img, [crop, crop])]


def ten_crop_views(img: torch.Tensor, resize: int | None = 256, crop: int = 224,
                   pad: int = 0) -> list[torch.Tensor]:
    """Ten views: shorter side resized to ``resize`` (None keeps it), zero-padded by ``pad``
    pixels per side, the ``crop`` x ``crop`` windows at the top-left, top-right,
    bottom-left and bottom-right corners and the centre (views 0-4), then the horizontal flip
    of each (views 5-9: view 5 + i mirrors view i).

    Built from torchvision's ``five_crop`` plus a flip of every crop rather than its
    ``ten_crop``, which crops the mirrored image: its flipped top-left view is the mirror of
    the top-right crop, and for an odd margin its flipped centre is shifted by one pixel.
    """
    img = _resize_shorter(img, resize)
    if pad:
        img = F.pad(img, (pad, pad, pad, pad))  # zeros: the mean colour after normalization
    crops = list(TF.five_crop(img, [crop, crop]))
    return crops + [c.flip(-1) for c in crops]


def multi_scale_views(img: torch.Tensor, scales: Sequence[int] = IMAGENET_SCALES,
                      flips: bool = True) -> list[torch.Tensor]:
    """The whole image with its shorter side resized to each of ``scales`` (aspect ratio
    kept), each followed by its horizontal flip when ``flips``: views of different sizes, for
    a fully convolutional network (global average pooling takes any size)."""
    views = []
    for size in scales:
        view = _resize_shorter(img, size)
        views.append(view)
        if flips:
            views.append(view.flip(-1))
    return views


@dataclass(frozen=True)
class Protocol:
    """A test protocol: how one normalized image becomes the views whose softmax scores are
    averaged. Build the paper's with `get_protocol`."""

    name: str  # one of PROTOCOL_NAMES
    family: str  # "imagenet" or "cifar": which input size the definition is for
    resize: int | None = None  # shorter side before cropping; None keeps the image size
    crop: int | None = None  # square crop size (center, ten_crop)
    pad: int = 0  # zero padding per side before cropping (the CIFAR ten-crop)
    scales: tuple[int, ...] = ()  # shorter sides of multi_scale
    flips: bool = False  # add the horizontal flip of every multi_scale view

    def views(self, img: torch.Tensor) -> list[torch.Tensor]:
        """The views of a normalized ``(..., C, H, W)`` image, in the protocol's order."""
        if self.name == "center":
            if self.crop is None:
                return [img]
            return center_crop_views(img, self.resize, self.crop)
        if self.name == "ten_crop":
            return ten_crop_views(img, self.resize, self.crop, self.pad)
        if self.name == "multi_scale":
            return multi_scale_views(img, self.scales, self.flips)
        raise ValueError(f"unknown protocol name {self.name!r}")

    @property
    def num_views(self) -> int:
        if self.name == "multi_scale":
            return len(self.scales) * (2 if self.flips else 1)
        return 10 if self.name == "ten_crop" else 1

    @property
    def base_size(self) -> int:
        """The family's training crop side (224 or 32), the unit of batch sizes."""
        return 32 if self.family == "cifar" else 224


_PROTOCOLS = {
    ("imagenet", "center"): Protocol("center", "imagenet", resize=256, crop=224),
    ("imagenet", "ten_crop"): Protocol("ten_crop", "imagenet", resize=256, crop=224),
    ("imagenet", "multi_scale"): Protocol("multi_scale", "imagenet", scales=IMAGENET_SCALES,
                                          flips=True),
    ("cifar", "center"): Protocol("center", "cifar"),
    ("cifar", "ten_crop"): Protocol("ten_crop", "cifar", crop=32, pad=4),
    ("cifar", "multi_scale"): Protocol("multi_scale", "cifar", scales=CIFAR_SCALES,
                                       flips=True),
}


def get_protocol(name: str, family: str = "imagenet") -> Protocol:
    """The protocol ``name`` (``center``, ``ten_crop``, ``multi_scale``) as defined for the
    model ``family`` (``imagenet``: 224x224 crops; ``cifar``: 32x32 images), see the module
    docstring. Use ``resnets.models.model_info(name).family`` for a registered model."""
    if family not in FAMILIES:
        raise UserError(f"Unknown model family {family!r}: expected one of "
                        f"{', '.join(FAMILIES)}.")
    try:
        return _PROTOCOLS[family, name.replace("-", "_")]
    except KeyError:
        raise UserError(f"Unknown test protocol {name!r}: expected one of "
                        f"{', '.join(PROTOCOL_NAMES)} (PAPER.md section 6).") from None


def protocol_for_size(name: str, crop: int, resize: int) -> Protocol:
    """An ImageNet protocol for a net trained at another crop size (e.g. 32 for tests on
    small images): crop and resize as given, multi-scale sides scaled by ``crop / 224``."""
    base = get_protocol(name, "imagenet")
    if base.name == "multi_scale":
        return replace(base, scales=tuple(max(8, round(s * crop / 224)) for s in base.scales))
    return replace(base, crop=crop, resize=resize)


def _as_protocol(protocol: str | Protocol, family: str) -> Protocol:
    return protocol if isinstance(protocol, Protocol) else get_protocol(protocol, family)


# --------------------------------------------------------------------------------------------
# Scoring


class _ViewScorer:
    """Runs views through the model in batches of equal-sized views and adds each view's
    softmax probabilities to the row of the image it came from.

    A batch holds at most ``batch_size`` views of ``base`` x ``base`` pixels, or
    proportionally fewer larger ones (by pixel count), so that memory stays about the same
    from the 224 view to the 640 one.
    """

    def __init__(self, model: nn.Module, scores: torch.Tensor, batch_size: int, base: int,
                 amp_dtype: torch.dtype | None, channels_last: bool) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.model = model
        self.scores = scores  # (N, classes) float32: per image, the sum of its views' softmax
        self.max_pixels = batch_size * base * base  # per forward pass
        self.amp_dtype = amp_dtype
        self.channels_last = channels_last
        self.pending: dict[tuple, tuple[list[torch.Tensor], list[int]]] = {}
        self.pending_pixels = 0

    def add(self, owner: int, view: torch.Tensor) -> None:
        views, owners = self.pending.setdefault(tuple(view.shape), ([], []))
        views.append(view)
        owners.append(owner)
        pixels = view.shape[-1] * view.shape[-2]
        self.pending_pixels += pixels
        if (len(views) + 1) * pixels > self.max_pixels:  # one more would not fit
            self._run(tuple(view.shape))
        elif self.pending_pixels >= 4 * self.max_pixels:
            self.flush()  # many sizes with few views each: bound the memory held

    def flush(self) -> None:
        for shape in list(self.pending):
            self._run(shape)

    def _run(self, shape: tuple) -> None:
        views, owners = self.pending.pop(shape)
        self.pending_pixels -= len(views) * shape[-1] * shape[-2]
        x = torch.stack(views)  # (B, C, h, w)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(x.device, self.amp_dtype):
            logits = self.model(x)
        probs = logits.float().softmax(dim=1)  # (B, classes)
        self.scores.index_add_(0, torch.tensor(owners, device=probs.device), probs)


@torch.no_grad()
def predict_protocol(model: nn.Module, image: torch.Tensor, protocol: str | Protocol, *,
                     family: str = "imagenet", num_classes: int | None = None,
                     batch_size: int = 64) -> torch.Tensor:
    """Class probabilities of one image under ``protocol``: the mean over the protocol's views
    of each view's softmax (views of equal size run as one batch).

    Args:
        model: the classifier; run in eval mode (its mode is restored afterwards).
        image: one normalized float image ``(C, H, W)`` on the model's device.
        protocol: a `Protocol` or its name (then defined for ``family``).
        num_classes: size of the output; default: the model's ``fc.out_features``.
        batch_size: views per forward pass at the family's training size (see
            `evaluate_protocol`).

    Returns:
        ``(num_classes,)`` float32 probabilities that sum to 1.
    """
    protocol = _as_protocol(protocol, family)
    if image.ndim != 3:
        raise ValueError(f"predict_protocol takes one (C, H, W) image, got {tuple(image.shape)}")
    classes = num_classes or _num_classes(model)
    scores = torch.zeros(1, classes, device=image.device)
    was_training = model.training
    model.eval()
    try:
        scorer = _ViewScorer(model, scores, batch_size, protocol.base_size, None, False)
        views = protocol.views(image)
        for view in views:
            scorer.add(0, view)
        scorer.flush()
    finally:
        model.train(was_training)
    return scores[0] / len(views)


def _num_classes(model: nn.Module) -> int:
    fc = getattr(model, "fc", None)
    if isinstance(fc, nn.Linear):
        return fc.out_features
    raise ValueError("cannot tell the number of classes of this model: pass num_classes")


def _to_tensor(image) -> torch.Tensor:
    if isinstance(image, torch.Tensor):
        return image
    return TF.pil_to_tensor(image)  # PIL -> uint8 (C, H, W)


@torch.no_grad()
def evaluate_protocol(
    model: nn.Module,
    dataset: Dataset | Iterable,
    protocol: str | Protocol,
    *,
    normalization: Normalization | tuple[Sequence[float], Sequence[float]],
    family: str = "imagenet",
    batch_size: int = 128,
    device: str | torch.device = "cpu",
    workers: int = 0,
    amp_dtype: torch.dtype | None = None,
    channels_last: bool = False,
    num_classes: int | None = None,
    progress: Callable[[int], None] | None = None,
    return_probs: bool = False,
) -> dict:
    """Top-1 / top-5 error of ``model`` on ``dataset`` under a test protocol.

    Each image is moved to ``device``, scaled to [0, 1] when uint8, normalized, cut into the
    protocol's views, and every view is scored; an image's prediction is the mean of its views'
    softmax probabilities (see the module docstring). Views of equal size, from any images,
    are batched together, so ``center`` and ``ten_crop`` run full batches and
    ``multi_scale`` batches images of equal aspect ratio.

    Args:
        model: the classifier, already on ``device``; evaluated in eval mode.
        dataset: items ``(image, label)`` with the full, untransformed image: a uint8 or
            float ``(3, H, W)`` tensor or a PIL image (e.g. ``FolderDataset(root, "val")``,
            or a ``TensorDataset`` of CIFAR uint8 images). A map-style dataset is read
            through a DataLoader with ``workers`` processes.
        protocol: a `Protocol` or a name of `PROTOCOL_NAMES` (then defined for ``family``).
        normalization: a `Normalization` (e.g. a checkpoint's), or ``(mean, std)`` per
            channel in [0, 1] units.
        batch_size: views per forward pass at the training size (224 ImageNet, 32 CIFAR);
            larger views run in proportionally smaller batches (same pixel count).
        amp_dtype: autocast dtype (e.g. ``torch.bfloat16``), None for full precision.
        num_classes: default: the model's ``fc.out_features``.
        progress: called with the number of images done after each image.
        return_probs: also return ``"probs"`` (N, classes) and ``"labels"`` (N,), CPU
            tensors in dataset order (what an ensemble averages).

    Returns:
        ``{"protocol", "family", "views_per_image", "n", "top1_error", "top5_error",
        "loss"}``, and for ``multi_scale`` its ``"scales"`` (shorter sides in pixels) and
        ``"views_per_scale"`` (2 with flips); errors are fractions in [0, 1], ``loss`` the
        mean negative log of the averaged probability of the true class.
    """
    protocol = _as_protocol(protocol, family)
    if not isinstance(normalization, Normalization):
        mean, std = normalization
        normalization = Normalization("channel_mean_std", list(mean), list(std))
    device = torch.device(device)
    classes = num_classes or _num_classes(model)
    items: Iterable = dataset
    if isinstance(dataset, Dataset) and hasattr(dataset, "__len__"):
        items = DataLoader(dataset, batch_size=None, shuffle=False, num_workers=workers,
                           pin_memory=device.type == "cuda")
    try:
        total = len(items)  # type: ignore[arg-type]
    except TypeError:
        total = None

    # Score sums per image; grown when the dataset has no length.
    scores = torch.zeros(total or 1024, classes, device=device)
    labels: list[int] = []
    was_training = model.training
    model.eval()
    try:
        scorer = _ViewScorer(model, scores, batch_size, protocol.base_size, amp_dtype,
                             channels_last)
        for i, (image, label) in enumerate(items):
            if i >= scorer.scores.shape[0]:  # only for datasets without a length
                scorer.flush()
                scorer.scores = torch.cat([scorer.scores, torch.zeros_like(scorer.scores)])
            x = _to_tensor(image).to(device, non_blocking=True)
            x = normalization.apply(x[None])[0]  # (C, H, W) float32
            for view in protocol.views(x):
                scorer.add(i, view)
            labels.append(int(label))
            if progress is not None:
                progress(i + 1)
        scorer.flush()
    finally:
        model.train(was_training)

    n = len(labels)
    if n == 0:
        raise ValueError("evaluate_protocol() got no images")
    probs = scorer.scores[:n] / protocol.num_views  # (N, classes), rows sum to 1
    y = torch.tensor(labels, device=device)
    true_prob = probs.gather(1, y[:, None]).squeeze(1)
    extra = {"probs": probs.cpu(), "labels": y.cpu()} if return_probs else {}
    # multi_scale's sides follow the net's training size (`protocol_for_size`): say which
    scales = {"scales": list(protocol.scales), "views_per_scale": 2 if protocol.flips else 1} \
        if protocol.name == "multi_scale" else {}
    return {
        "protocol": protocol.name,
        "family": protocol.family,
        "views_per_image": protocol.num_views,
        **scales,
        "n": n,
        "top1_error": 1.0 - topk_correct(probs, y, 1).item() / n,
        "top5_error": 1.0 - topk_correct(probs, y, 5).item() / n,
        "loss": float(-true_prob.clamp_min(1e-12).log().mean()),
        **extra,
    }
