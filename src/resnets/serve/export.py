"""Export a checkpoint's network to ONNX, TorchScript or a torch.export program, and check it.

The exported graph is the bare network: its input is a normalized float32 (B, 3, H, W)
batch (pixels scaled to [0, 1], then the mean subtracted: `INPUT_DOC`), its output the
(B, num_classes) logits, and the batch axis is dynamic. How images become that input (the
checkpoint's ``normalization``, ``image_size``, ``preprocessing``) travels inside the file
as a JSON record named ``resnets``: ONNX ``metadata_props``, a TorchScript extra file
``resnets.json``, a torch.export extra file ``resnets.json``.

Every export is reloaded from disk and run on images that look like the checkpoint's inputs
(smooth random colour fields, normalized with the checkpoint's own statistics) at several
batch sizes; the largest absolute difference to the eager model is reported and must stay
within a tolerance (1e-4 by default).

ONNX uses torch's default exporter (``dynamo=True``, built on torch.export; it needs
onnxscript, and it works offline); onnxruntime runs the check. Both come with the
``export`` extra: ``pip install "resnets[export]"``. TorchScript (``torch.jit.trace``) is
deprecated in recent torch releases; it is kept for C++ / mobile consumers, and its
deprecation warnings are silenced here.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..checkpoint import load_checkpoint
from ..data.device_loader import Normalization
from ..errors import UserError, printable

__all__ = ["FORMATS", "ExportError", "ExportReport", "check_out", "export_checkpoint",
           "export_model", "sample_inputs"]

FORMATS = ("onnx", "torchscript", "exported-program")
META_NAME = "resnets"  # ONNX metadata key; TorchScript / torch.export extra file resnets.json
INPUT_NAME, OUTPUT_NAME = "images", "logits"
# The file name suffixes of each format: a suffix of another format is refused (an ONNX file
# named x.pt2 would fail in torch.export.load); torch.export.load insists on .pt2.
SUFFIXES = {"onnx": (".onnx",), "torchscript": (".pt", ".pth", ".ts"),
            "exported-program": (".pt2",)}
# How pixels become the exported graph's input (`Normalization.apply`), for the embedded
# record: a consumer outside Python must scale to [0, 1] before subtracting the mean.
INPUT_DOC = (f"{INPUT_NAME}: float32 (B, 3, H, W), RGB; each uint8 pixel divided by 255 (to "
             f"[0, 1]), then normalization.mean subtracted (a (3, H, W) image for "
             f"per_pixel_mean, one value per channel for channel_mean_std), then divided by "
             f"normalization.std when it is given")
# Records copied into the exported file: what a consumer needs to prepare inputs.
_META_KEYS = ("model", "model_kwargs", "classes", "normalization", "image_size",
              "preprocessing")


class ExportError(UserError):
    """An export could not be written, or does not compute what the eager model computes."""


@dataclass
class ExportReport:
    path: Path
    format: str
    max_abs_diff: float  # largest |exported - eager| over all checked logits
    max_abs_logit: float  # scale of the eager logits, to read the difference against
    batch_sizes: tuple[int, ...]  # batch sizes the reloaded export was run with
    tolerance: float


def sample_inputs(meta: dict[str, Any], n: int, seed: int = 0) -> torch.Tensor:
    """``n`` normalized float32 (n, 3, H, W) inputs that look like photos to the network:
    smooth random colour fields with some texture, as uint8, through the checkpoint's
    normalization. Pure noise would push activations to ranges real images never reach."""
    _, h, w = meta["image_size"]
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, 4, 4, generator=g) * 255  # (n, 3, 4, 4)
    smooth = F.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=False)
    texture = torch.randn(n, 3, h, w, generator=g) * 12
    images = (smooth + texture).round().clamp(0, 255).to(torch.uint8)  # (n, 3, H, W)
    return Normalization.from_dict(meta["normalization"]).apply(images)


def export_checkpoint(checkpoint: str | os.PathLike, out: str | os.PathLike, fmt: str,
                      **kwargs) -> ExportReport:
    """Load ``checkpoint`` on the CPU and `export_model` it to ``out``."""
    check_out(out, kwargs.get("overwrite", False))  # before the checkpoint is read
    check_suffix(out, fmt)
    model, meta = load_checkpoint(checkpoint, device="cpu")
    return export_model(model, meta, out, fmt, **kwargs)


def check_out(out: str | os.PathLike, overwrite: bool = False) -> None:
    """Refuse an ``out`` that is a folder, lies below a file, or exists (unless
    ``overwrite``): an export never replaces a file it was not told to."""
    out = Path(out)
    try:
        str(out).encode("utf-8")  # torch's writers take the path as UTF-8 text
    except UnicodeEncodeError:
        raise ExportError(f"--out {printable(out)} is not a UTF-8 path (a byte shown as \\xNN "
                          f"is not UTF-8 text), which torch's exporters need. Choose another "
                          f"--out, e.g. model.onnx, and rename the file afterwards.") from None
    if out.is_dir():
        raise ExportError(f"--out {out} is a folder; give the file to write, e.g. "
                          f"{out / 'model.onnx'}.")
    for parent in out.parents:
        if parent.exists() and not parent.is_dir():
            raise ExportError(f"--out {out}: {parent} is a file, not a folder. Choose a path in "
                              f"a folder you can write to.")
        if parent.exists():
            break
    if (out.exists() or out.is_symlink()) and not overwrite:
        raise ExportError(f"--out {out} already exists. Pass --overwrite to replace it, or "
                          f"choose another --out.")


def check_suffix(out: str | os.PathLike, fmt: str) -> None:
    """Refuse an ``out`` whose suffix belongs to another format than ``fmt`` (or, for
    exported-program, any suffix but .pt2)."""
    if fmt not in FORMATS:
        raise ExportError(f"unknown export format {fmt!r}; use one of {', '.join(FORMATS)}.")
    out = Path(out)
    suffix = out.suffix.lower()
    owner = next((f for f, ends in SUFFIXES.items() if suffix in ends), None)
    if fmt == "exported-program" and suffix != ".pt2":
        raise ExportError(f"--out {out}: torch.export archives are .pt2 files (torch.export.load "
                          f"expects the suffix); use e.g. {out.with_suffix('.pt2')}.")
    if owner not in (None, fmt):
        raise ExportError(f"--out {out} has the suffix of {owner} files, but --format is {fmt}; "
                          f"name it e.g. {out.with_suffix(SUFFIXES[fmt][0])}, or pass --format "
                          f"{owner}.")


def export_model(model: nn.Module, meta: dict[str, Any], out: str | os.PathLike, fmt: str, *,
                 batch_size: int = 2, verify: bool = True, tolerance: float = 1e-4,
                 overwrite: bool = False) -> ExportReport:
    """Write ``model`` (fp32, eval mode, CPU) as ``fmt`` to ``out``, then reload the file and
    compare its logits to the eager model's at batch sizes ``batch_size``, 1 and
    ``batch_size + 1``. An existing ``out`` is refused unless ``overwrite``.

    ``batch_size`` is the example batch the graph is traced with; it must be at least 2,
    since torch.export treats a size-1 dimension as fixed. Raises `ExportError` when the
    difference exceeds ``tolerance`` (the file is kept for inspection) or when the export
    tooling is missing.
    """
    check_suffix(out, fmt)
    if not (isinstance(tolerance, int | float) and math.isfinite(tolerance) and tolerance >= 0):
        raise ExportError(f"--tolerance must be a finite number >= 0, got {tolerance}; a NaN "
                          f"or negative tolerance would accept or refuse every export. To skip "
                          f"the check, pass --no-verify.")
    if batch_size < 2:
        raise ExportError(f"--batch-size must be at least 2 for a dynamic batch axis, got "
                          f"{batch_size} (torch.export fixes a size-1 dimension).")
    missing = [k for k in ("image_size", "normalization") if k not in meta]
    if missing:
        raise ExportError(f"the checkpoint has no {', '.join(missing)} record, needed to "
                          f"describe the exported model's input.")
    check_out(out, overwrite)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    model = model.float().eval().cpu()
    record = json.dumps({**{k: meta[k] for k in _META_KEYS if k in meta},
                         "input": INPUT_DOC,
                         "output": f"{OUTPUT_NAME}: float32 (B, num_classes)"})
    example = sample_inputs(meta, batch_size, seed=0)
    writer, reloader = {"onnx": (_write_onnx, _load_onnx),
                        "torchscript": (_write_torchscript, _load_torchscript),
                        "exported-program": (_write_exported, _load_exported)}[fmt]
    writer(model, example, out, record)
    sizes = tuple(dict.fromkeys((batch_size, 1, batch_size + 1)))
    if not verify:
        return ExportReport(out, fmt, float("nan"), float("nan"), (), tolerance)
    run = reloader(out)
    diff = scale = 0.0
    nonfinite = []
    with torch.no_grad():
        for i, n in enumerate(sizes):
            x = sample_inputs(meta, n, seed=1 + i)
            ref, got = model(x), run(x)
            # max() keeps its first argument when the other is NaN: test finiteness apart.
            for name, logits in (("eager model", ref), ("export", got)):
                if not bool(torch.isfinite(logits).all()):
                    nonfinite.append(f"{name} at batch size {n}")
            if not nonfinite:
                diff = max(diff, (got - ref).abs().max().item())
                scale = max(scale, ref.abs().max().item())
    if nonfinite:
        raise ExportError(f"{out} ({fmt}) could not be verified: NaN or inf logits from the "
                          f"{', '.join(nonfinite)}. The file is kept for inspection; check "
                          f"the checkpoint's weights (a diverged run) before using it.")
    report = ExportReport(out, fmt, diff, scale, sizes, tolerance)
    if not diff <= tolerance:
        raise ExportError(f"{out} ({fmt}) differs from the eager model by {diff:.3g} (logits "
                          f"up to {scale:.3g}), more than the tolerance {tolerance:g}. The "
                          f"file is kept for inspection; report this with the torch version.")
    return report


# --------------------------------------------------------------------------------------------
# One writer and one reloader per format; a reloader returns a function of a CPU batch.

def _batch_dim():
    return torch.export.Dim("batch", min=1)


def _write_onnx(model: nn.Module, example: torch.Tensor, out: Path, record: str) -> None:
    try:
        import onnxscript  # noqa: F401  (the dynamo exporter needs it; fail early and clearly)
    except ImportError:
        raise ExportError('ONNX export needs onnx and onnxscript (and onnxruntime to check '
                          'the result): pip install "resnets[export]".') from None
    program = torch.onnx.export(model, (example,), input_names=[INPUT_NAME],
                                output_names=[OUTPUT_NAME], dynamic_shapes=({0: _batch_dim()},),
                                dynamo=True, verbose=False)
    program.model.metadata_props[META_NAME] = record
    # One self-contained file below protobuf's 2 GB limit; larger nets keep a .data sidecar.
    big = sum(p.numel() * p.element_size() for p in model.parameters()) > 1.5 * 2**30
    program.save(out, external_data=big)


def _load_onnx(out: Path) -> Callable[[torch.Tensor], torch.Tensor]:
    try:
        import onnxruntime as ort  # optional (resnets[export]): imported where it is used
    except ImportError:
        raise ExportError(f'{out} was written, but checking it needs onnxruntime: pip install '
                          f'"resnets[export]", or pass --no-verify.') from None
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])

    def run(x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(session.run([OUTPUT_NAME], {INPUT_NAME: x.numpy()})[0])

    return run


def _write_torchscript(model: nn.Module, example: torch.Tensor, out: Path, record: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit's deprecation notices
        traced = torch.jit.trace(model, example)
        torch.jit.save(traced, str(out), _extra_files={f"{META_NAME}.json": record})


def _load_torchscript(out: Path) -> Callable[[torch.Tensor], torch.Tensor]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return torch.jit.load(str(out), map_location="cpu")


def _write_exported(model: nn.Module, example: torch.Tensor, out: Path, record: str) -> None:
    program = torch.export.export(model, (example,), dynamic_shapes=({0: _batch_dim()},))
    torch.export.save(program, out, extra_files={f"{META_NAME}.json": record})


def _load_exported(out: Path) -> Callable[[torch.Tensor], torch.Tensor]:
    return torch.export.load(out).module()
