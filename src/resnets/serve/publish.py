"""Turn a finished training run into named pretrained weights shipped with the package.

The published file is the run's final (last-iteration) weights, the paper's protocol; `best`
is chosen on validation data and stays in the run directory. The file's record gains the
fingerprint of the training data (same tensors), so `resnets eval --split val` can refuse
other data. The manifest records the sha256 and everything `resnets.models.pretrained`
promises about a weight.

Its validation error (``val_error``) is the one number per net that the experiment tables,
the report and the README give: the error logged by training at the last iteration, in the
run's precision (``val_error_measurement`` says so). The same weights measured at publishing
by `resnets eval` (fp32) are kept as ``val_error_fp32``: what a user reproduces (exactly on the
same CPU kernels; another CPU's rounding may flip a near-tie image).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from ..analysis.curves import read_metrics, segment_devices
from ..checkpoint import FINAL, LAST, build_model, read_newest, save_checkpoint
from ..data import data_fingerprint, load_image_set
from ..errors import UserError
from ..eval.checkpoint_eval import evaluate_checkpoint
from ..models import count_params, create_model
from ..models.pretrained import MANIFEST, REQUIRED_META, WEIGHTS_DIR, Weights

# What `val_error` is, in the weights' own metadata.
VAL_ERROR_MEASUREMENT = ("top-1 error on the held-out validation split logged by training at "
                         "iteration {iteration} ({precision}); the number experiment tables "
                         "and the README give. val_error_fp32: the same weights measured by "
                         "`resnets eval` in fp32 at publishing")

# How the shared CIFAR-10 copy differs from the original release (see results/README.md).
SHARED_CIFAR10 = ("CIFAR-10 training images as JPEG (quality about 75, chroma subsampled; "
                  "the 50k images of the shared cifar10-jpg-train.tar.xz)")


def publish_run(run_dir: str | Path, *, name: str, data: str = SHARED_CIFAR10,
                dest: str | Path | None = None, source_data: str | None = None,
                cache_dir: str | None = None) -> Weights:
    """Copy ``run_dir``'s final weights to ``dest/<name>.safetensors`` and list them in the
    manifest (replacing an entry of the same name). ``data`` describes the training data in
    words; ``source_data`` is where to read its validation split (default: the run's
    ``--data``)."""
    run_dir, dest = Path(run_dir), Path(dest) if dest is not None else WEIGHTS_DIR
    model_name, _, dataset = name.partition(".")
    if not dataset:
        raise UserError(f"weights are named <model>.<dataset>, e.g. resnet20.cifar10; got "
                        f"{name!r}.")
    newest = read_newest(run_dir)
    if newest is None:
        raise UserError(f"{run_dir} holds no readable {FINAL} or {LAST}: nothing to publish.")
    source, ckpt = newest
    meta, cfg = ckpt.meta, ckpt.meta.get("config")
    if cfg is None or ckpt.iteration < cfg["iterations"]:
        raise UserError(f"{source} is not a finished training run (iteration "
                        f"{ckpt.iteration} of {cfg and cfg['iterations']}); publish a run "
                        f"that reached its last iteration.")
    if meta["model"] != model_name:
        raise UserError(f"{run_dir} trained {meta['model']!r}; name its weights "
                        f"{meta['model']}.{dataset}, not {name!r}.")
    rows = read_metrics(run_dir)
    val = [r for r in rows if r["kind"] == "val" and r["iteration"] == ckpt.iteration]
    train = [r for r in rows if r["kind"] == "train" and r["iteration"] == ckpt.iteration]
    if not val or not train:
        raise UserError(f"{run_dir}/metrics.jsonl has no training and validation record at "
                        f"iteration {ckpt.iteration}; the weights' errors would be unknown.")
    devices = segment_devices(rows)
    data_path = source_data or cfg["data"]
    measured = evaluate_checkpoint(str(source), data=data_path, split="val", device="cpu",
                                   cache_dir=cache_dir or cfg.get("cache_dir"))
    # The checkpoint's own fingerprint when it has one (the evaluation just checked that the
    # data matches it); a run from before fingerprints gets that of the data it was measured
    # on, whose validation error is the evidence that it is the run's data.
    fingerprint = meta.get("data_fingerprint") or data_fingerprint(load_image_set(
        data_path, split="train", cache_dir=cache_dir or cfg.get("cache_dir"),
        skip_bad_images=cfg.get("skip_bad_images", False)))
    record = {
        "model": meta["model"], "model_kwargs": meta["model_kwargs"], "dataset": dataset,
        "classes": meta["classes"], "normalization": meta["normalization"],
        "image_size": meta["image_size"], "recipe": cfg["recipe"], "config": cfg,
        "iterations": ckpt.iteration, "val_error": val[-1]["val_error"],
        "val_error_measurement": VAL_ERROR_MEASUREMENT.format(
            iteration=ckpt.iteration, precision=_precisions(rows)),
        "val_error_fp32": measured["top1_error"],
        "val_top5_error_fp32": measured["top5_error"], "val_images": measured["n"],
        "val_split": f"{cfg['val_split']} images held out of the training set by seed "
                     f"{cfg['seed']} (never trained on); not the CIFAR-10 test set",
        "train_error": train[-1]["train_error"],
        "num_params": count_params(create_model(meta["model"], **meta["model_kwargs"])),
        "data": data, "data_fingerprint": fingerprint, "device": devices or [meta["device"]],
        "train_time_s": meta["train_state"]["elapsed_s"], "versions": meta.get("versions"),
    }
    missing = [k for k in REQUIRED_META if record.get(k) is None]
    if missing:
        raise UserError(f"{source} lacks {', '.join(missing)}; cannot publish it.")
    dest.mkdir(parents=True, exist_ok=True)
    file = f"{name}.safetensors"
    model = build_model(meta)
    model.load_state_dict(ckpt.model_state, strict=True)
    # The run's weights, their record kept (versions of the run included) plus the fingerprint.
    save_checkpoint(dest / file, model=model,
                    meta={**meta, "kind": "weights", "data_fingerprint": fingerprint})
    sha = hashlib.sha256((dest / file).read_bytes()).hexdigest()
    path = dest / MANIFEST
    entries = json.loads(path.read_text())["weights"] if path.is_file() else []
    entries = [e for e in entries if e["name"] != name]
    entries.append({"name": name, "file": file, "sha256": sha, "meta": record})
    entries.sort(key=lambda e: e["name"])
    path.write_text(json.dumps({"weights": entries}, indent=1) + "\n")
    return Weights(name, file, sha, record, dest)


def _precisions(rows: list[dict]) -> str:
    """The precision(s) the run trained and validated in, from its segment records."""
    found = list(dict.fromkeys(str(r["precision"]) for r in rows
                               if r.get("kind") == "segment" and r.get("precision")))
    return f"{' then '.join(found)} autocast" if found else "the run's precision"
