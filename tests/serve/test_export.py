"""Exports reload from disk, keep a dynamic batch axis, carry the preprocessing record, and
compute what the eager model computes."""

from __future__ import annotations

import json
import warnings

import pytest
import torch

from resnets.checkpoint import load_checkpoint
from resnets.cli import main
from resnets.serve.export import ExportError, export_checkpoint, sample_inputs

TOL = 1e-4


@pytest.fixture(scope="module")
def eager(r8_checkpoint):
    return load_checkpoint(r8_checkpoint)


def check_reloaded(run, eager, n=5):
    """Run a reloaded export on a batch size it was not traced with; returns the max diff."""
    model, meta = eager
    x = sample_inputs(meta, n, seed=7)
    with torch.no_grad():
        return (run(x) - model(x)).abs().max().item()


def test_onnx_matches_eager_in_onnxruntime(r8_checkpoint, eager, tmp_path):
    pytest.importorskip("onnxscript")
    ort = pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    out = tmp_path / "r8.onnx"
    report = export_checkpoint(r8_checkpoint, out, "onnx", batch_size=2)
    assert report.batch_sizes == (2, 1, 3)
    assert report.max_abs_diff <= TOL and report.max_abs_logit > 0.1  # not a trivial output

    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    (inp,), (outp,) = session.get_inputs(), session.get_outputs()
    assert inp.name == "images" and outp.name == "logits"
    assert not isinstance(inp.shape[0], int)  # the batch axis is symbolic
    diff = check_reloaded(lambda x: torch.from_numpy(session.run(None, {"images": x.numpy()})[0]),
                          eager)
    assert diff <= TOL
    props = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    record = json.loads(props["resnets"])
    assert record["classes"] == eager[1]["classes"]
    assert record["normalization"]["kind"] == "per_pixel_mean"
    assert record["image_size"] == [3, 32, 32]
    # a consumer outside Python must know the order: scale to [0, 1], then subtract the mean
    assert "each uint8 pixel divided by 255 (to [0, 1]), then normalization.mean subtracted" \
        in record["input"]


def test_torchscript_matches_eager(r8_checkpoint, eager, tmp_path):
    out = tmp_path / "r8.pt"
    report = export_checkpoint(r8_checkpoint, out, "torchscript")
    assert report.max_abs_diff <= TOL
    extra = {"resnets.json": ""}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated upstream
        loaded = torch.jit.load(str(out), _extra_files=extra)
    assert json.loads(extra["resnets.json"])["model"] == "resnet8"
    assert check_reloaded(loaded, eager) <= TOL


def test_exported_program_matches_eager_via_cli(r8_checkpoint, eager, tmp_path, capsys):
    out = tmp_path / "r8.pt2"
    assert main(["export", "--checkpoint", str(r8_checkpoint), "--format", "exported-program",
                 "--out", str(out), "--batch-size", "3"]) == 0
    printed = capsys.readouterr().out
    assert "max abs difference vs eager: " in printed and "batch sizes 3, 1, 4" in printed
    extra = {"resnets.json": ""}
    program = torch.export.load(out, extra_files=extra)
    assert json.loads(extra["resnets.json"])["classes"][0] == "c0"
    assert check_reloaded(program.module(), eager) <= TOL


def test_batch_of_one_is_refused_and_unknown_format_named(r8_checkpoint, tmp_path):
    with pytest.raises(ExportError, match="at least 2"):
        export_checkpoint(r8_checkpoint, tmp_path / "x.pt2", "exported-program", batch_size=1)
    with pytest.raises(ExportError, match=r"archives are \.pt2 files"):
        export_checkpoint(r8_checkpoint, tmp_path / "x.pt", "exported-program")
    with pytest.raises(ExportError, match="unknown export format 'tflite'"):
        export_checkpoint(r8_checkpoint, tmp_path / "x.tfl", "tflite")


@pytest.mark.parametrize(("fmt", "name", "owner"), [("onnx", "x.pt2", "exported-program"),
                                                     ("torchscript", "x.onnx", "onnx"),
                                                     ("onnx", "x.PT", "torchscript")])
def test_a_suffix_of_another_format_is_refused(r8_checkpoint, tmp_path, capsys, fmt, name,
                                               owner):
    out = tmp_path / name
    assert main(["export", "--checkpoint", str(r8_checkpoint), "--format", fmt, "--out",
                 str(out)]) == 2
    err = capsys.readouterr().err
    assert f"--out {out} has the suffix of {owner} files, but --format is {fmt}" in err
    assert f"--format {owner}" in err and not out.exists()


def test_export_takes_a_shipped_weight_name_as_its_help_says(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["export", "--help"])
    assert "or a shipped weight name (resnet20.cifar10)" in " ".join(
        capsys.readouterr().out.split())
    out = tmp_path / "r20.pt"
    assert main(["export", "--checkpoint", "resnet20.cifar10", "--format", "torchscript",
                 "--out", str(out)]) == 0
    assert f"wrote {out} (torchscript)" in capsys.readouterr().out
