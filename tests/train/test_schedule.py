import pytest

from resnets.config import resolve_config
from resnets.train.schedule import lr_at, warmup_should_end

PAPER = dict(lr=0.1, milestones=(32000, 48000), gamma=0.1)


@pytest.mark.parametrize(
    ("step", "expected"),
    [(0, 0.1), (31999, 0.1), (32000, 0.01), (47999, 0.01), (48000, 0.001), (63999, 0.001)],
)
def test_lr_at_every_milestone(step, expected):
    assert lr_at(step, **PAPER) == pytest.approx(expected, rel=1e-12)


def test_warmup_lr_only_while_in_warmup():
    assert lr_at(10, **PAPER, warmup_lr=0.01, in_warmup=True) == 0.01
    assert lr_at(10, **PAPER, warmup_lr=0.01, in_warmup=False) == 0.1
    # No warm-up lr configured: the flag alone changes nothing.
    assert lr_at(10, **PAPER, warmup_lr=None, in_warmup=True) == 0.1


def test_warmup_exit_rule():
    kw = dict(until_error=0.8, max_iterations=2000)
    assert not warmup_should_end(100, 0.85, **kw)
    assert not warmup_should_end(100, 0.80, **kw)  # strictly below 80%
    assert warmup_should_end(100, 0.79, **kw)
    assert warmup_should_end(2000, 0.95, **kw)  # safety cap


def test_recipe_is_the_papers():
    cfg = resolve_config("cifar10-paper")
    assert (cfg.batch_size, cfg.lr, cfg.momentum, cfg.weight_decay) == (128, 0.1, 0.9, 1e-4)
    assert (cfg.iterations, cfg.milestones, cfg.val_split) == (64000, (32000, 48000), 5000)
    assert cfg.warmup_lr is None
    assert resolve_config("cifar10-paper", model="resnet110").warmup_lr == 0.01
    assert resolve_config("cifar10-paper", model="resnet1202").warmup_lr == 0.01


def test_iterations_override_rescales_milestones():
    cfg = resolve_config("cifar10-paper", iterations=6400)
    assert cfg.milestones == (3200, 4800)
    cfg = resolve_config("cifar10-paper", iterations=1000, milestones=[100, 900])
    assert cfg.milestones == (100, 900)
