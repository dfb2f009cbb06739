"""Every checkpoint is checked against one schema when it is read: whatever its metadata says,
reading gives a record the package can use, or one clear "not a valid resnets checkpoint: ..."
error; --resume auto skips such a file as unreadable."""

from __future__ import annotations

import json
import random
import shutil
import warnings

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from resnets.checkpoint import LAST, PREVIOUS, load_checkpoint, read_checkpoint, restore_rng
from resnets.errors import CheckpointError
from resnets.train.rundir import find_resume_checkpoint

NESTED = b"[" * 100_000 + b"]" * 100_000


def _delete(*keys):
    def change(record):
        target = record
        for k in keys[:-1]:
            target = target[k]
        del target[keys[-1]]

    return change


def _set(value, *keys):
    def change(record):
        target = record
        for k in keys[:-1]:
            target = target[k]
        target[keys[-1]] = value

    return change


CASES = {
    "list": (lambda r: [r], "its metadata is a JSON list, not an object"),
    "nested": (lambda r: NESTED, "its metadata is nested too deeply"),
    "no model": (_delete("model"), "no 'model' name"),
    "kwargs list": (_set(["shortcut"], "model_kwargs"), "model_kwargs is list, not an object"),
    "kwargs unknown": (_set({"num_classes": 10, "bogus": 1}, "model_kwargs"),
                       "model 'resnet8' with model_kwargs {'num_classes': 10, 'bogus': 1} "
                       "cannot be built"),
    "kwargs type": (_set("ten", "model_kwargs", "num_classes"),
                    "model_kwargs.num_classes must be 1..100000, got 'ten'"),
    "1e11 classes": (_set(10**11, "model_kwargs", "num_classes"),
                     "model_kwargs.num_classes must be 1..100000, got 100000000000"),
    "weights kwarg": (_set("cifar10", "model_kwargs", "weights"),
                      "model_kwargs names weights to load"),
    "2-d image_size": (_set([3, 32], "image_size"), "image_size must be [3, H, W]"),
    "huge image_size": (_set([3, 20000, 20000], "image_size"), "image_size must be [3, H, W]"),
    "few classes": (lambda r: r.update(classes=r["classes"][:5]),
                    "5 class names for a network with 10 outputs"),
    "optimizer groups": (_set("x", "optimizer", "param_groups"),
                         "optimizer.param_groups is not a list of SGD parameter groups"),
    "optimizer list": (_set([], "optimizer"), "a training checkpoint without an optimizer record"),
    "python rng": (_set([3, [1, 2], None], "rng", "python"), "the python RNG record is malformed"),
    "numpy rng": (_set(["MT19937", "x", 0, 0.0], "rng", "numpy"),
                  "the numpy RNG record is malformed"),
    "no train_state": (_delete("train_state"), "a training checkpoint without 'train_state'"),
    "bad config": (_set(float("nan"), "config", "lr"), "config: invalid training option"),
    "normalization": (_set({"kind": "per_pixel_mean", "mean": [1, 2, 3]}, "normalization"),
                      "normalization: "),
}


@pytest.mark.parametrize("case", CASES)
def test_each_malformed_record_is_one_clear_error(trained, tmp_path, with_metadata, case):
    change, fragment = CASES[case]
    path = with_metadata(trained / LAST, tmp_path / "bad.safetensors", change)
    with pytest.raises(CheckpointError) as info:
        read_checkpoint(path)
    assert f"{path} is not a valid resnets checkpoint: {fragment}" in str(info.value)


def test_an_unknown_tensor_prefix_is_refused(trained, tmp_path):
    data = (trained / LAST).read_bytes()
    n = int.from_bytes(data[:8], "little")
    metadata = json.loads(data[8 : 8 + n])["__metadata__"]
    tensors = {**st_load(data), "evil.payload": torch.zeros(3)}
    path = tmp_path / "bad.safetensors"
    path.write_bytes(st_save(tensors, metadata=metadata))
    with pytest.raises(CheckpointError, match="not a valid resnets checkpoint: tensor "
                                              "'evil.payload' is none of model"):
        read_checkpoint(path)


def test_resume_auto_skips_a_deeply_nested_record(cli, tiny_train_args, trained, tmp_path,
                                                  with_metadata):
    run = shutil.copytree(trained, tmp_path / "run")
    with_metadata(trained / LAST, run / LAST, lambda r: NESTED)
    with pytest.warns(UserWarning, match="skipping damaged checkpoint: .*nested too deeply"):
        code, out, err = cli(*tiny_train_args(run, "--iterations", "3", "--resume", "auto"))
    assert code == 0, err
    assert f"resumed from {run / PREVIOUS} at iteration 1" in out


# ------------------------------------------------------------------ any mutation of the record

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats() | st.text(max_size=4),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner,
                                                                max_size=3),
    max_leaves=6)


def _paths(value, prefix=(), depth=3):
    """Every key path into ``value`` down to ``depth`` (long lists count as one value)."""
    yield prefix
    if depth == 0:
        return
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _paths(v, (*prefix, k), depth - 1)
    elif isinstance(value, list) and len(value) <= 4:
        for i, v in enumerate(value):
            yield from _paths(v, (*prefix, i), depth - 1)


@pytest.fixture(scope="module")
def original(trained):
    data = (trained / LAST).read_bytes()
    n = int.from_bytes(data[:8], "little")
    return json.loads(json.loads(data[8 : 8 + n])["__metadata__"]["resnets"])


@settings(max_examples=60, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_mutated_record_reads_cleanly_or_is_refused(trained, tmp_path, with_metadata,
                                                        original, data):
    paths = sorted(_paths(original), key=repr)
    path = data.draw(st.sampled_from(paths), label="path")
    action = data.draw(st.sampled_from(["replace", "delete"] if path else ["replace"]),
                       label="action")
    value = data.draw(JSON, label="value") if action == "replace" else None

    def mutate(record):
        if not path:
            return value if value is not None else []
        target = record
        for k in path[:-1]:
            target = target[k]
        if action == "delete":
            target.pop(path[-1]) if isinstance(target, dict) else target.pop(path[-1])
        else:
            target[path[-1]] = value

    # The mutated record is the newest checkpoint of a run whose previous one is valid.
    run = tmp_path / "run"
    run.mkdir(exist_ok=True)
    shutil.copy(trained / PREVIOUS, run / PREVIOUS)
    ckpt_path = with_metadata(trained / LAST, run / LAST, mutate)
    try:
        ckpt = read_checkpoint(ckpt_path)
    except CheckpointError as e:
        assert str(ckpt_path) in str(e)
        ckpt = None
    if ckpt is not None:
        # Read as valid: then what the package does with a checkpoint works too.
        model, meta = load_checkpoint(ckpt_path)
        assert len(meta["classes"]) == model.fc.out_features
        if ckpt.rng is not None:
            saved = (torch.get_rng_state(), np.random.get_state(), random.getstate())
            try:
                restore_rng(ckpt.rng)
            finally:
                torch.set_rng_state(saved[0])
                np.random.set_state(saved[1])
                random.setstate(saved[2])
    # --resume auto: the mutated file where it is a resumable checkpoint at least as new as
    # the previous one (a tie keeps last), otherwise the older valid one; a warning names the
    # mutated file when it cannot be read.
    older = read_checkpoint(run / PREVIOUS).iteration
    resumable = ckpt is not None and ckpt.optimizer_state is not None
    expected = run / LAST if resumable and ckpt.iteration >= older else run / PREVIOUS
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        found_ckpt, found = find_resume_checkpoint(run)
    assert found == expected
    assert found_ckpt.iteration == (ckpt.iteration if expected.name == LAST else older)
    damaged = [str(w.message) for w in caught if "skipping damaged checkpoint" in str(w.message)]
    assert len(damaged) == (ckpt is None) and all(str(ckpt_path) in m for m in damaged)
