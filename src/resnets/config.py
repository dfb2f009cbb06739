"""Training configuration: one frozen dataclass, filled from a recipe (TOML) and CLI overrides.

The resolved config is written next to every run (``config.json``) and inside every checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from .errors import UserError

PAPER_ITERATIONS = 64000
MAX_SEED = 2**63 - 1  # torch.manual_seed takes 64-bit seeds


@dataclass(frozen=True)
class TrainConfig:
    # --- what to train
    model: str = "resnet20"  # registered model name (`resnets models`)
    model_kwargs: dict = field(default_factory=dict)  # ResNet overrides, e.g. {"shortcut": "B"}
    recipe: str = "cifar10-paper"  # recipe name or TOML path this config came from
    init: str | None = None  # start from these weights (checkpoint, .pth, .safetensors)
    freeze: tuple[str, ...] = ()  # parts kept fixed when fine-tuning: stem, layer1, ...
    num_classes: int | None = None  # when given, must equal the number of data classes
    # --- data
    data: str | None = None  # dataset source; None = torchvision download into cache_dir
    cache_dir: str | None = None  # decoded-data cache; None = $RESNETS_CACHE or ~/.cache/resnets
    val_split: int = 5000  # images held out for validation (paper: 45k/5k); 0 = train on all
    train_subset: int | None = None  # train on a fixed seeded subset of this size (short runs)
    skip_bad_images: bool = False  # skip unreadable image files instead of stopping
    normalization: str = "per_pixel_mean"  # or "channel_mean_std"
    pad: int = 4  # random-crop padding in pixels; 0 disables cropping
    flip: bool = True  # random horizontal flips
    pipeline: str = "auto"  # device (uint8 set on the device) | folder (files + DataLoader)
    #                         auto: device for the CIFAR family, folder for ImageNet nets
    crop_size: int = 224  # folder pipeline: training crop (and eval center crop) size
    scale_range: tuple[int, int] = (256, 480)  # folder: shorter side drawn uniformly in range
    eval_resize: int = 256  # folder: shorter side before the eval center crop
    lighting: float = 0.1  # folder: std of AlexNet PCA lighting noise; 0 disables it
    workers: int = 4  # folder: DataLoader worker processes
    # --- optimisation (PAPER.md section 5)
    batch_size: int = 128  # mini-batch size
    lr: float = 0.1  # initial learning rate
    momentum: float = 0.9  # SGD momentum
    weight_decay: float = 1e-4  # L2 penalty
    iterations: int = PAPER_ITERATIONS  # total optimizer steps
    milestones: tuple[int, ...] = (32000, 48000)  # steps at which lr is multiplied by gamma
    gamma: float = 0.1  # lr factor per milestone
    schedule: str = "steps"  # steps (milestones) | plateau (x gamma when val error stalls)
    plateau_patience: int = 3  # plateau: evaluations without improvement before a drop
    plateau_threshold: float = 1e-3  # plateau: smaller val-error gains do not count
    warmup_lr: float | None = None  # lr used until training error < warmup_until_error
    warmup_until_error: float = 0.8  # warm-up ends when the training error drops below this
    warmup_max_iterations: int = 2000  # warm-up ends here regardless (a safety stop)
    # --- speed switches (one code path; "auto" picks per device)
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    precision: str = "auto"  # auto (bf16 where native: CUDA, AVX512-BF16 CPUs) | fp32 | bf16
    channels_last: bool | None = None  # None = on wherever bf16 is native, else off
    compile: bool = False  # torch.compile the training step's model
    deterministic: bool = False  # deterministic kernels (bitwise-reproducible resume on CPU)
    sync_bn: bool = False  # distributed: batch statistics over all ranks (SyncBatchNorm)
    # --- bookkeeping
    seed: int = 0  # seeds init, split, data order and augmentation
    log_every: int = 50  # iterations between metric lines (and host syncs)
    eval_every: int = 1000  # iterations between validation passes (and at the end)
    save_every: int = 1000  # iterations between checkpoints (and at the end / on SIGTERM)
    max_nonfinite: int = 5  # stop (after saving) after this many non-finite losses in a row

    def __post_init__(self) -> None:
        # Types first: a string or a NaN from a recipe, a flag or a checkpoint would otherwise
        # slip through the range checks below (NaN compares False both ways) and reach the
        # optimizer, where it turns every weight into NaN.
        for name in _INT_FIELDS:
            value = getattr(self, name)
            if value is not None and not _is_int(value):
                raise UserError(f"invalid training option: {name} must be a whole number, "
                                f"got {value!r}.")
        for name in _FLOAT_FIELDS:
            value = getattr(self, name)
            if value is not None and not (_is_number(value) and math.isfinite(value)):
                raise UserError(f"invalid training option: {name} must be a finite number, "
                                f"got {value!r}.")
        for name in ("model", "recipe", "device", "precision", "normalization", "pipeline",
                     "schedule"):
            if not isinstance(getattr(self, name), str):
                raise UserError(f"invalid training option: {name} must be a string, "
                                f"got {getattr(self, name)!r}.")
        if not isinstance(self.model_kwargs, dict):
            raise UserError(f"invalid training option: model_kwargs must be a table of "
                            f"keyword arguments, got {self.model_kwargs!r}.")
        if len(self.scale_range) != 2:
            raise UserError(f"invalid training option: scale_range must be [LO, HI], got "
                            f"{list(self.scale_range)!r}.")
        for name in ("milestones", "scale_range"):
            if not all(_is_int(v) for v in getattr(self, name)):
                raise UserError(f"invalid training option: {name} must hold whole numbers, "
                                f"got {list(getattr(self, name))!r}.")
        checks = [
            (self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}"),
            (self.iterations >= 1, f"iterations must be >= 1, got {self.iterations}"),
            (self.lr > 0 and math.isfinite(self.lr),
             f"lr must be a positive number, got {self.lr}"),
            (self.warmup_lr is None or self.warmup_lr > 0,
             f"warmup_lr must be positive, got {self.warmup_lr}"),
            (0 <= self.momentum < 1, f"momentum must be in [0, 1), got {self.momentum}"),
            (self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}"),
            (0 < self.gamma <= 1, f"gamma must be in (0, 1], got {self.gamma}"),
            (self.plateau_patience >= 1,
             f"plateau_patience must be >= 1, got {self.plateau_patience}"),
            (self.plateau_threshold >= 0,
             f"plateau_threshold must be >= 0, got {self.plateau_threshold}"),
            (0 <= self.warmup_until_error <= 1,
             f"warmup_until_error must be in [0, 1], got {self.warmup_until_error}"),
            (self.warmup_max_iterations >= 0,
             f"warmup_max_iterations must be >= 0, got {self.warmup_max_iterations}"),
            (self.lighting >= 0, f"lighting must be >= 0, got {self.lighting}"),
            (self.eval_resize >= 8, f"eval_resize must be >= 8, got {self.eval_resize}"),
            (self.num_classes is None or self.num_classes >= 1,
             f"num_classes must be >= 1, got {self.num_classes}"),
            (all(m >= 0 for m in self.milestones),
             f"milestones must be >= 0, got {list(self.milestones)}"),
            (self.val_split >= 0, f"val_split must be >= 0, got {self.val_split}"),
            (self.train_subset is None or self.train_subset >= 1,
             f"train_subset must be >= 1, got {self.train_subset}"),
            (self.pad >= 0, f"pad must be >= 0, got {self.pad}"),
            (self.precision in ("auto", "fp32", "bf16"),
             f"precision must be auto, fp32 or bf16, got {self.precision!r}"),
            (self.normalization in ("per_pixel_mean", "channel_mean_std"),
             f"normalization must be per_pixel_mean or channel_mean_std, "
             f"got {self.normalization!r}"),
            (min(self.log_every, self.eval_every, self.save_every) >= 1,
             "log_every, eval_every and save_every must be >= 1"),
            (self.max_nonfinite >= 1, f"max_nonfinite must be >= 1, got {self.max_nonfinite}"),
            (self.pipeline in ("auto", "device", "folder"),
             f"pipeline must be auto, device or folder, got {self.pipeline!r}"),
            (self.schedule in ("steps", "plateau"),
             f"schedule must be steps or plateau, got {self.schedule!r}"),
            (self.crop_size >= 8 and 8 <= self.scale_range[0] <= self.scale_range[1],
             f"need crop_size >= 8 and 8 <= scale_range[0] <= scale_range[1], got "
             f"{self.crop_size}, {list(self.scale_range)}"),
            (self.workers >= 0, f"workers must be >= 0, got {self.workers}"),
            (0 <= self.seed <= MAX_SEED, f"seed must be in 0..2**63-1, got {self.seed}"),
            (re.fullmatch(r"auto|cpu|cuda(:\d+)?", self.device) is not None,
             f"device must be auto, cpu, cuda or cuda:N, got {self.device!r}"),
            (list(self.milestones) == sorted(self.milestones),
             f"milestones must be increasing, got {list(self.milestones)}"),
        ]
        for ok, message in checks:
            if not ok:
                raise UserError(f"invalid training option: {message}.")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["milestones"] = list(self.milestones)
        d["scale_range"] = list(self.scale_range)
        d["freeze"] = list(self.freeze)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise UserError(f"unknown training option(s): {', '.join(unknown)}. "
                            f"Known options: {', '.join(sorted(known))}.")
        d = dict(d)
        for key in ("freeze", "milestones", "scale_range"):
            if key in d:
                if not isinstance(d[key], list | tuple):
                    raise UserError(f"invalid training option: {key} must be a list, "
                                    f"got {d[key]!r}.")
                d[key] = tuple(d[key])
        return cls(**d)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


_INT_FIELDS = ("num_classes", "val_split", "train_subset", "pad", "crop_size", "eval_resize",
               "workers", "batch_size", "iterations", "plateau_patience",
               "warmup_max_iterations", "seed", "log_every", "eval_every", "save_every",
               "max_nonfinite")
_FLOAT_FIELDS = ("lighting", "lr", "momentum", "weight_decay", "gamma", "plateau_threshold",
                 "warmup_lr", "warmup_until_error")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def field_docs() -> dict[str, str]:
    """Each field's comment in this file: the one description of every option (CLI help)."""
    import inspect
    import re

    docs = {}
    for line in inspect.getsource(TrainConfig).splitlines():
        m = re.match(r"\s+(\w+): [^=]+=.*?#\s*(.+)$", line)
        if m:
            docs[m.group(1)] = m.group(2).strip()
    return docs


def list_recipes() -> list[str]:
    return sorted(p.name[: -len(".toml")] for p in resources.files("resnets.recipes").iterdir()
                  if p.name.endswith(".toml"))


def read_recipe(name_or_path: str) -> dict[str, Any]:
    """The raw table of a packaged recipe (by name) or of a TOML file (by path)."""
    path = Path(name_or_path)
    if path.suffix == ".toml" and path.is_file():
        text = path.read_text()
    elif name_or_path in list_recipes():
        text = resources.files("resnets.recipes").joinpath(f"{name_or_path}.toml").read_text()
    else:
        raise UserError(f"unknown recipe {name_or_path!r}: give a packaged recipe name "
                        f"({', '.join(list_recipes())}) or the path of a .toml file.")
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise UserError(f"recipe {name_or_path}: not valid TOML ({e}).") from None


def resolve_config(recipe: str = "cifar10-paper", **overrides: Any) -> TrainConfig:
    """Recipe values, then the recipe's per-model overrides, then the caller's overrides.

    Overriding ``iterations`` without ``milestones`` rescales the milestones proportionally,
    so a short run keeps the paper's schedule shape (lr / 10 at 50% and 75%).
    """
    table = read_recipe(recipe)
    per_model = table.pop("model_overrides", {})
    values: dict[str, Any] = {**table, "recipe": recipe}
    overrides = {k: v for k, v in overrides.items() if v is not None}
    model = overrides.get("model", values.get("model", TrainConfig.model))
    values.update(per_model.get(model, {}))
    base_iterations = values.get("iterations", PAPER_ITERATIONS)
    base_milestones = values.get("milestones", TrainConfig.milestones)
    values.update(overrides)
    if "iterations" in overrides and "milestones" not in overrides:
        scale = values["iterations"] / base_iterations
        values["milestones"] = [round(m * scale) for m in base_milestones]
    return TrainConfig.from_dict(values)


# Options that may change between a run and its resumption; anything else must match.
RESUMABLE_CHANGES = {"iterations", "milestones", "log_every", "eval_every", "save_every",
                     "device", "compile", "max_nonfinite", "cache_dir", "data", "recipe"}


def merge_resumed_config(stored: dict[str, Any], cfg: TrainConfig,
                         explicit: set[str] | None = None) -> TrainConfig:
    """The config a resumed run continues with: the checkpoint's (``stored``), with the
    `RESUMABLE_CHANGES` the user gave in ``cfg``. ``explicit``: the option names the user gave
    (None: every field of ``cfg``); one of them that differs and may not change is refused."""
    current = cfg.to_dict()
    given = set(current) if explicit is None else set(explicit)
    differ = sorted(k for k in stored if k not in RESUMABLE_CHANGES and k in given
                    and stored[k] != current.get(k))
    if differ:
        details = "; ".join(f"{k}: checkpoint {stored[k]!r}, now {current.get(k)!r}"
                            for k in differ)
        raise UserError(f"cannot resume: these options differ from the checkpoint's run "
                        f"({details}). Use the original options, or a new --out "
                        f"directory for a new run.")
    merged = {**stored, **{k: current[k] for k in RESUMABLE_CHANGES if k in given}}
    if "iterations" in given and "milestones" not in given:
        merged["milestones"] = stored["milestones"]  # extending a run keeps its schedule
    return TrainConfig.from_dict(merged)
