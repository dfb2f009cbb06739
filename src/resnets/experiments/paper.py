"""The paper's reported numbers, as data, so every table prints the paper beside our result.

Sources: He et al., CVPR 2016 (arXiv 1512.03385) and He et al., ECCV 2016 (arXiv 1603.05027).
CIFAR-10 numbers are *test* errors (%) of the paper; ours on the shared data are validation
errors on a held-out split of the training set.
"""

# Table 6: CIFAR-10 test error (%) of the residual nets; ResNet-110: best of 5 (mean 6.61+-0.16).
TABLE6_ERROR = {20: 8.75, 32: 7.51, 44: 7.17, 56: 6.97, 110: 6.43, 1202: 7.93}
TABLE6_PARAMS_M = {20: 0.27, 32: 0.46, 44: 0.66, 56: 0.85, 110: 1.7, 1202: 19.4}

# 1603.05027 Table 2: CIFAR-10 test error (%) of the residual-unit variants.
PREACT_ERROR = {
    "original": {110: 6.61, 164: 5.93},
    "bn_after_add": {110: 8.17, 164: 6.50},
    "relu_before_add": {110: 7.84, 164: 6.14},
    "relu_preact": {110: 6.71, 164: 5.91},
    "full_preact": {110: 6.37, 164: 5.46},
}

# Table 3 (ImageNet val, 10-crop, top-1 / top-5 %): shortcut options on ResNet-34.
SHORTCUT_IMAGENET = {"plain": (28.54, 10.02), "A": (25.03, 7.76), "B": (24.52, 7.46),
                     "C": (24.19, 7.40)}

# Fig. 6 (left): plain nets get worse with depth; the paper gives curves, not a table.
DEGRADATION_CLAIM = ("deeper plain nets have higher training error (20 < 32 < 44 < 56; plain-110 "
                     "above 60%), while deeper ResNets have lower error")
