import pickle
import random

import numpy as np
import pytest
import torch

from resnets import create_model
from resnets.checkpoint import (
    LAST,
    PREVIOUS,
    load_checkpoint,
    load_torch_weights,
    read_checkpoint,
    restore_rng,
    save_checkpoint,
)
from resnets.errors import CheckpointError
from resnets.train.rundir import find_resume_checkpoint, rotate_and_save

META = {"model": "resnet8", "model_kwargs": {"num_classes": 10}, "classes": list("abcdefghij"),
        "iteration": 7, "config": {"seed": 0}, "metrics": {"train": {}, "val": {}},
        "train_state": {"in_warmup": False, "nonfinite_in_row": 0, "nonfinite_total": 0,
                        "best_val_error": None, "elapsed_s": 1.5}}
# The metric accumulators every training checkpoint carries.
WINDOW = {"loss": torch.tensor(0.0, dtype=torch.float64), "wrong": torch.tensor(0),
          "seen": torch.tensor(0), "steps": torch.tensor(0)}


def _trained_pair():
    torch.manual_seed(0)
    model = create_model("resnet8")
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])
    for _ in range(2):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return model, opt


def test_round_trip_restores_model_optimizer_and_rng(tmp_path):
    model, opt = _trained_pair()
    torch.manual_seed(123)
    random.seed(5)
    np.random.seed(9)
    path = save_checkpoint(tmp_path / "c.safetensors", model=model, meta=META, optimizer=opt,
                           extra={**WINDOW, "acc": torch.tensor(3.5)},
                           include_rng=True)
    expected = (torch.rand(3), random.random(), np.random.rand())

    ckpt = read_checkpoint(path)
    assert ckpt.iteration == 7 and ckpt.meta["classes"] == META["classes"]
    assert ckpt.meta["versions"]["torch"] == torch.__version__
    for k, v in model.state_dict().items():
        assert torch.equal(ckpt.model_state[k], v), k
    model2 = create_model("resnet8")
    opt2 = torch.optim.SGD(model2.parameters(), lr=0.5, momentum=0.9, weight_decay=1e-4)
    opt2.load_state_dict(ckpt.optimizer_state)
    s1, s2 = opt.state_dict(), opt2.state_dict()
    assert s1["param_groups"] == s2["param_groups"]
    for i in s1["state"]:
        assert torch.equal(s1["state"][i]["momentum_buffer"], s2["state"][i]["momentum_buffer"])
    assert ckpt.extra["acc"].item() == 3.5
    restore_rng(ckpt.rng)
    assert torch.equal(torch.rand(3), expected[0])
    assert random.random() == expected[1] and np.random.rand() == expected[2]


def test_load_checkpoint_gives_eval_model_with_same_logits(tmp_path):
    model, _ = _trained_pair()
    save_checkpoint(tmp_path / "w.safetensors", model=model, meta=META)
    loaded, meta = load_checkpoint(tmp_path / "w.safetensors")
    assert not loaded.training and meta["model"] == "resnet8"
    x = torch.randn(2, 3, 32, 32)
    model.eval()
    assert torch.equal(loaded(x), model(x))


@pytest.mark.parametrize("size", [0, 10, 4000])
def test_truncated_checkpoint_is_a_clear_error(tmp_path, size):
    model, _ = _trained_pair()
    good = save_checkpoint(tmp_path / "c.safetensors", model=model, meta=META)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(good.read_bytes()[:size])
    with pytest.raises(CheckpointError, match=r"bad\.safetensors is unreadable .*truncated"):
        read_checkpoint(bad)


def test_missing_checkpoint_names_the_path(tmp_path):
    with pytest.raises(CheckpointError, match="nope.safetensors does not exist"):
        read_checkpoint(tmp_path / "nope.safetensors")


def test_rotation_and_auto_resume_skip_damaged_files(tmp_path):
    model, opt = _trained_pair()
    for it in (10, 20):
        rotate_and_save(tmp_path, model=model, optimizer=opt, meta={**META, "iteration": it},
                        extra=WINDOW)
    assert read_checkpoint(tmp_path / LAST).iteration == 20
    assert read_checkpoint(tmp_path / PREVIOUS).iteration == 10
    ckpt, path = find_resume_checkpoint(tmp_path)
    assert (ckpt.iteration, path.name) == (20, LAST)
    (tmp_path / LAST).write_bytes((tmp_path / LAST).read_bytes()[:100])
    with pytest.warns(UserWarning, match="skipping damaged checkpoint"):
        ckpt, path = find_resume_checkpoint(tmp_path)
    assert (ckpt.iteration, path.name) == (10, PREVIOUS)
    # Leftover temporary files of a killed writer are never candidates.
    (tmp_path / f".{LAST}.tmp-999").write_bytes(b"partial")
    (tmp_path / LAST).unlink()
    assert find_resume_checkpoint(tmp_path)[0].iteration == 10


class _RunsCode:
    def __reduce__(self):
        import os

        return (os.system, ("touch PWNED_MARKER",))


def test_pickle_that_runs_code_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump({"w": _RunsCode()}, f)
    with pytest.raises(CheckpointError, match="needs arbitrary unpickling"):
        load_torch_weights(path)
    assert not (tmp_path / "PWNED_MARKER").exists()


def test_plain_state_dict_pth_loads(tmp_path):
    model = create_model("resnet8")
    torch.save(model.state_dict(), tmp_path / "ok.pth")
    sd = load_torch_weights(tmp_path / "ok.pth")
    assert set(sd) == set(model.state_dict())
