"""Decoding image files into 8-bit RGB: one path for every reader of images.

The in-memory sources (`resnets.data.image_folder`), the lazy folder dataset
(`resnets.data.folder`) and `resnets predict` all convert through `to_rgb8`, so a grayscale,
CMYK, palette, transparent or 16-bit file becomes the same pixels wherever it is read.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from .files import UnreadableFile

__all__ = ["IMAGE_EXTENSIONS", "BadImage", "decode_image_bytes", "is_image_name", "to_rgb8"]

# Same list as torchvision's ImageFolder, so a tree that works there works here.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
# The PIL decoders for those extensions, and only those: a file is never handed to a plugin
# such as EPS, which runs Ghostscript. Naming them also skips PIL's probing of every plugin.
_PIL_FORMATS = ("JPEG", "PNG", "BMP", "PPM", "TIFF", "WEBP")


class BadImage(UnreadableFile):
    """A file that is not a decodable image; the message says why."""


def is_image_name(name: str) -> bool:
    """Whether a file name has one of `IMAGE_EXTENSIONS` (any case)."""
    return name.lower().endswith(IMAGE_EXTENSIONS)


def to_rgb8(img: Image.Image) -> Image.Image:
    """8-bit RGB view of any PIL image mode."""
    if img.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        # 16-bit grey (PNG, TIFF): scale 0..65535 to 0..255 (x * 255 / 65535, rounded) instead
        # of clipping, which would turn most of the range white.
        wide = np.asarray(img).astype(np.int64).clip(0, 65535)
        gray = ((wide * 255 + 32767) // 65535).astype(np.uint8)
        return Image.fromarray(gray, "L").convert("RGB")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info:
        # Composite onto black: what is transparent carries no colour, like the crop padding.
        rgba = np.asarray(img.convert("RGBA")).astype(np.uint16)
        rgb = (rgba[..., :3] * rgba[..., 3:] + 127) // 255
        return Image.fromarray(rgb.astype(np.uint8), "RGB")
    if img.mode == "F":  # PIL has no float -> RGB conversion; via L it clips to 0..255
        img = img.convert("L")
    return img.convert("RGB")


def decode_image_bytes(data: bytes, image_size: int | None) -> np.ndarray:
    """Decode one encoded image into a (3, H, W) uint8 array, resized (bilinear, aspect ratio
    not kept) to image_size x image_size unless ``image_size`` is None.

    Only plain image formats are opened (JPEG, PNG, BMP, PPM/PGM, TIFF, WebP).

    Raises:
        BadImage: the bytes are empty or not an image of those formats.
    """
    if not data:
        raise BadImage("empty file (0 bytes)")
    try:
        with Image.open(io.BytesIO(data), formats=_PIL_FORMATS) as img:
            img.load()
            rgb = img if img.mode == "RGB" else to_rgb8(img)
    except Image.UnidentifiedImageError as err:
        # Pillow's message names the in-memory buffer (<_io.BytesIO object at 0x...>), which
        # tells the user nothing; the caller names the file
        raise BadImage("not an image Pillow can identify (JPEG, PNG, BMP, PPM/PGM, TIFF or "
                       "WebP); the file is damaged or of another kind") from err
    except Exception as err:  # PIL plugins raise many exception types on corrupt input
        raise BadImage(f"{type(err).__name__}: {err}") from err
    if image_size is not None and rgb.size != (image_size, image_size):
        rgb = rgb.resize((image_size, image_size), Image.Resampling.BILINEAR)
    return np.asarray(rgb).transpose(2, 0, 1)
