"""Turn an image file as people make it into the input a trained run expects.

MNIST's digits are light ink on black, cropped to the ink, scaled to fit a 20x20 box and
centred by their centre of mass in 28x28. A photo of a digit on paper, a drawing with a
transparent background or a digit in the corner of a large canvas looks nothing like that
until the same steps are applied. :func:`prepare_image` applies them (and
:func:`prepare_rgba` to an image already in memory, keeping each step to show, as
``minicnn explore`` does):

1. read the file (any size, any channel count; 16-bit and palette images too);
2. composite transparency onto a background that contrasts with the ink, so black ink on a
   transparent background works;
3. for grayscale runs: convert to gray by luminance, invert when the border is light (dark
   ink on a light background), stretch the contrast between background and ink, crop to the
   ink's bounding box, scale it to fit the box (20x20 in 28x28 for digit data sets, the whole
   frame otherwise) and centre it (by centre of mass for digits, as MNIST did);
4. for colour runs (CIFAR-like): only resize, as their training images were.

Everything is NumPy plus Pillow (which comes with matplotlib) for decoding and resampling.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .data import DataError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")

#: Data sets whose images were made like MNIST's: ink scaled into a 20x20 box inside 28x28
#: and centred by centre of mass. Other grayscale sets (Fashion-MNIST) fill the frame.
DIGIT_DATASETS = {"mnist": 20 / 28, "kmnist": 20 / 28}

INK_THRESHOLD = 0.2     # fraction of full contrast above which a pixel counts as ink


@dataclass
class Prepared:
    """An image ready for the model, and what was done to it.

    Attributes
    ----------
    image : ndarray, float32, shape (C, H, W), values in [0, 1]
    inverted : bool
        The image had dark ink on a light background and was inverted.
    steps : list of (str, ndarray)
        Only when asked for (``keep_steps=True``): each intermediate image, in order, with a
        short name ("as drawn", "cropped to the ink", ...); gray steps are ``(H, W)``, colour
        ones ``(H, W, 3)``, all float32 in [0, 1]. The last step is ``image`` itself.
    """

    image: np.ndarray
    inverted: bool = False
    steps: list = field(default_factory=list)


def _pil():
    try:
        from PIL import Image
    except ImportError as exc:  # pragma: no cover - Pillow comes with matplotlib
        raise DataError("reading image files needs Pillow: pip install pillow") from exc
    return Image


def read_rgba(path: str | os.PathLike) -> np.ndarray:
    """Read any image file as RGBA.

    Parameters
    ----------
    path : str or path-like
        PNG, JPEG, BMP, GIF (first frame), WebP or TIFF; 1/8/16-bit, gray, palette, RGB(A).

    Returns
    -------
    ndarray, float32, shape (H, W, 4), values in [0, 1]
        Colour and alpha (1 where the file has no transparency).

    Raises
    ------
    DataError
        Naming the file, when it is missing or cannot be decoded.
    """
    path = Path(path)
    try:
        return _decode(path, str(path))
    except FileNotFoundError as exc:
        raise DataError(f"{path}: no such image file") from exc


def decode_rgba(data: bytes, max_pixels: int | None = None) -> np.ndarray:
    """Decode the bytes of an image file (an upload) as RGBA, like :func:`read_rgba`.

    Parameters
    ----------
    data : bytes
        The whole file.
    max_pixels : int or None
        Refuse images with more pixels than this before decoding them (a small file can
        declare a huge image).

    Returns
    -------
    ndarray, float32, shape (H, W, 4), values in [0, 1]

    Raises
    ------
    DataError
        When the bytes are not an image Pillow can decode, or the image is too large.
    """
    import io

    return _decode(io.BytesIO(data), "the upload", max_pixels)


def _decode(source, name: str, max_pixels: int | None = None) -> np.ndarray:
    Image = _pil()
    try:
        with Image.open(source) as img:
            if max_pixels is not None and img.width * img.height > max_pixels:
                raise DataError(f"{name}: {img.width}x{img.height} is more than the "
                                f"{max_pixels:,} pixels allowed")
            img.load()
            if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
                gray = np.asarray(img, dtype=np.float32)
                top = 65535.0 if img.mode.startswith("I;16") or gray.max() > 255 else 255.0
                gray = np.clip(gray / top, 0.0, 1.0)
                return np.dstack([gray, gray, gray, np.ones_like(gray)])
            rgba = np.asarray(img.convert("RGBA"), dtype=np.float32) / 255.0
    except (FileNotFoundError, DataError):
        raise
    except Exception as exc:  # Pillow raises UnidentifiedImageError, OSError, SyntaxError...
        raise DataError(f"{name}: cannot read image ({type(exc).__name__}: {exc})") from exc
    return rgba


def luminance(rgb: np.ndarray) -> np.ndarray:
    """Gray ``(H, W)`` from RGB ``(H, W, 3)`` by ITU-R 601 luma (what Pillow's "L" uses)."""
    return rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114


def composite(rgba: np.ndarray) -> np.ndarray:
    """RGB ``(H, W, 3)`` with transparency flattened onto a background that shows the ink.

    The colour of fully transparent pixels is meaningless (often black, like the ink), so the
    background is chosen against the visible pixels: white behind dark ink, black behind
    light ink. An opaque image is returned unchanged.
    """
    rgb, alpha = rgba[..., :3], rgba[..., 3:]
    if np.all(alpha >= 1.0):
        return rgb
    weight = alpha[..., 0]
    ink = (luminance(rgb) * weight).sum() / max(weight.sum(), 1e-6)
    background = 1.0 if ink < 0.5 else 0.0
    return rgb * alpha + background * (1.0 - alpha)


def border(gray: np.ndarray) -> np.ndarray:
    """The pixels of the outer ring of ``gray`` (5 % of the smaller side, at least 1)."""
    h, w = gray.shape
    k = max(1, min(h, w) // 20)
    return np.concatenate([gray[:k].ravel(), gray[-k:].ravel(), gray[:, :k].ravel(),
                           gray[:, -k:].ravel()])


def ink_on_black(gray: np.ndarray) -> tuple[np.ndarray, bool]:
    """Make the ink light and the background 0, with full contrast.

    A light border means dark ink on a light background: the image is inverted. The
    background level (the border's median) becomes 0 and the brightest ink 1.

    Returns
    -------
    (ndarray (H, W) float32 in [0, 1], inverted: bool)
    """
    inverted = bool(np.median(border(gray)) > 0.5)
    if inverted:
        gray = 1.0 - gray
    background = float(np.median(border(gray)))
    top = float(gray.max())
    if top - background < 1e-6:          # blank: nothing to stretch
        return np.zeros_like(gray), inverted
    return np.clip((gray - background) / (top - background), 0.0, 1.0), inverted


def _resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize a float ``(H, W)`` image with Pillow's antialiased bilinear filter."""
    Image = _pil()
    out = Image.fromarray(np.ascontiguousarray(image, dtype=np.float32), mode="F")
    return np.asarray(out.resize((width, height), Image.Resampling.BILINEAR), dtype=np.float32)


def _paste(canvas: np.ndarray, image: np.ndarray, top: int, left: int) -> np.ndarray:
    """Copy ``image`` into ``canvas`` at ``(top, left)``, clipping what falls outside."""
    h, w = image.shape
    ch, cw = canvas.shape
    t0, l0 = max(top, 0), max(left, 0)
    t1, l1 = min(top + h, ch), min(left + w, cw)
    if t1 > t0 and l1 > l0:
        canvas[t0:t1, l0:l1] = image[t0 - top:t1 - top, l0 - left:l1 - left]
    return canvas


def centre_ink(ink: np.ndarray, size: tuple[int, int], box_fraction: float,
               by_mass: bool, steps: list | None = None) -> np.ndarray:
    """Crop to the ink, scale it to fit the box, centre it in a ``size`` frame.

    Parameters
    ----------
    ink : ndarray (H, W), light ink on 0
    size : (height, width) of the result
    box_fraction : float
        The longer side of the ink is scaled to this fraction of the frame (20/28 for
        MNIST), keeping the aspect ratio.
    by_mass : bool
        Centre the ink's centre of mass (MNIST) rather than its bounding box.
    steps : list or None
        When given, ``("cropped to the ink", crop)`` and ``("scaled to HxW", scaled)`` are
        appended to it (nothing for a blank image, which is only resized).

    Returns
    -------
    ndarray (height, width), float32
    """
    rows = np.flatnonzero((ink > INK_THRESHOLD).any(axis=1))
    cols = np.flatnonzero((ink > INK_THRESHOLD).any(axis=0))
    if rows.size == 0:
        return _resize(ink, *size)
    crop = ink[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    height, width = size
    scale = box_fraction * min(height, width) / max(crop.shape)
    h = max(1, round(crop.shape[0] * scale))
    w = max(1, round(crop.shape[1] * scale))
    scaled = np.clip(_resize(crop, h, w), 0.0, 1.0)
    if steps is not None:
        steps += [("cropped to the ink", crop), (f"scaled to {h}x{w}", scaled)]
    if by_mass and scaled.sum() > 0:
        ys, xs = np.indices(scaled.shape)
        cy, cx = (ys * scaled).sum() / scaled.sum(), (xs * scaled).sum() / scaled.sum()
        # MNIST's digits have their centre of mass at pixel index (14, 14) of 28x28.
        top, left = round(height / 2 - cy), round(width / 2 - cx)
    else:
        top, left = (height - h) // 2, (width - w) // 2
    return _paste(np.zeros(size, dtype=np.float32), scaled, top, left)


def prepare_image(path: str | os.PathLike, input_shape, dataset: str = "",
                  enhance: bool = True) -> Prepared:
    """Read ``path`` and make it look like a training image of a run.

    Parameters
    ----------
    path : str or path-like
    input_shape : (C, H, W)
        The run's input shape; C is 1 (grayscale) or 3 (RGB).
    dataset : str
        The run's data set; digit data sets (:data:`DIGIT_DATASETS`) get MNIST's 20x20 box and
        centre-of-mass centring, other grayscale sets have the ink fill the frame.
    enhance : bool
        False: only convert and resize (no inverting, cropping or centring).

    Returns
    -------
    Prepared
        ``image`` float32 ``(C, H, W)`` in [0, 1] and whether it was inverted.
    """
    return prepare_rgba(read_rgba(path), input_shape, dataset, enhance)


def prepare_rgba(rgba: np.ndarray, input_shape, dataset: str = "", enhance: bool = True,
                 keep_steps: bool = False) -> Prepared:
    """:func:`prepare_image` for an image already decoded (:func:`read_rgba`,
    :func:`decode_rgba`), optionally keeping every intermediate image.

    Parameters
    ----------
    rgba : ndarray, float32, shape (H, W, 4), values in [0, 1]
    input_shape, dataset, enhance
        As for :func:`prepare_image`.
    keep_steps : bool
        Fill ``Prepared.steps`` with the intermediate images, named.

    Returns
    -------
    Prepared
    """
    channels, height, width = (int(d) for d in input_shape)
    if channels not in (1, 3):
        raise DataError(f"runs with {channels} input channels are not supported (1 or 3)")
    steps: list | None = [] if keep_steps else None
    rgb = composite(rgba)
    if channels == 3:          # colour runs were trained on whole, uncropped photos
        planes = [_resize(rgb[..., c], height, width) for c in range(3)]
        image = np.clip(np.stack(planes), 0.0, 1.0).astype(np.float32)
        if steps is not None:
            steps += [("as given", rgb), (f"resized to {height}x{width}",
                                          image.transpose(1, 2, 0))]
        return Prepared(image, steps=steps or [])
    gray = luminance(rgb)
    if steps is not None:
        steps.append(("as drawn", gray))
    if not enhance:
        image = np.clip(_resize(gray, height, width), 0.0, 1.0)[None]
        if steps is not None:
            steps.append((f"resized to {height}x{width}", image[0]))
        return Prepared(image, steps=steps or [])
    ink, inverted = ink_on_black(gray)
    if steps is not None:
        steps.append(("inverted: light ink on black" if inverted else "light ink on black",
                      ink))
    box = DIGIT_DATASETS.get(dataset, 1.0)
    by_mass = dataset in DIGIT_DATASETS
    image = centre_ink(ink, (height, width), box, by_mass=by_mass, steps=steps)
    if steps is not None:
        how = "centred by mass" if by_mass else "centred"
        steps.append((f"{how} in {height}x{width}", image))
    return Prepared(image[None].astype(np.float32), inverted, steps=steps or [])


def image_files(paths) -> list[Path]:
    """The files named, with each folder replaced by the image files in it (sorted).

    Raises
    ------
    DataError
        For a folder without image files.
    """
    out = []
    for path in map(Path, paths):
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file()
                           and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith("."))
            if not found:
                raise DataError(f"{path}: no image files ({', '.join(IMAGE_EXTENSIONS)}) in "
                                "this folder")
            out.extend(found)
        else:
            out.append(path)
    return out
