"""Export verification fails on NaN or inf logits (from the export or from the eager model),
and refuses a tolerance that makes the comparison meaningless."""

from __future__ import annotations

import math

import pytest
import torch

from resnets.checkpoint import LAST, load_checkpoint
from resnets.serve import export as export_module
from resnets.serve.export import ExportError, export_model


@pytest.fixture
def eager(trained):
    return load_checkpoint(trained / LAST)


def test_nan_logits_of_the_export_fail_verification(eager, tmp_path, monkeypatch):
    model, meta = eager
    load = export_module._load_torchscript

    def nan_on_the_last_batch(out):
        run = load(out)
        # The first batch sizes agree: only the last one is NaN, which max() used to drop.
        return lambda x: run(x) * (math.nan if len(x) == 3 else 1.0)

    monkeypatch.setattr(export_module, "_load_torchscript", nan_on_the_last_batch)
    out = tmp_path / "r8.pt"
    with pytest.raises(ExportError, match=r"could not be verified: NaN or inf logits from the "
                                          r"export at batch size 3\. The file is kept"):
        export_model(model, meta, out, "torchscript")
    assert out.is_file()


def test_a_diverged_model_fails_verification(eager, tmp_path):
    model, meta = eager
    with torch.no_grad():
        model.fc.bias.fill_(math.inf)
    with pytest.raises(ExportError, match="NaN or inf logits from the eager model at batch "
                                          "size 2, export at batch size 2"):
        export_model(model, meta, tmp_path / "r8.pt", "torchscript")


@pytest.mark.parametrize("tolerance", ["nan", "-1", "inf"])
def test_a_meaningless_tolerance_is_refused(cli, trained, tmp_path, tolerance):
    message = cli.error("export", "--checkpoint", trained / LAST, "--format", "torchscript",
                        "--out", tmp_path / "r8.pt", "--tolerance", tolerance)
    assert f"--tolerance must be a finite number >= 0, got {float(tolerance)}" in message
    assert not (tmp_path / "r8.pt").exists()
