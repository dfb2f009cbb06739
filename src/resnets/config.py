"""Training configuration: one frozen dataclass, filled from a recipe (TOML) and CLI overrides.

The resolved config is written next to every run (``config.json``) and inside every checkpoint.
Each field is declared once, with `option`: its default, its help text (the `--help` of
`resnets train`), its fixed choices, how the command line spells a value of it, and whether a
resumed run may change it. The CLI flags, the resume rule and `field_docs` derive from that.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import tomllib
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from .errors import UserError
from .models import UnknownModelError, model_info

PAPER_ITERATIONS = 64000
MAX_SEED = 2**63 - 1  # torch.manual_seed takes 64-bit seeds
DEVICE_PATTERN = re.compile(r"auto|cpu|cuda(:\d+)?")  # what torch can train on here


# ------------------------------------------------------- command-line spellings of values
# Each raises ValueError with the message the command line shows.
def parse_seed(text: str) -> int:
    """A seed as the command line gives it: a whole number from 0 to 2**63-1."""
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"expected a whole number, got {text!r}") from None
    if not 0 <= value <= MAX_SEED:
        raise ValueError(f"{value} is out of range: a seed is a whole number from 0 to "
                         f"2**63-1 ({MAX_SEED})")
    return value


def int_list(what: str, count: int | None = None) -> Callable[[str], list[int]]:
    """A parser of comma-separated whole numbers (exactly ``count`` when given)."""

    def parse(text: str) -> list[int]:
        try:
            values = [int(p.strip()) for p in text.split(",")]
        except ValueError:
            values = None
        if values is None or (count is not None and len(values) != count):
            n = f"{count} " if count is not None else ""
            raise ValueError(f"expected {what} ({n}comma-separated whole numbers), "
                             f"got {text!r}")
        return values

    parse.__name__ = what  # argparse names the type in some messages
    return parse


def name_list(text: str) -> list[str]:
    """Comma-separated names; empty entries are dropped."""
    return [v for v in text.split(",") if v]


def option(default: Any = dataclasses.MISSING, *, help: str,
           choices: tuple[str, ...] | None = None, parse: Callable[[str], Any] | None = None,
           resumable: bool = False, flag: bool = True,
           default_factory: Any = dataclasses.MISSING) -> Any:
    """A `TrainConfig` field with what the CLI and the resume rule need to know of it.

    ``help``: the one description of the option; ``choices``: its only valid values (argparse
    and the config both refuse others); ``parse``: how the command line spells a value, where
    the field's type does not say (lists, the seed's range); ``resumable``: a resumed run may
    change it; ``flag=False``: the command line sets it through other flags (said in ``help``).
    """
    metadata = {"help": help, "choices": choices, "parse": parse, "resumable": resumable,
                "flag": flag}
    return field(default=default, default_factory=default_factory, metadata=metadata)


@dataclass(frozen=True)
class TrainConfig:
    # --- what to train
    model: str = option("resnet20", help="registered model name (`resnets models`)")
    model_kwargs: dict = option(
        default_factory=dict, flag=False,
        help="ResNet keyword overrides, e.g. {\"shortcut\": \"B\"} (flags --shortcut, --unit, "
             "--init-mode)")
    recipe: str = option("cifar10-paper", resumable=True, flag=False,
                         help="recipe name or TOML path this config came from (flag --recipe)")
    init: str | None = option(
        None, help="fine-tune: start from these weights (a shipped weight's name such as "
                   "resnet20.cifar10, a checkpoint, .pth or .safetensors); options left out "
                   "then fit the data (held-out fraction or val/, batch, schedule, lr / 10, "
                   "unreadable files skipped), each stated in the run's first lines")
    freeze: tuple[str, ...] = option(
        (), parse=name_list,
        help="fine-tuning: comma-separated parts kept fixed (stem,layer1,...)")
    num_classes: int | None = option(
        None, help="when given, must equal the number of data classes")
    # --- data
    data: str | None = option(
        None, resumable=True,
        help="dataset: a CIFAR-10 python release (.tar.gz or folder), an image folder "
             "ROOT/<class>/<image>, or a .tar archive of one; none: download CIFAR-10 into "
             "the cache")
    cache_dir: str | None = option(
        None, resumable=True,
        help="decoded-data cache (none: $RESNETS_CACHE, else ~/.cache/resnets)")
    val_split: int = option(
        5000, help="images held out for validation (paper: 45k/5k); 0 = train on all")
    train_subset: int | None = option(
        None, help="train on a fixed seeded subset of this size (short runs)")
    skip_bad_images: bool = option(
        False, help="skip unreadable image files instead of stopping")
    normalization: str = option(
        "per_pixel_mean", choices=("per_pixel_mean", "channel_mean_std"),
        help="per_pixel_mean: subtract the training split's mean image (the paper; device "
             "pipeline only); channel_mean_std: per-channel mean and std (the folder "
             "pipeline's: ImageNet's statistics, or with --init the pretrained net's own)")
    refit_normalization: bool = option(
        False, help="fine-tuning: measure the input normalization on the new training images "
                    "instead of keeping the --init weights' own (part of the pretrained net)")
    pad: int = option(4, help="random-crop padding in pixels; 0 disables cropping")
    flip: bool = option(True, help="random horizontal flips of training images")
    pipeline: str = option(
        "auto", choices=("auto", "device", "folder"),
        help="device: the decoded uint8 set lives on the device (CIFAR); folder: files "
             "decoded by DataLoader workers (ImageNet); auto: device for the CIFAR family, "
             "folder for ImageNet nets")
    crop_size: int = option(
        224, help="folder pipeline: training crop (and eval center crop) size; given alone, "
                  "--scale-range and --eval-resize follow it (256-480 and 256 for 224)")
    scale_range: tuple[int, int] = option(
        (256, 480), parse=int_list("LO,HI", 2),
        help="folder pipeline: LO,HI of the random shorter side")
    eval_resize: int = option(256, help="folder pipeline: shorter side before the eval "
                                        "center crop")
    lighting: float = option(
        0.1, help="folder pipeline: std of AlexNet PCA lighting noise; 0 disables it")
    workers: int = option(4, help="folder pipeline: DataLoader worker processes")
    # --- optimisation (PAPER.md section 5)
    batch_size: int = option(128, help="mini-batch size")
    lr: float = option(0.1, help="initial learning rate")
    momentum: float = option(0.9, help="SGD momentum")
    weight_decay: float = option(1e-4, help="L2 penalty")
    iterations: int = option(PAPER_ITERATIONS, resumable=True, help="total optimizer steps")
    milestones: tuple[int, ...] = option(
        (32000, 48000), resumable=True, parse=int_list("iterations"),
        help="comma-separated iterations where lr is multiplied by gamma")
    gamma: float = option(0.1, help="lr factor per milestone (and per plateau drop)")
    schedule: str = option(
        "steps", choices=("steps", "plateau"),
        help="steps (milestones) | plateau (x gamma when val error stalls)")
    plateau_patience: int = option(
        3, help="plateau schedule: evaluations without improvement before a drop")
    plateau_threshold: float = option(
        1e-3, help="plateau schedule: smaller val-error gains do not count")
    warmup_lr: float | None = option(
        None, help="lr used until training error < warmup_until_error (none: no warm-up; "
                   "the CIFAR recipe sets it by depth, whatever the net's name or unit)")
    warmup_until_error: float = option(
        0.8, help="warm-up ends when the training error drops below this")
    warmup_max_iterations: int = option(
        2000, help="warm-up ends at this iteration whatever the training error: a safety "
                   "stop of this code, not the papers' (theirs ends at < 80% training error, "
                   "about 400 iterations; 1603.05027's after 400), so that a net which never "
                   "gets below warmup_until_error still reaches lr")
    # --- speed switches (one code path; "auto" picks per device)
    device: str = option("auto", resumable=True,
                         help="auto (CUDA when there is one, else cpu) | cpu | cuda | cuda:N")
    precision: str = option(
        "auto", choices=("auto", "fp32", "bf16"),
        help="auto (CUDA: bf16; CPU: the fastest of fp32, fp32 channels_last and, where "
             "native, bf16 channels_last, measured once and cached) | fp32 | bf16")
    channels_last: bool | None = option(
        None, help="channels_last memory format for the net and its inputs; auto: what "
                   "--precision auto measured fastest; with fp32/bf16 given, on where bf16 is "
                   "native")
    compile: bool = option(False, resumable=True, help="torch.compile the training step's model")
    deterministic: bool = option(
        False, help="deterministic kernels (bitwise-reproducible resume on CPU)")
    sync_bn: bool = option(
        False, help="distributed: batch statistics over all ranks (SyncBatchNorm)")
    # --- bookkeeping
    seed: int = option(0, parse=parse_seed,
                       help="seeds init, split, data order and augmentation; 0 to 2**63-1")
    log_every: int = option(50, resumable=True,
                            help="iterations between metric lines (and host syncs)")
    eval_every: int = option(1000, resumable=True,
                             help="iterations between validation passes (and at the end)")
    save_every: int = option(
        1000, resumable=True,
        help="iterations between checkpoints (and at the end / on SIGTERM)")
    max_nonfinite: int = option(
        5, resumable=True,
        help="stop (after saving) after this many non-finite losses in a row")

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
        for name in _STR_FIELDS:
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
            *((getattr(self, name) in values,
               f"{name} must be {', '.join(values[:-1])} or {values[-1]}, "
               f"got {getattr(self, name)!r}") for name, values in CHOICES.items()),
            (min(self.log_every, self.eval_every, self.save_every) >= 1,
             "log_every, eval_every and save_every must be >= 1"),
            (self.max_nonfinite >= 1, f"max_nonfinite must be >= 1, got {self.max_nonfinite}"),
            (self.crop_size >= 8 and 8 <= self.scale_range[0] <= self.scale_range[1],
             f"need crop_size >= 8 and 8 <= scale_range[0] <= scale_range[1], got "
             f"{self.crop_size}, {list(self.scale_range)}"),
            (crop_fits(self.crop_size, self.scale_range[0], self.eval_resize),
             crop_mismatch(self.crop_size, self.scale_range, self.eval_resize)),
            (self.workers >= 0, f"workers must be >= 0, got {self.workers}"),
            (0 <= self.seed <= MAX_SEED, f"seed must be in 0..2**63-1, got {self.seed}"),
            (DEVICE_PATTERN.fullmatch(self.device) is not None,
             f"device must be auto, cpu, cuda or cuda:N, got {self.device!r}"),
            (list(self.milestones) == sorted(self.milestones),
             f"milestones must be increasing, got {list(self.milestones)}"),
        ]
        for ok, message in checks:
            if not ok:
                raise UserError(f"invalid training option: {message}.")
        if self.normalization != "channel_mean_std" and self.resolved_pipeline() == "folder":
            # The folder pipeline normalizes with fixed per-channel ImageNet statistics: a
            # record saying per_pixel_mean would state an option that never ran.
            raise UserError(
                f"invalid training option: normalization {self.normalization} is not "
                f"implemented by the folder pipeline (which {self.model} uses"
                f"{'' if self.pipeline == 'folder' else ' by default'}): it subtracts the "
                f"per-channel ImageNet mean and divides by its std. Pass --normalization "
                f"channel_mean_std (the value of the imagenet-paper and imagenet-steps "
                f"recipes), or --pipeline device for a CIFAR-style net, whose pipeline "
                f"subtracts the per-pixel mean.")

    def resolved_pipeline(self) -> str | None:
        """``pipeline`` with ``auto`` decided: ``device`` for the CIFAR family, ``folder`` for
        ImageNet nets; None for a name no net is registered under (refused when built, with
        the closest registered names)."""
        if self.pipeline != "auto":
            return self.pipeline
        try:
            family = model_info(self.model).family
        except UnknownModelError:
            return None
        return "device" if family == "cifar" else "folder"

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


# ------------------------------------------------- what the declarations above derive
OPTIONS: dict[str, dataclasses.Field] = {f.name: f for f in dataclasses.fields(TrainConfig)}
_TYPES = typing.get_type_hints(TrainConfig)


def value_type(name: str) -> Any:
    """The type of a field's values: ``X`` for a field typed ``X`` or ``X | None``."""
    typ = _TYPES[name]
    args = [a for a in typing.get_args(typ) if a is not type(None)]
    return args[0] if type(None) in typing.get_args(typ) and len(args) == 1 else typ


_INT_FIELDS = tuple(name for name in OPTIONS if value_type(name) is int)
_FLOAT_FIELDS = tuple(name for name in OPTIONS if value_type(name) is float)
_STR_FIELDS = tuple(name for name in OPTIONS if _TYPES[name] is str)  # None: not a model name
# Fields with a fixed set of values: argparse and the config both refuse anything else.
CHOICES: dict[str, tuple[str, ...]] = {name: f.metadata["choices"] for name, f in OPTIONS.items()
                                       if f.metadata["choices"]}
# Options that may change between a run and its resumption; anything else must match.
RESUMABLE_CHANGES = frozenset(name for name, f in OPTIONS.items() if f.metadata["resumable"])


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def field_docs() -> dict[str, str]:
    """Each field's help text: the one description of every option (CLI help, docs)."""
    return {name: f.metadata["help"] for name, f in OPTIONS.items()}


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
    """Recipe values, then the recipe's depth rule (``[depth_overrides]``, see
    `depth_overrides`) and per-model overrides, then the caller's overrides.

    Overriding ``iterations`` without ``milestones`` rescales the milestones proportionally,
    so a short run keeps the paper's schedule shape (lr / 10 at 50% and 75%). Overriding
    ``crop_size`` sets ``scale_range`` and ``eval_resize`` to match (`sizes_for_crop`) where
    they are not overridden too.
    """
    table = read_recipe(recipe)
    per_model = table.pop("model_overrides", {})
    by_depth = table.pop("depth_overrides", {})
    values: dict[str, Any] = {**table, "recipe": recipe}
    overrides = {k: v for k, v in overrides.items() if v is not None}
    model = overrides.get("model", values.get("model", TrainConfig.model))
    values.update(depth_overrides(by_depth, model, recipe))
    values.update(per_model.get(model, {}))
    base_iterations = values.get("iterations", PAPER_ITERATIONS)
    base_milestones = values.get("milestones", TrainConfig.milestones)
    values.update(overrides)
    if "iterations" in overrides and "milestones" not in overrides:
        values["milestones"] = rescale_milestones(base_milestones, base_iterations,
                                                  values["iterations"])
    if "crop_size" in overrides:  # the sizes the crop is cut from follow it, unless given
        scale_range, eval_resize = sizes_for_crop(overrides["crop_size"])
        derived = {"scale_range": scale_range, "eval_resize": eval_resize}
        values.update({k: v for k, v in derived.items() if k not in overrides})
    return TrainConfig.from_dict(values)


def depth_overrides(rule: dict[str, Any], model: str, recipe: str = "the recipe"
                    ) -> dict[str, Any]:
    """The values a recipe's ``[depth_overrides]`` table sets for ``model``: its keys other than
    ``family`` and ``min_depth``, for every registered net of that family with at least
    ``min_depth`` layers; nothing for other nets. Keyed by the network, not by its name, so
    ``resnet164`` with ``unit="full_preact"`` trains as ``preact_resnet164`` does."""
    if not rule:
        return {}
    if not _is_int(rule.get("min_depth")) or not isinstance(rule.get("family"), str):
        raise UserError(f"recipe {recipe}: [depth_overrides] needs family = \"cifar\" or "
                        f"\"imagenet\" and a whole-number min_depth, got {rule!r}.")
    try:
        info = model_info(model)
    except UnknownModelError:
        return {}  # the config names the unknown model where it is built, with suggestions
    if info.family != rule["family"] or info.depth < rule["min_depth"]:
        return {}
    return {k: v for k, v in rule.items() if k not in ("family", "min_depth")}


def sizes_for_crop(crop: int) -> tuple[tuple[int, int], int]:
    """``(scale_range, eval_resize)`` around a ``crop``: the paper's ImageNet sizes (shorter
    side 256-480 for training, 256 for evaluation, around a 224 crop) scaled by crop / 224."""
    return (round(256 * crop / 224), round(480 * crop / 224)), round(256 * crop / 224)


def crop_fits(crop: int, resize_lo: int, eval_resize: int) -> bool:
    """Whether a crop fits the shorter sides it is cut from and covers at least half of them
    (below that, a net trains on a small patch of each image and scores near chance)."""
    return all(crop <= side <= 2 * crop for side in (resize_lo, eval_resize))


def crop_mismatch(crop: int, scale_range, eval_resize: int) -> str:
    """Why --crop-size does not fit the sizes given with it, and the values that would."""
    (lo, hi), resize = sizes_for_crop(crop)
    return (f"--crop-size {crop} does not fit --scale-range {scale_range[0]},{scale_range[1]} "
            f"and --eval-resize {eval_resize}: each shorter side must lie between the crop and "
            f"twice the crop. For a {crop}-pixel crop use --scale-range {lo},{hi} and "
            f"--eval-resize {resize} (or give --crop-size alone, which sets them)")


def rescale_milestones(milestones, iterations: int, new_iterations: int) -> list[int]:
    """The milestones of an ``iterations``-step schedule moved to a ``new_iterations``-step
    one at the same fractions, so a shorter or longer run keeps the schedule's shape."""
    scale = new_iterations / iterations
    return [round(m * scale) for m in milestones]


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


def kept_milestones_note(stored: dict[str, Any], merged: TrainConfig,
                         explicit: set[str] | None = None) -> str | None:
    """The line a resumed run logs when its ``iterations`` changed and its milestones were
    kept (`merge_resumed_config`): a new run rescales them, a resumed one does not, since the
    iterations it already ran followed them."""
    given = set(merged.to_dict()) if explicit is None else set(explicit)
    if ("iterations" not in given or "milestones" in given
            or stored.get("iterations") == merged.iterations):
        return None
    kept = ",".join(map(str, merged.milestones)) or "none"
    scaled = ",".join(map(str, rescale_milestones(merged.milestones, stored["iterations"],
                                                  merged.iterations))) or "none"
    return (f"resumed with --iterations {merged.iterations} (was {stored['iterations']}): the "
            f"milestones stay {kept}, the run's own; give --milestones {scaled} to move them "
            f"to the same fractions of the new length")


# ------------------------------------------------ fine-tuning: defaults that fit the data
FINETUNE_VAL_FRACTION = 0.1  # held out for validation where the data has no val/ folder
FINETUNE_STEPS_PER_EPOCH = 4  # the batch is at most a quarter of the training images
FINETUNE_EPOCHS = 30  # passes over the training images
FINETUNE_LR_DIVISOR = 10  # of the recipe's learning rate


def finetune_val_split(images: int) -> int:
    """The images a fine-tuning run holds out of ``images``: a tenth, at least one, and never
    all of them."""
    return min(max(1, round(FINETUNE_VAL_FRACTION * images)), images - 1) if images > 1 else 0


def finetune_batch(batch_size: int, train_images: int, world_size: int = 1) -> int:
    """The recipe's batch, or less: at most a quarter of the training images, and a multiple
    of the ``world_size`` processes that share it."""
    batch = min(batch_size, train_images // FINETUNE_STEPS_PER_EPOCH)
    return max(world_size, batch - batch % world_size)


def finetune_before_data(cfg: TrainConfig, given: set[str]) -> tuple[TrainConfig, list[str]]:
    """Fine-tuning defaults decided before the data is read (``given``: the options the user
    set, which are never changed); returns the config and one log line per default."""
    if not cfg.init or "skip_bad_images" in given:
        return cfg, []
    return dataclasses.replace(cfg, skip_bad_images=True), [
        "fine-tuning default: --skip-bad-images (unreadable files are listed and left out; "
        "--no-skip-bad-images stops at the first)"]


def finetune_to_data(cfg: TrainConfig, given: set[str], *, images: int, val_folder: bool,
                     world_size: int = 1) -> tuple[TrainConfig, list[str]]:
    """Fine-tuning defaults fitted to ``images`` training images (``val_folder``: the data has
    its own val/ folder, which then validates): held-out images, batch, schedule, learning
    rate. Options in
    ``given`` are kept as the user set them; returns the config and one log line per default."""
    if not cfg.init:
        return cfg, []
    values, notes = {}, []
    if "val_split" not in given:
        values["val_split"] = 0 if val_folder else finetune_val_split(images)
        notes.append("fine-tuning default: --val-split 0 (validates on the data's val/ folder)"
                     if val_folder else
                     f"fine-tuning default: --val-split {values['val_split']} (a tenth of the "
                     f"{images} images held out for validation)")
    val = values.get("val_split", cfg.val_split)
    train = min(images - val, cfg.train_subset or images)
    if "batch_size" not in given and train > 0:
        values["batch_size"] = finetune_batch(cfg.batch_size, train, world_size)
        notes.append(f"fine-tuning default: --batch-size {values['batch_size']} (the "
                     f"recipe's {cfg.batch_size}, at most a quarter of the {train} training "
                     f"images)")
    batch = values.get("batch_size", cfg.batch_size)
    if "iterations" not in given and train >= batch:
        steps = train // batch
        values["iterations"] = FINETUNE_EPOCHS * steps
        said = f"{FINETUNE_EPOCHS} epochs of {steps} steps"
        if "milestones" not in given:
            values["milestones"] = tuple(rescale_milestones(cfg.milestones, cfg.iterations,
                                                            values["iterations"]))
            said += (f"; lr x {cfg.gamma} at iterations "
                     f"{','.join(map(str, values['milestones']))}")
        if "eval_every" not in given:  # a validation curve, not one point at the end
            values["eval_every"] = max(1, values["iterations"] // 10)
            said += f"; validation every {values['eval_every']}"
        notes.append(f"fine-tuning default: --iterations {values['iterations']} ({said})")
    if "lr" not in given:  # the pretrained weights are a good start: a large step undoes them
        values["lr"] = cfg.lr / FINETUNE_LR_DIVISOR
        notes.append(f"fine-tuning default: --lr {values['lr']:g} (the recipe's {cfg.lr:g} / "
                     f"{FINETUNE_LR_DIVISOR})")
    return dataclasses.replace(cfg, **values), notes
