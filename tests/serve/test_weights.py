"""Importing torchvision / timm ResNet weights, and loading state dicts with a new head."""

from __future__ import annotations

import json
import urllib.error

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from safetensors.torch import save_file
from torchvision.models import WeightsEnum

from resnets import create_model
from resnets.checkpoint import load_checkpoint, load_state_dict_for_model
from resnets.cli import main
from resnets.errors import CheckpointError
from resnets.serve.from_akamaster import import_akamaster
from resnets.serve.from_timm import import_timm
from resnets.serve.from_torchvision import import_torchvision
from resnets.serve.predict import Predictor
from resnets.serve.weights import infer_model_name


def logits(model, x):
    with torch.no_grad():
        return model.eval()(x)


@pytest.fixture(scope="module")
def tv18(tmp_path_factory, randomize_bn):
    """A torchvision resnet18 with non-trivial BN, and its state dict saved as a .pth."""
    torch.manual_seed(18)
    model = randomize_bn(torchvision.models.resnet18(weights=None), seed=18).eval()
    path = tmp_path_factory.mktemp("tv18") / "resnet18.pth"
    torch.save(model.state_dict(), path)
    return model, path


def test_torchvision_file_round_trip_gives_identical_logits(tv18, tmp_path):
    tv, pth = tv18
    imported = import_torchvision(pth)  # model name inferred from the blocks
    out = imported.save(tmp_path / "r18.safetensors")
    model, meta = load_checkpoint(out)
    x = torch.randn(2, 3, 96, 96)
    assert torch.equal(logits(model, x), logits(tv, x))
    assert meta["kind"] == "weights" and meta["model"] == "resnet18"
    assert meta["model_kwargs"] == {"stride_in_1x1": False, "num_classes": 1000}
    assert meta["normalization"] == {"kind": "channel_mean_std", "mean": [0.485, 0.456, 0.406],
                                     "std": [0.229, 0.224, 0.225]}
    assert meta["image_size"] == [3, 224, 224]
    assert meta["preprocessing"] == {"resize": 256, "crop": 224, "interpolation": "bilinear"}
    assert len(meta["classes"]) == 1000 and meta["classes"][0] == "tench"
    assert imported.dropped == []


def test_cli_import_resnet50_then_predict_like_torchvision(tmp_path, capsys, randomize_bn):
    """`resnets import` + `resnets predict` give torchvision's probabilities for a photo
    passed through torchvision's own eval transform."""
    torch.manual_seed(50)
    tv = randomize_bn(torchvision.models.resnet50(weights=None), seed=50).eval()
    torch.save(tv.state_dict(), tmp_path / "r50.pth")
    ckpt = tmp_path / "r50.safetensors"
    assert main(["import", "--weights", str(tmp_path / "r50.pth"), "--model", "resnet50",
                 "--out", str(ckpt)]) == 0
    assert "resnet50 (25.56M params, 1000 classes)" in capsys.readouterr().out

    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, (240, 320, 3), dtype=np.uint8))
    img.save(tmp_path / "photo.png")
    transform = torchvision.models.ResNet50_Weights.IMAGENET1K_V1.transforms()
    expected = torch.softmax(logits(tv, transform(img)[None]), dim=1)[0]
    (pred,) = Predictor.from_checkpoint(ckpt).predict([tmp_path / "photo.png"], topk=3)
    top = expected.topk(3)
    categories = torchvision.models.ResNet50_Weights.IMAGENET1K_V1.meta["categories"]
    assert [c for c, _ in pred.topk] == [categories[i] for i in top.indices.tolist()]
    assert np.allclose([p for _, p in pred.topk], top.values.tolist(), atol=1e-5)


def test_torchvision_spec_offline_is_a_clear_error(monkeypatch):
    def offline(self, *args, **kwargs):
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(WeightsEnum, "get_state_dict", offline)
    with pytest.raises(CheckpointError) as err:
        import_torchvision("torchvision:resnet50")
    msg = str(err.value)
    assert "download of torchvision weights ResNet50_Weights.IMAGENET1K_V2 failed" in msg
    assert "resnet50-11ad3fa6.pth" in msg  # the URL to fetch elsewhere
    assert "--weights PATH --model resnet50 --resize 232 --crop 224" in msg


def test_torchvision_spec_records_the_weights_transform(monkeypatch, tv18):
    tv, _ = tv18
    monkeypatch.setattr(WeightsEnum, "get_state_dict", lambda self, **kw: tv.state_dict())
    imported = import_torchvision("torchvision:resnet18.IMAGENET1K_V1")
    meta = imported.meta
    assert meta["model"] == "resnet18"
    assert meta["preprocessing"] == {"resize": 256, "crop": 224, "interpolation": "bilinear"}
    assert meta["source"]["name"] == "ResNet18_Weights.IMAGENET1K_V1"
    assert meta["source"]["metrics"]["ImageNet-1K"]["acc@1"] == pytest.approx(69.758)
    assert meta["classes"][:2] == ["tench", "goldfish"]
    with pytest.raises(CheckpointError, match="has no weights 'V9'; it has IMAGENET1K_V1"):
        import_torchvision("torchvision:resnet18.V9")


def test_num_classes_mismatch_warns_and_drops_only_fc(tv18):
    tv, _ = tv18
    state = tv.state_dict()
    model = create_model("resnet18", stride_in_1x1=False)
    with pytest.warns(UserWarning, match=r"\(1000, 512\) in the weights but \(10, 512\)"):
        dropped = load_state_dict_for_model(model, state, num_classes=10)
    assert dropped == ["fc.bias", "fc.weight"]
    assert model.fc.weight.shape == (10, 512) and model.fc.bias.shape == (10,)
    for k, v in model.state_dict().items():
        if not k.startswith("fc."):
            assert torch.equal(v, state[k]), k


def test_body_shape_mismatch_names_the_tensor_and_both_shapes(tv18):
    tv, _ = tv18
    state = dict(tv.state_dict())
    state["layer1.0.conv1.weight"] = torch.zeros(32, 64, 3, 3)
    with pytest.raises(CheckpointError, match=r"layer1\.0\.conv1\.weight: weights "
                                              r"\(32, 64, 3, 3\) vs model \(64, 64, 3, 3\)"):
        load_state_dict_for_model(create_model("resnet18", stride_in_1x1=False), state)
    del state["layer1.0.conv1.weight"]
    with pytest.raises(CheckpointError, match=r"1 missing tensors \(layer1\.0\.conv1\.weight\)"):
        load_state_dict_for_model(create_model("resnet18", stride_in_1x1=False), state)


def test_infer_model_name_from_blocks():
    for depth in (18, 34, 50, 101, 152):
        with torch.device("meta"):  # shapes only, no memory or init time
            state = create_model(f"resnet{depth}").state_dict()
        assert infer_model_name(state) == f"resnet{depth}"
    with pytest.raises(CheckpointError, match="no registered ImageNet ResNet"):
        infer_model_name({"layer1.0.conv1.weight": torch.zeros(1)})


def test_timm_layout_variants(tv18, tmp_path):
    """timm's ResNets share torchvision's names; a DDP prefix and a `head.fc` classifier are
    mapped, timm's config.json sets the preprocessing, ResNetV2 is refused."""
    tv, _ = tv18
    state = {("module.head." + k if k.startswith("fc.") else "module." + k): v.contiguous()
             for k, v in tv.state_dict().items()}
    save_file(state, tmp_path / "model.safetensors")
    (tmp_path / "config.json").write_text(json.dumps({
        "architecture": "resnet18",
        "pretrained_cfg": {"input_size": [3, 224, 224], "crop_pct": 0.95,
                           "interpolation": "bicubic", "mean": [0.485, 0.456, 0.406],
                           "std": [0.229, 0.224, 0.225]}}))
    imported = import_timm(tmp_path / "model.safetensors")
    x = torch.randn(2, 3, 64, 64)
    assert torch.equal(logits(imported.model, x), logits(tv, x))
    assert imported.meta["preprocessing"] == {"resize": 235, "crop": 224,
                                              "interpolation": "bicubic"}
    assert imported.meta["source"]["format"] == "timm"

    save_file({"stem.conv.weight": torch.zeros(64, 3, 7, 7),
               "stages.0.blocks.0.conv1.weight": torch.zeros(64, 64, 1, 1)},
              tmp_path / "v2.safetensors")
    with pytest.raises(CheckpointError, match="timm ResNetV2"):
        import_timm(tmp_path / "v2.safetensors")


def test_real_timm_resnet_imports_exactly(tmp_path, randomize_bn):
    timm = pytest.importorskip("timm", reason="timm is in the test extra: pip install timm")
    torch.manual_seed(0)
    net = randomize_bn(timm.create_model("resnet50", pretrained=False), seed=0).eval()
    save_file({k: v.contiguous() for k, v in net.state_dict().items()},
              tmp_path / "model.safetensors")
    imported = import_timm(tmp_path / "model.safetensors")
    x = torch.randn(1, 3, 96, 96)
    assert imported.meta["model"] == "resnet50"
    assert torch.equal(logits(imported.model, x), logits(net, x))


# --------------------------------------------------------------------------------------------
# akamaster/pytorch_resnet_cifar10: a reference of its layout, written here from its
# description (option A pads planes // 4 zero channels before and after the identity).


class AkaBlock(torch.nn.Module):
    def __init__(self, cin: int, planes: int, stride: int):
        super().__init__()
        nn = torch.nn
        self.conv1 = nn.Conv2d(cin, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.pad = planes // 4 if (stride != 1 or cin != planes) else None

    def shortcut(self, x):
        if self.pad is None:
            return x
        return torch.nn.functional.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class AkaResNet(torch.nn.Module):
    def __init__(self, n: int, num_classes: int = 10):
        super().__init__()
        nn = torch.nn
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        cin = 16
        for s, planes in enumerate((16, 32, 64), start=1):
            blocks = []
            for j in range(n):
                blocks.append(AkaBlock(cin, planes, 2 if s > 1 and j == 0 else 1))
                cin = planes
            setattr(self, f"layer{s}", nn.Sequential(*blocks))
        self.linear = nn.Linear(64, num_classes)

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        return self.linear(out.mean(dim=(2, 3)))


def akamaster_file(tmp_path, n: int, randomize_bn, seed: int = 0, counters: bool = True):
    """A reference net and its ``.th`` file as akamaster's training script writes it
    (DataParallel's ``module.`` prefix, best_prec1 and epoch beside the state dict; files
    saved by PyTorch < 0.4.1 lack the BN counters: ``counters=False``)."""
    torch.manual_seed(seed)
    ref = randomize_bn(AkaResNet(n), seed=seed).eval()
    state = {f"module.{k}": v for k, v in ref.state_dict().items()
             if counters or not k.endswith("num_batches_tracked")}
    path = tmp_path / f"resnet{6 * n + 2}.th"
    torch.save({"epoch": 200, "best_prec1": 91.73, "state_dict": state}, path)
    return ref, path


AKA_MEAN, AKA_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@pytest.mark.parametrize("n", [1, 3, 5, 18])  # resnet8, resnet20, resnet32, resnet110
def test_akamaster_import_gives_the_same_logits(tmp_path, randomize_bn, n):
    ref, path = akamaster_file(tmp_path, n, randomize_bn, seed=n, counters=n != 3)
    imported = import_akamaster(path)
    assert imported.meta["model"] == f"resnet{6 * n + 2}" and not imported.dropped
    g = torch.Generator().manual_seed(0)
    images = torch.rand(8, 3, 32, 32, generator=g)  # [0, 1] pixels
    x = (images - torch.tensor(AKA_MEAN)[:, None, None]) / torch.tensor(AKA_STD)[:, None, None]
    want, got = logits(ref, x), logits(imported.model, x)
    assert want.abs().max() > 0.1 and want.std(dim=0).max() > 1e-3  # input-dependent logits
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    # The identity placement matters: the same tensors loaded without the permutation differ.
    plain = {k.removeprefix("module."): v for k, v in
             torch.load(path, weights_only=True)["state_dict"].items()}
    plain["fc.weight"], plain["fc.bias"] = plain.pop("linear.weight"), plain.pop("linear.bias")
    naive = create_model(f"resnet{6 * n + 2}")
    naive.load_state_dict(plain)
    assert (logits(naive, x) - want).abs().max() > 1e-2


def test_akamaster_cli_writes_a_checkpoint_with_its_normalization(tmp_path, randomize_bn,
                                                                  capsys):
    from resnets.data import CIFAR10_CLASSES

    ref, path = akamaster_file(tmp_path, 3, randomize_bn)
    out = tmp_path / "r20.safetensors"
    assert main(["import", "--from", "akamaster", "--weights", str(path),
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "resnet20" in printed and "whole image at 32x32" in printed
    model, meta = load_checkpoint(out)
    assert meta["kind"] == "weights" and meta["model"] == "resnet20" and "config" not in meta
    assert meta["normalization"] == {"kind": "channel_mean_std", "mean": list(AKA_MEAN),
                                     "std": list(AKA_STD)}
    assert meta["classes"] == list(CIFAR10_CLASSES) and meta["image_size"] == [3, 32, 32]
    assert meta["source"]["format"] == "akamaster"
    # The predictor normalizes uint8 images as recorded: the reference on the same input.
    pred = Predictor.from_checkpoint(out, device="cpu")
    img = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    x = (img / 255 - torch.tensor(AKA_MEAN)[:, None, None]) / torch.tensor(AKA_STD)[:, None, None]
    torch.testing.assert_close(pred.probabilities(img), torch.softmax(logits(ref, x), 1),
                               rtol=1e-5, atol=1e-5)


def test_akamaster_refusals(tmp_path, randomize_bn, capsys):
    ref, path = akamaster_file(tmp_path, 1, randomize_bn)
    state = torch.load(path, weights_only=True)["state_dict"]
    # Option-B files have projection tensors: refused with their names.
    state_b = {**state, "module.layer2.0.shortcut.0.weight": torch.zeros(32, 16, 1, 1)}
    torch.save({"state_dict": state_b}, tmp_path / "b.th")
    with pytest.raises(CheckpointError, match=r"layer2\.0\.shortcut\.0\.weight.*option B"):
        import_akamaster(tmp_path / "b.th")
    # A file that needs code to unpickle is refused, not run.
    torch.save({"state_dict": state, "opts": argparse_like()}, tmp_path / "code.th")
    with pytest.raises(CheckpointError, match="unpickling"):
        import_akamaster(tmp_path / "code.th")
    with pytest.raises(CheckpointError, match="basic blocks and option A"):
        import_akamaster(path, model="plain20")
    assert main(["import", "--from", "akamaster", "--weights", str(path), "--crop", "28",
                 "--out", str(tmp_path / "x.safetensors")]) == 2
    assert "--crop" in capsys.readouterr().err


class _Opts:
    """Stands for an argparse.Namespace pickled next to the weights."""


def argparse_like():
    return _Opts()
