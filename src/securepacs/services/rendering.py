"""Turning one frame of a DICOM image into a PNG for display.

One responsibility: the grayscale display pipeline of PS3.3 C.11 for the viewer: decode the
pixel data with pydicom (numpy; compressed transfer syntaxes through the pylibjpeg plugins
when installed), apply the Modality LUT (Rescale Slope / Intercept, C.11.1), a linear VOI
window (Window Center / Width, C.11.2.1.2.1: the given ones, or the frame's range), invert
MONOCHROME1 (C.7.6.3.1.2), and encode 8-bit PNG with Pillow. Colour images (RGB, YBR) come
out of pydicom as RGB and are shown as they are. Thumbnails are shrunk to a box.
"""

from __future__ import annotations

from dataclasses import dataclass
from io import BytesIO

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.pixels import apply_modality_lut, pixel_array

from securepacs.errors import MediaError

__all__ = ["PRESETS", "Picture", "Window", "default_window", "render_png"]


@dataclass(frozen=True)
class Window:
    """A linear VOI window (PS3.3 C.11.2.1.2.1), in modality units (e.g. Hounsfield)."""

    center: float
    width: float


#: CT presets (Hounsfield units), the usual reading-room values.
PRESETS = {
    "lung": Window(-600.0, 1500.0),
    "bone": Window(400.0, 1800.0),
    "soft tissue": Window(40.0, 400.0),
}


def _first(value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
        items = list(value)  # type: ignore[call-overload]
        value = items[0] if items else None
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def default_window(ds: Dataset, values: np.ndarray | None = None) -> Window | None:
    """The data set's first Window Center / Width, else the range of `values`."""
    center, width = _first(ds.get("WindowCenter")), _first(ds.get("WindowWidth"))
    if center is not None and width is not None and width >= 1:
        return Window(center, width)
    if values is None or values.size == 0:
        return None
    low, high = float(values.min()), float(values.max())
    return Window((low + high) / 2 + 0.5, max(high - low, 1.0) + 1.0)


def _frame(ds: Dataset, frame: int) -> np.ndarray:
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if not 0 <= frame < frames:
        raise MediaError(f"frame {frame + 1} does not exist (the image has {frames})")
    try:
        pixels = pixel_array(ds, index=frame if frames > 1 else None)
    except Exception as exc:  # pydicom raises many types for undecodable pixel data
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        name = getattr(syntax, "name", str(syntax))
        raise MediaError(f"cannot decode the pixel data ({name}): {exc}".splitlines()[0]) from None
    return np.asarray(pixels)


@dataclass(frozen=True)
class Picture:
    """A rendered frame: PNG bytes and the window used (None for colour images)."""

    png: bytes
    window: Window | None


def _grey(ds: Dataset, pixels: np.ndarray, window: Window | None) -> tuple[np.ndarray, Window]:
    values = np.asarray(apply_modality_lut(pixels, ds), dtype=np.float64)
    chosen = window or default_window(ds, values)
    assert chosen is not None
    c, w = chosen.center, max(chosen.width, 1.0)
    # PS3.3 C.11.2.1.2.1, linear function
    scaled = ((values - (c - 0.5)) / (w - 1.0) + 0.5) * 255.0 if w > 1 else (values > c) * 255.0
    out = np.clip(scaled, 0, 255).astype(np.uint8)
    if str(ds.get("PhotometricInterpretation", "")) == "MONOCHROME1":
        out = 255 - out
    return out, chosen


def render_png(ds: Dataset, frame: int = 0, window: Window | None = None,
               box: int | None = None) -> Picture:
    """One frame of `ds` as a PNG picture.

    Parameters
    ----------
    ds : pydicom.dataset.Dataset
        A decoded image (pixel data included).
    frame : int
        0-based frame number (multi-frame images).
    window : Window, optional
        Grayscale window; default: the data set's own, else the frame's range.
    box : int, optional
        Shrink to fit a `box` x `box` square (thumbnails).

    Raises
    ------
    MediaError
        No pixel data, pixel data that cannot be decoded, or a frame that does not exist.
    """
    if "PixelData" not in ds:
        raise MediaError("this instance has no image (no Pixel Data)")
    pixels = _frame(ds, frame)
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2"))
    used = None
    if int(ds.get("SamplesPerPixel", 1) or 1) == 3:  # pydicom returns YBR converted to RGB
        picture = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")
    elif pixels.ndim == 2:
        grey, used = _grey(ds, pixels, window)
        picture = Image.fromarray(grey, "L")
    else:
        raise MediaError(f"cannot display {photometric} images with this shape {pixels.shape}")
    if box is not None:
        picture.thumbnail((box, box))
    out = BytesIO()
    picture.save(out, "PNG", compress_level=1)
    return Picture(out.getvalue(), used)
