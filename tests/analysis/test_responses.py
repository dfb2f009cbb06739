import pytest
import torch
from torch import nn

from resnets import create_model
from resnets.analysis.responses import layer_response_std, response_layers
from resnets.models import BasicBlock, ResNet


def test_layers_are_the_bn_after_each_3x3_conv_in_forward_order():
    model = create_model("resnet20")
    names = [n for n, _ in response_layers(model)]
    assert len(names) == 19  # the stem + 2 per block x 9 blocks; the fc is not a 3x3 layer
    assert names[:3] == ["bn1", "layer1.0.bn1", "layer1.0.bn2"]
    assert names[-1] == "layer3.2.bn2"
    # Plain twins have the same layers.
    assert names == [n for n, _ in response_layers(create_model("plain20"))]


def test_bottleneck_nets_count_only_their_3x3_convs():
    names = [n for n, _ in response_layers(create_model("resnet50"))]
    assert len(names) == 16 and all(n.endswith(".bn2") for n in names)  # no 7x7 stem


def test_units_without_bn_after_conv_have_no_responses():
    # Their stems are conv-BN (-ReLU) like every net's, but a stem alone is no Fig. 7 curve.
    for model in (create_model("preact_resnet110"), create_model("resnet20", unit="bn_after_add")):
        assert isinstance(model.bn1, nn.BatchNorm2d)
        assert response_layers(model) == []
        with pytest.raises(ValueError, match="no 3x3 layer"):
            layer_response_std(model, [(torch.zeros(1, 3, 32, 32), None)])


def _hand_block():
    """One block whose BN outputs are known: BN1 maps everything to beta=(1, 2), BN2 to 0 +
    gamma * normalized, with the conv weights making the normalized output exactly +-1."""
    block = BasicBlock(2, 2)  # identity shortcut (option A at equal shapes)
    for conv in (block.conv1, block.conv2):
        nn.init.zeros_(conv.weight)
    block.bn1.weight.data = torch.tensor([3.0, 5.0])
    block.bn1.bias.data = torch.tensor([1.0, 2.0])
    block.bn2.weight.data = torch.tensor([0.5, 0.25])
    return block


def test_known_values_on_a_hand_built_net():
    block = _hand_block().eval()
    # Zero conv weights: BN1's input is 0, so its output is its bias everywhere -> std 0.
    # BN2's input is 0 as well -> std 0. A response taken *after* the ReLU / addition would
    # instead see the input x (std > 0), so this pins the hook point.
    model = nn.Sequential(block)
    x = torch.randn(4, 2, 8, 8)
    res = layer_response_std(model, [(x, None)])
    assert [r["layer"] for r in res] == ["0.bn1", "0.bn2"]
    assert res[0]["std"] == 0.0 and res[1]["std"] == 0.0
    # Identity conv2: BN2 sees relu(bn1) = (1, 2) constant per channel -> still std 0;
    # identity conv1 with BN in eval (mean 0, var 1): bn1 output = gamma * x + beta, whose
    # per-channel std is |gamma| * std(x channel).
    with torch.no_grad():
        block.conv1.weight.zero_()
        block.conv1.weight[0, 0, 1, 1] = 1.0
        block.conv1.weight[1, 1, 1, 1] = 1.0
    res = layer_response_std(model, [(x[:2], None), (x[2:], None)])  # streamed over 2 batches
    per_channel = x.transpose(0, 1).flatten(1).double().std(dim=1, unbiased=False)
    expected = ((block.bn1.weight.double().abs() / (1 + block.bn1.eps) ** 0.5)
                * per_channel).mean().item()
    assert res[0]["std"] == pytest.approx(expected, rel=1e-6)


def test_model_mode_is_restored_and_net_untouched():
    model = ResNet(block="basic", layers=(1, 1, 1), widths=(4, 8, 16), stem="cifar",
                   stem_width=4, shortcut="A", num_classes=3)
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    layer_response_std(model, [(torch.randn(2, 3, 16, 16), None)])
    assert model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
