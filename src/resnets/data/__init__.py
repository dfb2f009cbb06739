"""CIFAR-10 data: sources that decode any accepted layout once into uint8 tensors, and the
device-resident loader that batches, normalizes and augments them without worker processes."""

from .cache import default_cache_dir
from .cifar_release import CIFAR10_CLASSES
from .decode import IMAGE_EXTENSIONS
from .device_loader import (
    NORMALIZATION_KINDS,
    DeviceLoader,
    Normalization,
    channel_stats,
    per_pixel_mean,
    random_crop,
    random_flip,
)
from .imageset import ACCEPTED_LAYOUTS, ImageSet, split_indices
from .sources import load_image_set

__all__ = [
    "ACCEPTED_LAYOUTS",
    "CIFAR10_CLASSES",
    "IMAGE_EXTENSIONS",
    "NORMALIZATION_KINDS",
    "DeviceLoader",
    "ImageSet",
    "Normalization",
    "channel_stats",
    "default_cache_dir",
    "load_image_set",
    "per_pixel_mean",
    "random_crop",
    "random_flip",
    "split_indices",
]
