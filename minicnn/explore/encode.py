"""Arrays to JSON for the page: exact float32 values, or 8-bit pictures with their scale.

Feature maps are shown as pictures, so :func:`picture` sends one byte per value (a layer of
the MNIST CNN is 25,088 values: 33 kB of base64 instead of ~400 kB of JSON numbers) with the
scale that turns the bytes back into values within ``scale / 255``. :func:`exact` sends
float32 bytes, for the numbers the page prints and for the tests.
"""

from __future__ import annotations

import base64

import numpy as np


def exact(array: np.ndarray) -> dict:
    """``{"shape", "dtype": "float32", "data": base64 of the little-endian float32 bytes}``."""
    array = np.ascontiguousarray(array, dtype="<f4")
    return {"shape": list(array.shape), "dtype": "float32",
            "data": base64.b64encode(array.tobytes()).decode("ascii")}


def picture(array: np.ndarray) -> dict:
    """One byte per value, and how to read it back.

    Values with no negatives map ``[0, scale]`` to bytes 0..255 (``signed`` false); values
    with negatives map ``[-scale, scale]`` to 0..255 with 0 at 127.5 (``signed`` true), so a
    diverging colour map can show the sign. ``scale`` is the largest magnitude (1 for an
    all-zero array).

    Returns
    -------
    dict
        ``{"shape", "dtype": "uint8", "signed", "scale", "data": base64}``.
    """
    array = np.asarray(array, dtype=np.float32)
    signed = bool(array.size and array.min() < 0)
    scale = float(np.abs(array).max()) if array.size else 0.0
    scale = scale if scale > 0 else 1.0
    if signed:
        q = np.rint(array / scale * 127.5 + 127.5)
    else:
        q = np.rint(array / scale * 255.0)
    q = np.clip(q, 0, 255).astype(np.uint8)
    return {"shape": list(array.shape), "dtype": "uint8", "signed": signed, "scale": scale,
            "data": base64.b64encode(q.tobytes()).decode("ascii")}


def unpicture(payload: dict) -> np.ndarray:
    """The values :func:`picture` encoded, within ``scale / 255`` (for tests and scripts)."""
    q = np.frombuffer(base64.b64decode(payload["data"]), dtype=np.uint8).astype(np.float32)
    q = q.reshape(payload["shape"])
    if payload["signed"]:
        return (q - 127.5) / 127.5 * payload["scale"]
    return q / 255.0 * payload["scale"]


def unexact(payload: dict) -> np.ndarray:
    """The array :func:`exact` encoded."""
    return np.frombuffer(base64.b64decode(payload["data"]), dtype="<f4").reshape(
        payload["shape"])


def thumbnail(image: np.ndarray, longest: int = 160) -> np.ndarray:
    """A gray ``(H, W)`` or colour ``(H, W, 3)`` image in [0, 1], shrunk (antialiased) so its
    longer side is at most ``longest`` pixels; only for showing a big drawing or photo."""
    height, width = image.shape[:2]
    if max(height, width) <= longest:
        return image
    from PIL import Image

    factor = longest / max(height, width)
    size = (max(1, round(width * factor)), max(1, round(height * factor)))
    planes = image[..., None] if image.ndim == 2 else image
    out = [np.asarray(Image.fromarray(np.ascontiguousarray(planes[..., c], dtype=np.float32),
                                      mode="F").resize(size, Image.Resampling.BILINEAR))
           for c in range(planes.shape[-1])]
    stacked = np.stack(out, axis=-1)
    return stacked[..., 0] if image.ndim == 2 else stacked
