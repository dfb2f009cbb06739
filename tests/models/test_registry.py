"""The name -> builder registry."""

from __future__ import annotations

import pytest

import resnets
from resnets.errors import UserError
from resnets.models import registry
from resnets.models.registry import UnknownModelError, register_model


@pytest.fixture
def scratch_registry(monkeypatch):
    """A private copy of the registry, so a test can register names without leaking them."""
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    return registry._REGISTRY


def test_duplicate_registration_is_refused(scratch_registry):
    before = dict(scratch_registry)

    def resnet50(**kwargs):
        raise AssertionError("must never be called")

    with pytest.raises(ValueError, match="already registered"):
        register_model(family="imagenet", depth=50, description="dup")(resnet50)
    assert scratch_registry == before
    assert resnets.create_model("resnet50").fc.out_features == 1000


def test_new_registration_is_listed(scratch_registry):
    @register_model(family="cifar", depth=2, description="a test double")
    def toy2(**kwargs):
        return kwargs

    assert "toy2" in resnets.list_models() and "toy2" in resnets.list_models("cifar")
    assert resnets.model_info("toy2").input_size == (3, 32, 32)
    assert resnets.create_model("toy2", a=1) == {"a": 1}


def test_unknown_name_suggests_the_closest():
    with pytest.raises(UnknownModelError) as err:
        resnets.create_model("resnet5O")
    message = str(err.value)
    assert "resnet5O" in message and "resnet50" in message
    assert "Did you mean" in message
    assert isinstance(err.value, KeyError)
    assert isinstance(err.value, UserError)  # the CLI prints it as one line, no traceback


def test_families_partition_the_registry():
    everything = resnets.list_models()
    cifar, imagenet = resnets.list_models("cifar"), resnets.list_models("imagenet")
    assert set(cifar).isdisjoint(imagenet)
    assert sorted(cifar + imagenet) == sorted(everything)
    assert len(everything) == len(set(everything))
    assert {"resnet20", "resnet110", "resnet1202", "plain56"} <= set(cifar)
    assert {"resnet18", "resnet50", "resnet152", "plain34"} <= set(imagenet)
    assert resnets.list_models("mnist") == []


def test_list_is_ordered_by_family_then_depth():
    cifar_resnets = [n for n in resnets.list_models("cifar") if n.startswith("resnet")]
    assert cifar_resnets == ["resnet8", "resnet20", "resnet32", "resnet44", "resnet56",
                             "resnet110", "resnet164", "resnet1001", "resnet1202"]


def test_model_info_fields():
    info = resnets.model_info("resnet50")
    assert (info.family, info.depth, info.input_size) == ("imagenet", 50, (3, 224, 224))
    assert resnets.model_info("resnet20").input_size == (3, 32, 32)
    assert info.description


def test_every_registered_name_is_a_builder_a_reader_can_grep():
    """One function per name in zoo.py (no names made in loops): `grep "def resnet56"`."""
    from pathlib import Path

    from resnets.models import zoo

    source = Path(zoo.__file__).read_text()
    for name in resnets.list_models():
        builder = resnets.model_info(name).builder
        assert builder.__name__ == name and builder.__module__ == zoo.__name__
        assert source.count(f"\ndef {name}(**kwargs) -> ResNet:\n") == 1
        assert resnets.model_info(name).description == builder.__doc__  # shown by `models`


def test_a_builder_needs_a_description(scratch_registry):
    def toy3(**kwargs):
        return kwargs

    with pytest.raises(ValueError, match="needs a description"):
        register_model(family="cifar", depth=3)(toy3)
    assert "toy3" not in scratch_registry
