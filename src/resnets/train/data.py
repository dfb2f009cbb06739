"""The trainer's two input pipelines behind one small interface.

* ``device``: a CIFAR-style set decoded once to uint8 and kept on the training device
  (`resnets.data.DeviceLoader`): batched crop / flip / mean subtraction, no workers.
* ``folder``: image files decoded by DataLoader workers with the paper's ImageNet
  augmentation (`resnets.data.folder`).

Both make batch ``i`` of epoch ``e`` a pure function of (seed, e, i), which is what exact
resume needs, and both split a global batch over data-parallel ranks.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import torch
from torch.utils.data import Subset

from ..checkpoint import weights_record
from ..config import (
    OPTIONS,
    TrainConfig,
    finetune_batch,
    finetune_before_data,
    finetune_to_data,
)
from ..data import (
    NORMALIZATION_KINDS,
    DeviceLoader,
    Normalization,
    data_fingerprint,
    load_image_set,
)
from ..errors import UserError
from ..eval.run_split import run_split
from ..models import model_info
from .distributed import DistEnv


class TrainData:
    cfg: TrainConfig  # the run's config, with the fine-tuning defaults fitted to the data
    notes: list[str]  # one line per default fitted to the data, for the run's first lines
    classes: list[str]
    source: str
    skipped: list[str]
    num_train: int
    num_val: int
    steps_per_epoch: int
    normalization: Normalization
    image_size: list[int]  # (C, H, W) the net sees at test time
    preprocessing: dict | None  # resize / crop recipe for predict, where not plain resizing
    # The validation images, as `validation_record` describes them (None: no validation).
    validation: dict | None
    fingerprint: dict | None  # which images, in which order (`resnets.data.fingerprint`)

    def train_batches(self, epoch: int, start: int) -> Iterator[tuple[torch.Tensor, ...]]:
        raise NotImplementedError

    def val_batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]] | None:
        raise NotImplementedError


def validation_record(images: int, what: str, *, held_out_of_training: bool,
                      eval_split: str | None) -> dict | None:
    """What a run validates on, for its records and for the ``best`` checkpoint it chooses.

    ``held_out_of_training``: the images were carved out of the training images (a
    ``--val-split`` minival), so choosing weights on them leaves the reported split untouched;
    False for the data's own val split, the one results are reported on. ``eval_split``: the
    ``resnets eval --split`` that measures exactly these images (None: none does)."""
    if not images:
        return None
    return {"images": images, "what": what, "held_out_of_training": held_out_of_training,
            "eval_split": eval_split}


def build_train_data(cfg: TrainConfig, device: torch.device, channels_last: bool,
                     env: DistEnv, given: set[str] | None = None) -> TrainData:
    """The run's data. ``given``: the options the user set; with ``cfg.init`` the others get
    fine-tuning defaults fitted to the data (`resnets.config.finetune_to_data`), which
    ``TrainData.cfg`` holds and ``TrainData.notes`` states. None: every option counts as
    given."""
    given = set(OPTIONS) if given is None else given
    model_info(cfg.model)  # an unknown name is refused with the closest registered ones
    cls = DeviceData if cfg.resolved_pipeline() == "device" else FolderData
    return cls(cfg, device, channels_last, env, given)


def check_batch(batch_size: int, train_images: int) -> None:
    """Refuse a batch that no epoch of ``train_images`` fills, naming the one that would."""
    if batch_size > train_images:
        raise UserError(f"--batch-size {batch_size}: the {train_images} training images give "
                        f"no complete batch. Use --batch-size "
                        f"{finetune_batch(batch_size, train_images)} (a quarter of them) or any "
                        f"number up to {train_images}, or use more data.")


def kept_normalization(cfg: TrainConfig, kinds: tuple[str, ...],
                       shape: list[int]) -> tuple[Normalization | None, str | None]:
    """The --init weights' own input normalization, kept unless ``cfg.refit_normalization``
    (None where there is none to keep), and the line that says which one the run uses.
    ``kinds``: those this pipeline can apply; ``shape``: the (C, H, W) of its inputs."""
    if not cfg.init:
        return None, None
    if cfg.refit_normalization:
        return None, "input normalization: measured on the new training images " \
                     "(--refit-normalization)"
    record = (weights_record(cfg.init) or {}).get("normalization")
    if record is None:
        return None, (f"input normalization: measured on the new training images ({cfg.init} "
                      f"carries none to keep)")
    kept = Normalization.from_dict(record)
    mean_shape = list(torch.tensor(kept.mean).shape)
    if kept.kind not in kinds or (kept.kind == "per_pixel_mean" and mean_shape != shape):
        raise UserError(f"the input normalization of {cfg.init} ({kept.kind}, mean of shape "
                        f"{mean_shape}) does not fit this pipeline's {shape} inputs; add "
                        f"--refit-normalization for one of the new data's own.")
    return kept, (f"input normalization: kept from {cfg.init} ({kept.kind}, part of the "
                  f"pretrained net); --refit-normalization measures it on the new images")


class DeviceData(TrainData):
    def __init__(self, cfg: TrainConfig, device: torch.device, channels_last: bool,
                 env: DistEnv, given: set[str]):
        cfg, self.notes = finetune_before_data(cfg, given)
        data = load_image_set(cfg.data, split="train", cache_dir=cfg.cache_dir,
                              skip_bad_images=cfg.skip_bad_images)
        # This pipeline reads train/ only: a val/ folder beside it does not validate.
        cfg, notes = finetune_to_data(cfg, given, images=len(data.labels), val_folder=False,
                                      world_size=env.world_size)
        if cfg.init and cfg.data and (Path(cfg.data) / "val").is_dir():
            notes.append(f"{cfg.data}/val is not read: {cfg.model} trains and validates on "
                         f"{cfg.data}/train, held out by --val-split")
        self.cfg, self.notes = cfg, self.notes + notes
        train_idx, val_idx = run_split(len(data.labels), val_split=cfg.val_split, seed=cfg.seed,
                                       train_subset=cfg.train_subset, source=data.source)
        check_batch(cfg.batch_size, len(train_idx))
        self.classes, self.source = list(data.classes), data.source
        self.skipped = list(data.skipped)
        self.fingerprint = data_fingerprint(data)
        train_images = data.images[train_idx]
        self.image_size = [3, *data.images.shape[2:]]
        kept, note = kept_normalization(cfg, NORMALIZATION_KINDS, self.image_size)
        self.normalization = kept or Normalization.fit(train_images, cfg.normalization)
        self.notes += [note] if note else []
        self.preprocessing = None
        try:
            self.loader = DeviceLoader(
                train_images, data.labels[train_idx], batch_size=cfg.batch_size, device=device,
                normalization=self.normalization, train=True, seed=cfg.seed, pad=cfg.pad,
                flip=cfg.flip, channels_last=channels_last, rank=env.rank,
                world_size=env.world_size)
        except ValueError as e:
            raise UserError(f"{e}: choose --batch-size as a multiple of the number of "
                            f"processes.") from None
        self.val = None
        if len(val_idx) and env.is_main:  # rank 0 validates for everyone
            self.val = DeviceLoader(
                data.images[val_idx], data.labels[val_idx], batch_size=max(cfg.batch_size, 500),
                device=device, normalization=self.normalization, train=False,
                channels_last=channels_last)
        self.num_train, self.num_val = len(train_idx), len(val_idx)
        self.validation = validation_record(
            len(val_idx), f"{len(val_idx)} images held out of the training images of "
                          f"{data.source} (--val-split {cfg.val_split}, seed {cfg.seed})",
            held_out_of_training=True, eval_split="val")
        self.steps_per_epoch = len(self.loader)

    def train_batches(self, epoch, start):
        return self.loader.epoch_batches(epoch, start)

    def val_batches(self):
        return None if self.val is None else self.val.epoch_batches(0)


class FolderData(TrainData):
    """ImageNet-style ``ROOT/train/<class>`` (+ ``ROOT/val/<class>``) or ``ROOT/<class>``."""

    def __init__(self, cfg: TrainConfig, device: torch.device, channels_last: bool,
                 env: DistEnv, given: set[str]):
        # The folder pipeline imports torchvision (about a second): CIFAR runs, which use
        # the device pipeline, do not pay for it.
        from ..data.folder import (
            IMAGENET_MEAN,
            IMAGENET_STD,
            FolderDataset,
            eval_transform,
            make_loader,
            train_transform,
        )

        if cfg.data is None or not Path(cfg.data).is_dir():
            raise UserError(f"the folder pipeline needs --data ROOT, a folder holding "
                            f"train/<class>/<images> (and optionally val/<class>/...) or "
                            f"<class>/<images>; got {cfg.data!r}. Extract archives first.")
        root = Path(cfg.data)
        split = "train" if (root / "train").is_dir() else None
        val_folder = split is not None and (root / "val").is_dir()
        self.device, self.channels_last = device, channels_last
        cfg, self.notes = finetune_before_data(cfg, given)
        kept, note = kept_normalization(cfg, ("channel_mean_std",), [3, cfg.crop_size,
                                                                     cfg.crop_size])
        self.normalization = kept or Normalization("channel_mean_std", list(IMAGENET_MEAN),
                                                   list(IMAGENET_STD))
        if note and not kept:  # this pipeline never measures: it takes ImageNet's statistics
            note = "input normalization: ImageNet's per-channel mean and std"
        mean, std = self.normalization.mean, self.normalization.std
        train_tf = train_transform(cfg.crop_size, tuple(cfg.scale_range), lighting=cfg.lighting,
                                   mean=mean, std=std)
        eval_tf = eval_transform(cfg.crop_size, cfg.eval_resize, mean=mean, std=std)
        train_set = FolderDataset(root, split, train_tf, skip_bad_images=cfg.skip_bad_images)
        self.classes, self.skipped = list(train_set.classes), train_set.skipped
        self.source = f"image folder {root}"
        cfg, notes = finetune_to_data(cfg, given, images=len(train_set), val_folder=val_folder,
                                      world_size=env.world_size)
        self.cfg, self.notes = cfg, self.notes + notes + ([note] if note else [])
        per_rank, rem = divmod(cfg.batch_size, env.world_size)
        if rem:
            raise UserError(f"--batch-size {cfg.batch_size} does not split evenly over "
                            f"{env.world_size} processes.")
        # Folders are decoded per sample, so there is no decoded copy to hash: no fingerprint.
        self.fingerprint = None
        train_idx, val_idx = run_split(len(train_set), val_split=cfg.val_split, seed=cfg.seed,
                                       train_subset=cfg.train_subset, source=self.source,
                                       val_folder=val_folder)
        check_batch(cfg.batch_size, len(train_idx))
        val_set = None
        if cfg.val_split:
            plain = FolderDataset(root, split, eval_tf, skip_bad_images=cfg.skip_bad_images)
            val_set = Subset(plain, val_idx.tolist())
        elif val_folder:
            val_set = FolderDataset(root, "val", eval_tf, skip_bad_images=cfg.skip_bad_images)
            if list(val_set.classes) != self.classes:
                raise UserError(f"{root}/val has other class folders than {root}/train.")
        train_subset = Subset(train_set, train_idx.tolist())
        self.loader = make_loader(train_subset, per_rank, train=True, seed=cfg.seed,
                                  workers=cfg.workers, distributed=env.enabled, rank=env.rank,
                                  world_size=env.world_size)
        self.val = None
        if val_set is not None and env.is_main:
            self.val = make_loader(val_set, max(per_rank, 100), train=False,
                                   workers=cfg.workers)
        self.num_train, self.num_val = len(train_idx), len(val_set) if val_set else 0
        if cfg.val_split:  # `resnets eval --split val` reads ROOT/val, not these images
            self.validation = validation_record(
                self.num_val, f"{self.num_val} images held out of the training images of "
                              f"{self.source} (--val-split {cfg.val_split}, seed {cfg.seed})",
                held_out_of_training=True, eval_split=None)
        else:
            self.validation = validation_record(
                self.num_val, f"{root}/val, the data's own val split", held_out_of_training=False,
                eval_split="val")
        self.steps_per_epoch = len(self.loader)
        self.image_size = [3, cfg.crop_size, cfg.crop_size]
        self.preprocessing = {"resize": cfg.eval_resize, "crop": cfg.crop_size,
                              "interpolation": "bilinear"}

    def _to_device(self, batches):
        for x, y in batches:
            x = x.to(self.device, non_blocking=True)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, y.to(self.device, non_blocking=True)

    def train_batches(self, epoch, start):
        from ..data.folder import set_loader_epoch  # torchvision: on use, as above

        set_loader_epoch(self.loader, epoch, start)
        return self._to_device(self.loader)

    def val_batches(self):
        return None if self.val is None else self._to_device(self.val)
