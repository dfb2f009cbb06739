"""resnets models as torchvision detection backbones (FPN over the stages)."""

from __future__ import annotations

import math

import torch
from torchvision.models.detection import FasterRCNN

from resnets import create_model
from resnets.serve.backbone import fpn_backbone, stage_channels


def test_faster_rcnn_over_resnet50_trains_and_detects():
    torch.manual_seed(0)
    backbone = fpn_backbone(create_model("resnet50", stride_in_1x1=False))
    detector = FasterRCNN(backbone, num_classes=3, min_size=128, max_size=128,
                          rpn_pre_nms_top_n_train=200, rpn_post_nms_top_n_train=100,
                          rpn_pre_nms_top_n_test=100, rpn_post_nms_top_n_test=50,
                          box_batch_size_per_image=64)
    images = [torch.rand(3, 128, 128), torch.rand(3, 128, 128)]
    targets = [{"boxes": torch.tensor([[10.0, 20.0, 70.0, 90.0]]), "labels": torch.tensor([1])},
               {"boxes": torch.tensor([[30.0, 30.0, 100.0, 120.0], [5.0, 5.0, 40.0, 50.0]]),
                "labels": torch.tensor([2, 1])}]

    detector.train()
    losses = detector(images, targets)
    assert set(losses) == {"loss_classifier", "loss_box_reg", "loss_objectness",
                           "loss_rpn_box_reg"}
    assert all(math.isfinite(v.item()) for v in losses.values())
    total = sum(losses.values())
    total.backward()
    stem_grad = backbone.body.conv1.weight.grad
    assert stem_grad is not None and stem_grad.abs().sum().item() > 0  # reaches the stem

    detector.eval()
    with torch.no_grad():
        detections = detector(images)
    assert len(detections) == 2
    for d in detections:
        assert set(d) == {"boxes", "labels", "scores"}
        assert d["boxes"].shape[1:] == (4,) and len(d["boxes"]) == len(d["scores"])
        if len(d["boxes"]):
            assert d["boxes"].min() >= 0 and d["boxes"].max() <= 128


def test_fpn_levels_for_a_three_stage_cifar_net():
    model = create_model("resnet8")
    assert stage_channels(model) == {"layer1": 16, "layer2": 32, "layer3": 64}
    backbone = fpn_backbone(model, out_channels=32)
    with torch.no_grad():
        feats = backbone.eval()(torch.rand(2, 3, 32, 32))
    assert {k: tuple(v.shape) for k, v in feats.items()} == {
        "0": (2, 32, 32, 32), "1": (2, 32, 16, 16), "2": (2, 32, 8, 8), "pool": (2, 32, 4, 4)}


def test_preact_backbone_returns_the_activated_last_stage(randomize_bn):
    """Pre-activation nets apply their last BN-ReLU after the last stage; the pyramid must
    see that map, as `feature_maps` defines it."""
    model = randomize_bn(create_model("preact_resnet18"), seed=3).eval()
    backbone = fpn_backbone(model, stages=["layer3", "layer4"]).eval()
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        body = backbone.body(x)
        ref = model.feature_maps(x)
    assert list(body) == ["0", "1"]
    assert torch.equal(body["0"], ref["layer3"])
    assert torch.equal(body["1"], ref["layer4"]) and body["1"].min() >= 0
    assert stage_channels(model)["layer4"] == 512
