"""Image data: sources that decode any accepted layout once into uint8 tensors, the
device-resident loader that batches, normalizes and augments them without worker processes,
and the folder pipeline that decodes ImageNet-size folders per sample.

Modules, each importing only those listed after it:

- `sources`: `load_image_set`, which picks the reader for a ``--data`` path and caches it
- `cifar_release`: the official CIFAR-10 python release (restricted unpickler), torchvision
- `image_folder`: an image folder or a tar archive of one, decoded whole
- `cache`: the decoded-tensor cache and its key
- `fingerprint`: what images a run was given (count, classes, pixel digest, source)
- `imageset`: `ImageSet`, the accepted layouts, the seeded train/validation split
- `folder`: `FolderDataset`, the lazy per-file dataset (and the folder pipeline's names)
- `augment`: the paper's ImageNet augmentation as torchvision v2 transforms
- `resumable_loader`: the seeded, rank-sliced sample order and its DataLoader
- `device_loader`: `DeviceLoader`, `Normalization`, batched crops and flips on the device
- `decode`: image bytes to 8-bit RGB, the one decode path
- `files`: the loop-safe folder walk and bounded, regular-file-only reads
"""

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
from .fingerprint import data_fingerprint, describe_data, same_images
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
    "data_fingerprint",
    "describe_data",
    "default_cache_dir",
    "load_image_set",
    "per_pixel_mean",
    "random_crop",
    "random_flip",
    "same_images",
    "split_indices",
]
