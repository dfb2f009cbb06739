"""The paper's CIFAR experiments as commands: Table 6, degradation (Fig. 6), shortcut options,
residual-unit variants; the paper's own numbers live in :mod:`resnets.experiments.paper`."""
