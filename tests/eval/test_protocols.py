"""The paper's test protocols: view geometry, score averaging, the CIFAR analogue and the
batched driver."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import TensorDataset
from torchvision.transforms.v2 import functional as TF

from resnets import create_model
from resnets.data import Normalization
from resnets.errors import UserError
from resnets.eval.protocols import (
    Protocol,
    center_crop_views,
    evaluate_protocol,
    get_protocol,
    multi_scale_views,
    predict_protocol,
    ten_crop_views,
)

MEAN_STD = ((0.5, 0.4, 0.3), (0.25, 0.25, 0.25))


pytestmark = pytest.mark.usefixtures("one_thread")  # see tests/conftest.py


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    model = create_model("resnet8").eval()
    # Random BN statistics, so that the network is not nearly constant at init.
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.0)
    return model


def _softmax(model, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x[None]).softmax(1)[0]


# ----------------------------------------------------------------------------------- views


def test_ten_crop_views_are_the_corners_center_and_their_mirrors():
    img = torch.randn(3, 40, 51)
    views = ten_crop_views(img, resize=None, crop=32)
    assert len(views) == 10 and all(v.shape == (3, 32, 32) for v in views)
    assert torch.equal(views[0], img[:, :32, :32]) and torch.equal(views[1], img[:, :32, -32:])
    assert torch.equal(views[2], img[:, -32:, :32]) and torch.equal(views[3], img[:, -32:, -32:])
    assert torch.equal(views[4], TF.center_crop(img, [32, 32]))
    for i in range(5):
        assert torch.equal(views[5 + i], views[i].flip(-1))


def test_view_functions_resize_the_shorter_side_first():
    img = torch.rand(3, 30, 45)
    assert ten_crop_views(img, resize=36, crop=32)[0].shape == (3, 32, 32)
    (center,) = center_crop_views(img, resize=36, crop=32)
    torch.testing.assert_close(center, TF.center_crop(TF.resize(img, [36]), [32, 32]))
    views = multi_scale_views(img, scales=(20, 30, 60), flips=True)
    assert [tuple(v.shape) for v in views] == [(3, 20, 30)] * 2 + [(3, 30, 45)] * 2 + [
        (3, 60, 90)] * 2
    assert torch.equal(views[3], img.flip(-1)), "a view at the image's own size is the image"
    assert len(multi_scale_views(img, scales=(20, 30), flips=False)) == 2


def test_imagenet_protocols_are_the_papers():
    assert get_protocol("center") == Protocol("center", "imagenet", resize=256, crop=224)
    ten = get_protocol("ten_crop")
    assert (ten.resize, ten.crop, ten.num_views) == (256, 224, 10)
    multi = get_protocol("multi-scale")
    assert multi.scales == (224, 256, 384, 480, 640) and multi.num_views == 10
    img = torch.rand(3, 300, 400)
    sizes = [tuple(v.shape[-2:]) for v in multi.views(img)]
    assert sizes[::2] == [(224, 298), (256, 341), (384, 512), (480, 640), (640, 853)]
    with pytest.raises(UserError, match="ten_crop"):
        get_protocol("twelve_crop")
    with pytest.raises(UserError, match="family"):
        get_protocol("center", family="mnist")


def test_cifar_analogue_shapes_and_padding():
    img = torch.randn(3, 32, 32) + 5  # no zeros in the image itself
    (center,) = get_protocol("center", "cifar").views(img)
    assert torch.equal(center, img)
    views = get_protocol("ten_crop", "cifar").views(img)
    assert len(views) == 10 and all(v.shape == (3, 32, 32) for v in views)
    assert torch.equal(views[4], img), "the central crop of the padded image is the image"
    assert views[0][:, :4].eq(0).all() and views[0][:, :, :4].eq(0).all()  # zero padding
    assert torch.equal(views[0][:, 4:, 4:], img[:, :28, :28])
    assert torch.equal(views[3][:, :28, :28], img[:, 4:, 4:])
    sizes = [tuple(v.shape) for v in get_protocol("multi_scale", "cifar").views(img)]
    assert sizes == [(3, 32, 32)] * 2 + [(3, 40, 40)] * 2 + [(3, 48, 48)] * 2


# ---------------------------------------------------------------------------------- scoring


def test_ten_crop_of_a_constant_image_equals_the_center_crop_prediction(tiny_model):
    img = torch.full((3, 44, 60), 0.7)
    center = Protocol("center", "imagenet", resize=40, crop=32)
    ten = Protocol("ten_crop", "imagenet", resize=40, crop=32)
    p_center = predict_protocol(tiny_model, img, center)
    p_ten = predict_protocol(tiny_model, img, ten)
    torch.testing.assert_close(p_ten, p_center, rtol=1e-5, atol=1e-6)
    assert p_ten.shape == (10,) and abs(float(p_ten.sum()) - 1) < 1e-5


def test_multi_scale_prediction_is_the_mean_of_per_view_softmaxes(tiny_model):
    torch.manual_seed(1)
    img = torch.randn(3, 30, 40)
    scales = (24, 32, 40)
    by_hand = []
    for s in scales:
        view = TF.resize(img, [s], antialias=True)
        by_hand += [_softmax(tiny_model, view), _softmax(tiny_model, view.flip(-1))]
    expected = torch.stack(by_hand).mean(0)
    protocol = Protocol("multi_scale", "imagenet", scales=scales, flips=True)
    got = predict_protocol(tiny_model, img, protocol)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-6)
    # Not the softmax of averaged logits: the views really disagree here.
    assert not torch.allclose(expected, by_hand[0], atol=1e-3)
    assert tiny_model.training is False


def _labels_by_prediction(model, images, protocol, normalization) -> torch.Tensor:
    labels = []
    for img in images:
        x = normalization.apply(img[None])[0]
        labels.append(int(predict_protocol(model, x, protocol).argmax()))
    return torch.tensor(labels)


@pytest.mark.parametrize("name", ["center", "ten_crop", "multi_scale"])
def test_evaluate_protocol_batches_views_without_mixing_images(tiny_model, name):
    torch.manual_seed(2)
    images = torch.randint(0, 256, (7, 3, 32, 32), dtype=torch.uint8)
    norm = Normalization.fit(images, "per_pixel_mean")
    protocol = get_protocol(name, "cifar")
    labels = _labels_by_prediction(tiny_model, images, protocol, norm)
    res = evaluate_protocol(tiny_model, TensorDataset(images, labels), name, family="cifar",
                            normalization=norm, batch_size=4)
    assert res["n"] == 7 and res["top1_error"] == 0 and res["top5_error"] == 0
    assert res["views_per_image"] == protocol.num_views and res["loss"] > 0
    wrong = evaluate_protocol(tiny_model, TensorDataset(images, (labels + 1) % 10), name,
                              family="cifar", normalization=norm, batch_size=4)
    assert wrong["top1_error"] == 1


def test_evaluate_protocol_groups_views_of_mixed_sizes(tiny_model):
    torch.manual_seed(3)
    sizes = [(30, 40), (40, 30), (30, 40), (33, 33), (30, 40)]
    images = [torch.randint(0, 256, (3, h, w), dtype=torch.uint8) for h, w in sizes]
    # family "cifar": batch sizes count 32x32 views, so batch_size=3 flushes often here.
    protocol = Protocol("multi_scale", "cifar", scales=(24, 36), flips=True)
    norm = Normalization("channel_mean_std", *map(list, MEAN_STD))
    labels = _labels_by_prediction(tiny_model, images, protocol, norm)
    items = list(zip(images, labels.tolist(), strict=True))
    res = evaluate_protocol(tiny_model, items, protocol, normalization=MEAN_STD, batch_size=3)
    assert res["n"] == 5 and res["top1_error"] == 0


def test_evaluate_protocol_reads_a_folder_dataset(tiny_model, tmp_path):
    import numpy as np
    from PIL import Image

    from resnets.data.folder import FolderDataset

    rng = np.random.default_rng(0)
    for cls, size in (("a", (40, 30)), ("b", (36, 36))):
        (tmp_path / cls).mkdir()
        for i in range(2):
            pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / cls / f"{i}.png")
    ds = FolderDataset(tmp_path)
    protocol = Protocol("ten_crop", "imagenet", resize=34, crop=32)
    res = evaluate_protocol(tiny_model, ds, protocol, normalization=MEAN_STD, batch_size=8)
    norm = Normalization("channel_mean_std", *map(list, MEAN_STD))
    images = [ds[i][0] for i in range(len(ds))]
    predicted = _labels_by_prediction(tiny_model, images, protocol, norm)
    expected_top1 = float((predicted != torch.tensor(ds.targets)).float().mean())
    assert res["n"] == 4 and res["top1_error"] == pytest.approx(expected_top1)
