"""`Predictor` and `resnets predict`: preprocessing as recorded, batching, bad files."""

from __future__ import annotations

import io
import json
import os
import signal

import numpy as np
import pytest
import torch
from PIL import Image

from resnets.cli import main
from resnets.data import Normalization
from resnets.serve.predict import (
    EnsemblePredictor,
    Failure,
    Prediction,
    Predictor,
    Preprocessing,
    find_images,
)
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


# ------------------------------------------------------------------ ensembles (Table 5)

@pytest.fixture(scope="module")
def r8_other(tmp_path_factory, randomize_bn):
    """Another resnet8 with the same classes but its own preprocessing: per-channel
    mean/std normalization and 40x40 inputs (the net pools globally, so any size runs)."""
    from resnets import create_model
    from resnets.checkpoint import save_checkpoint

    torch.manual_seed(1)
    model = randomize_bn(create_model("resnet8"), seed=1)
    meta = {"kind": "weights", "model": "resnet8", "model_kwargs": {"num_classes": 10},
            "classes": [f"c{i}" for i in range(10)], "image_size": [3, 40, 40],
            "normalization": Normalization("channel_mean_std", [0.3, 0.5, 0.6],
                                           [0.2, 0.25, 0.3]).to_dict()}
    path = tmp_path_factory.mktemp("r8-other") / "other.safetensors"
    save_checkpoint(path, model=model, meta=meta)
    return path


def _all_probs(predictor, paths):
    """Every class probability of each readable path: {path: tensor in class order}."""
    out = {}
    for r in predictor.predict(paths, topk=10):
        if isinstance(r, Prediction):
            got = dict(r.topk)
            out[r.path] = torch.tensor([got[c] for c in predictor.classes])
    return out


def test_ensemble_of_one_is_the_checkpoint(r8_checkpoint, image_tree):
    paths, _ = find_images([image_tree])
    alone = list(Predictor.from_checkpoint(r8_checkpoint).predict(paths, topk=10))
    ensemble = EnsemblePredictor.from_checkpoints([r8_checkpoint])
    together = list(ensemble.predict(paths, topk=10))
    assert [type(r) for r in alone] == [type(r) for r in together]
    for a, b in zip(alone, together, strict=True):
        if isinstance(a, Prediction):
            assert b.topk == a.topk  # the same probabilities, bit for bit
            assert b.members == [a.topk[0]]
            assert a.members is None and "members" not in a.to_dict()


def test_ensemble_averages_members_each_with_its_own_preprocessing(r8_checkpoint, r8_other,
                                                                  image_tree):
    paths, _ = find_images([image_tree])
    first = Predictor.from_checkpoint(r8_checkpoint)
    second = Predictor.from_checkpoint(r8_other)
    assert second.preprocessing.size == (40, 40) != first.preprocessing.size
    p1, p2 = _all_probs(first, paths), _all_probs(second, paths)
    ensemble = EnsemblePredictor.from_checkpoints([r8_checkpoint, r8_other], weights="3,1",
                                                  batch_size=2)
    assert ensemble.weights == [0.75, 0.25]
    results = [r for r in ensemble.predict(paths, topk=10) if isinstance(r, Prediction)]
    assert len(results) == 5 and set(p1) == {r.path for r in results}
    disagreements = 0
    for r in results:
        expected = 0.75 * p1[r.path] + 0.25 * p2[r.path]
        got = dict(r.topk)
        assert torch.allclose(torch.tensor([got[c] for c in ensemble.classes]), expected,
                              atol=1e-6)
        assert r.topk[0][0] == ensemble.classes[int(expected.argmax())]
        tops = [ensemble.classes[int(p[r.path].argmax())] for p in (p1, p2)]
        assert [c for c, _ in r.members] == tops
        assert [v for _, v in r.members] == pytest.approx(
            [float(p1[r.path].max()), float(p2[r.path].max())], abs=1e-6)
        disagreements += tops[0] != tops[1]
    assert disagreements > 0  # the two nets differ, so the average is not trivially either


def test_predict_cli_ensemble_prints_and_jsons_the_average(r8_checkpoint, r8_other, image_tree,
                                                           capsys):
    image = image_tree / "a.png"
    p1 = _all_probs(Predictor.from_checkpoint(r8_checkpoint), [image])[str(image)]
    p2 = _all_probs(Predictor.from_checkpoint(r8_other), [image])[str(image)]
    top = f"c{int(((p1 + p2) / 2).argmax())}"
    assert main(["predict", "--checkpoint", str(r8_checkpoint), "--checkpoint", str(r8_other),
                 str(image), "--topk", "2", "--json", "--device", "cpu"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    (pred,) = json.loads(lines[-1])["predictions"]
    assert pred["topk"][0]["class"] == top and len(pred["topk"]) == 2
    assert pred["topk"][0]["prob"] == pytest.approx(float(((p1 + p2) / 2).max()), abs=1e-6)
    assert [m["class"] for m in pred["members"]] == [f"c{int(p1.argmax())}",
                                                     f"c{int(p2.argmax())}"]
    assert lines[0].startswith(f"{image}: {top} ") and "(members: " in lines[0]
    assert lines[-2] == "1 images: 1 ok, 0 failed"


def test_predict_cli_ensemble_refuses_other_classes_and_bad_weights(r8_checkpoint, image_tree,
                                                                    tmp_path, capsys):
    from resnets.checkpoint import load_checkpoint, save_checkpoint

    model, meta = load_checkpoint(r8_checkpoint)
    other = tmp_path / "animals.safetensors"
    animals = ["cat", "dog", "emu", "fox", "gnu", "hen", "ibis", "jay", "koi", "lynx"]
    save_checkpoint(other, model=model, meta={**{k: meta[k] for k in (
        "kind", "model", "model_kwargs", "normalization", "image_size")}, "classes": animals})
    image = str(image_tree / "a.png")
    assert main(["predict", "--checkpoint", str(r8_checkpoint), "--checkpoint", str(other),
                 image, "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "different classes" in err and "[c0, c1, c2" in err and "[cat, dog, emu" in err
    assert str(other) in err
    assert main(["predict", "--checkpoint", str(r8_checkpoint), "--checkpoint",
                 str(r8_checkpoint), "--weights", "1,0", image, "--device", "cpu"]) == 2
    assert "finite and positive" in capsys.readouterr().err




_POSIX = pytest.mark.skipif(not hasattr(signal, "SIGALRM") or not hasattr(os, "mkfifo"),
                            reason="needs POSIX signals, links and FIFOs")


@_POSIX
def test_fifo_input_is_a_named_failure_not_a_hang(r8_checkpoint, image_tree, tmp_path, capsys,
                                                  deadline):
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    inside = image_tree / "sub" / "pipe.jpg"  # found by the folder search, then refused
    os.mkfifo(inside)
    with deadline():
        rc = main(["predict", "--checkpoint", str(r8_checkpoint), str(fifo),
                   str(image_tree / "a.png"), str(image_tree / "sub"), "--json",
                   "--device", "cpu"])
    assert rc == 1
    out, err = capsys.readouterr()
    assert out.strip().splitlines()[-2] == "4 images: 2 ok, 2 failed"
    failed = {f["path"]: f["error"] for f in json.loads(out.strip().splitlines()[-1])["failed"]}
    assert set(failed) == {str(fifo), str(inside)}
    assert all(e.startswith("a named pipe (FIFO), not a regular file") for e in failed.values())
    assert f"{fifo}: error: a named pipe (FIFO), not a regular file" in err


@_POSIX
def test_folder_search_ends_on_a_link_loop(r8_checkpoint, tmp_path, deadline):
    root = tmp_path / "imgs"
    (root / "cat").mkdir(parents=True)
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(root / "cat" / "1.png")
    (root / "cat" / "a").symlink_to(".", target_is_directory=True)  # cat/a -> cat
    with deadline(), pytest.warns(UserWarning, match="a folder already read"):
        paths, missing = find_images([root])
    assert paths == [root / "cat" / "1.png"] and missing == []
    results = list(Predictor.from_checkpoint(r8_checkpoint).predict(paths))
    assert [type(r) for r in results] == [Prediction]
