"""`Predictor` and `resnets predict`: preprocessing as recorded, batching, bad files."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

from resnets.cli import main
from resnets.data import Normalization
from resnets.serve.predict import Failure, Prediction, Predictor, Preprocessing, find_images
from resnets.serve.weights import imagenet_preprocessing


@pytest.fixture
def image_tree(tmp_path):
    """Images in several formats and modes (one in a subfolder), a corrupt JPEG, an empty
    PNG, and a text file that a folder search must ignore."""
    rng = np.random.default_rng(0)
    root = tmp_path / "imgs"
    (root / "sub").mkdir(parents=True)
    Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(root / "a.png")
    Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(
        root / "sub" / "b.jpg", quality=95)
    Image.fromarray(rng.integers(0, 65536, (32, 32), dtype=np.uint16)).save(root / "c16.png")
    Image.fromarray(rng.integers(0, 256, (32, 32, 4), dtype=np.uint8), "RGBA").save(
        root / "d.webp")
    Image.fromarray(rng.integers(0, 256, (24, 24), dtype=np.uint8)).save(root / "e.gif")
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buf, "JPEG")
    (root / "bad.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])  # truncated
    (root / "empty.png").write_bytes(b"")
    (root / "notes.txt").write_text("not an image")
    return root


def test_folder_prediction_reports_bad_files_and_ranks_classes(r8_checkpoint, image_tree):
    paths, missing = find_images([image_tree])
    names = sorted(p.name for p in paths)
    assert names == ["a.png", "b.jpg", "bad.jpg", "c16.png", "d.webp", "e.gif", "empty.png"]
    assert missing == []

    predictor = Predictor.from_checkpoint(r8_checkpoint, batch_size=3)
    results = list(predictor.predict(paths, topk=4))
    assert [r.path for r in results] == [str(p) for p in paths]  # input order, one each
    failed = {r.path: r.error for r in results if isinstance(r, Failure)}
    assert set(failed) == {str(image_tree / "bad.jpg"), str(image_tree / "empty.png")}
    assert all(failed.values())
    predictions = [r for r in results if isinstance(r, Prediction)]
    assert len(predictions) == 5
    for p in predictions:
        classes = [c for c, _ in p.topk]
        probs = [v for _, v in p.topk]
        assert len(classes) == 4 and len(set(classes)) == 4
        assert set(classes) <= set(predictor.classes)
        assert probs == sorted(probs, reverse=True)
        assert all(0 < v <= 1 for v in probs) and sum(probs) <= 1 + 1e-6


def test_probabilities_equal_a_direct_forward(r8_checkpoint, image_tree):
    """The network sees the image resized (bilinear, like the training decoder) and
    normalized with the checkpoint's per-pixel mean: recompute that by hand."""
    predictor = Predictor.from_checkpoint(r8_checkpoint, batch_size=2)
    path = image_tree / "sub" / "b.jpg"
    with Image.open(path) as img:
        rgb = img.convert("RGB").resize((32, 32), Image.Resampling.BILINEAR)
    u8 = torch.from_numpy(np.array(rgb).transpose(2, 0, 1).copy())[None]  # (1, 3, 32, 32)
    norm = Normalization.from_dict(predictor.meta["normalization"])
    with torch.no_grad():
        expected = torch.softmax(predictor.model(norm.apply(u8)), dim=1)[0]
    (result,) = predictor.predict([path], topk=10)
    got = dict(result.topk)
    assert sum(got.values()) == pytest.approx(1.0, abs=1e-5)
    for i, name in enumerate(predictor.classes):
        assert got[name] == pytest.approx(expected[i].item(), abs=1e-6)


def test_batch_size_does_not_change_results(r8_checkpoint, image_tree):
    paths, _ = find_images([image_tree])
    one = list(Predictor.from_checkpoint(r8_checkpoint, batch_size=1).predict(paths))
    many = list(Predictor.from_checkpoint(r8_checkpoint, batch_size=64).predict(paths))
    assert [type(r) for r in one] == [type(r) for r in many]
    for a, b in zip(one, many, strict=True):
        if isinstance(a, Prediction):
            assert [c for c, _ in a.topk] == [c for c, _ in b.topk]
            assert np.allclose([v for _, v in a.topk], [v for _, v in b.topk], atol=1e-6)


def test_cli_prints_summary_and_final_json(r8_checkpoint, image_tree, tmp_path, capsys):
    gone = tmp_path / "gone.png"
    rc = main(["predict", "--checkpoint", str(r8_checkpoint), str(image_tree), str(gone),
               "--topk", "3", "--json", "--device", "cpu"])
    assert rc == 1  # some inputs failed
    out, err = capsys.readouterr()
    lines = out.strip().splitlines()
    assert lines[-2] == "8 images: 5 ok, 3 failed"
    record = json.loads(lines[-1])
    assert len(record["predictions"]) == 5
    assert all(len(p["topk"]) == 3 and set(p["topk"][0]) == {"class", "prob"}
               for p in record["predictions"])
    failed = {f["path"]: f["error"] for f in record["failed"]}
    assert failed[str(gone)] == "no such file or folder"
    assert str(image_tree / "bad.jpg") in failed and str(image_tree / "bad.jpg") in err


def test_cli_all_good_exits_zero_and_empty_folder_is_an_error(r8_checkpoint, image_tree,
                                                              tmp_path, capsys):
    assert main(["predict", "--checkpoint", str(r8_checkpoint), str(image_tree / "a.png"),
                 "--device", "cpu"]) == 0
    assert capsys.readouterr().out.strip().endswith("1 images: 1 ok, 0 failed")
    (tmp_path / "empty").mkdir()
    assert main(["predict", "--checkpoint", str(r8_checkpoint), str(tmp_path / "empty")]) == 2
    assert "no image files found" in capsys.readouterr().err


def test_imagenet_preprocessing_matches_torchvision_eval_transform():
    """resize 256 + center crop 224 + ImageNet mean/std, as torchvision's weights expect."""
    from torchvision.models import ResNet18_Weights

    meta = imagenet_preprocessing()  # torchvision's classic 256 / 224 / bilinear
    pre = Preprocessing.from_meta(meta)
    rng = np.random.default_rng(1)
    img = Image.fromarray(rng.integers(0, 256, (300, 410, 3), dtype=np.uint8))
    ours = Normalization.from_dict(meta["normalization"]).apply(torch.from_numpy(pre(img))[None])
    theirs = ResNet18_Weights.IMAGENET1K_V1.transforms()(img)[None]
    assert ours.shape == theirs.shape == (1, 3, 224, 224)
    assert (ours - theirs).abs().max().item() < 1e-5
