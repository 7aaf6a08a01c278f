"""A :class:`~minicnn.quant.model.QuantizedModel` on disk: ``model.int8.npz``, no pickles.

The file is an ``.npz`` (written compressed, atomically) holding

``header``
    uint8 bytes of UTF-8 JSON: ``format`` ("minicnn-int8"), ``version`` (:data:`FORMAT_VERSION`),
    ``input_shape``, ``info`` (calibration method, accuracies...) and one record per layer:
    its ``kind``, the float layers it replaces (``source``), geometry, ``relu``, the input and
    output quantisation (``scale``, ``zero_point``, ``dtype``; output null for the last layer,
    whose int32 accumulators are dequantised directly) and its weight's shape.
``layers.<i>.weight`` int8, ``layers.<i>.weight_scale`` float32, ``layers.<i>.bias`` int32
    for each conv / linear layer ``i``.

The requantization multipliers and shifts are not stored: :func:`load` recomputes them from
the scales with the same float64 arithmetic that made them, so they come out identical.
Loading checks every array's dtype and shape against the header; a missing, truncated or
corrupt file, or one from a newer format version, is refused in one line
(:class:`QuantFileError`, a :class:`~minicnn.errors.RunFolderError`).
"""

from __future__ import annotations

import io
import json
import math
import zipfile
from pathlib import Path

import numpy as np

from ..errors import RunFolderError
from ..serialize import atomic_write
from .arithmetic import QuantParams
from .model import (QConv, QFlatten, QLinear, QMaxPool, QuantizedModel, layer_shapes,
                    requantize_params)

FORMAT = "minicnn-int8"
FORMAT_VERSION = 1
#: The file name inside a run folder, and the JSON written beside it by ``minicnn quantize``.
RUN_FILE = "model.int8.npz"
RUN_INFO = "quantized.json"


class QuantFileError(RunFolderError):
    """An int8 model file that cannot be used; the message names the file and the problem."""


def _params_dict(params: QuantParams | None):
    return None if params is None else params.to_dict()


def _layer_record(layer) -> dict:
    record = {"kind": layer.kind, "source": list(layer.source)}
    if isinstance(layer, (QConv, QLinear)):
        record.update(relu=bool(layer.relu), input=_params_dict(layer.input),
                      output=_params_dict(layer.output), weight_shape=list(layer.weight.shape))
    if isinstance(layer, QConv):
        record.update(stride=list(layer.stride), padding=list(layer.padding))
    if isinstance(layer, QMaxPool):
        record.update(kernel=list(layer.kernel), stride=list(layer.stride),
                      padding=list(layer.padding))
    return record


def save(qmodel: QuantizedModel, path) -> Path:
    """Write ``qmodel`` to ``path`` (``.npz``, atomically); returns the path."""
    header = {"format": FORMAT, "version": FORMAT_VERSION,
              "input_shape": list(qmodel.input_shape), "info": qmodel.info,
              "layers": [_layer_record(layer) for layer in qmodel.layers]}
    arrays = {"header": np.frombuffer(json.dumps(header).encode("utf-8"), dtype=np.uint8)}
    for index, layer in enumerate(qmodel.layers):
        if isinstance(layer, (QConv, QLinear)):
            arrays[f"layers.{index}.weight"] = layer.weight.astype(np.int8)
            arrays[f"layers.{index}.weight_scale"] = layer.weight_scale.astype(np.float32)
            arrays[f"layers.{index}.bias"] = layer.bias.astype(np.int32)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return atomic_write(path, lambda handle: handle.write(buffer.getvalue()))


def _fail(path, message: str):
    raise QuantFileError(f"{path}: {message}")


def _ints(path, record, key, count, index):
    value = record.get(key)
    if (not isinstance(value, list) or len(value) != count
            or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0
                       for v in value)):
        _fail(path, f"layer {index}: {key!r} must be {count} whole numbers >= 0, got {value!r}")
    return tuple(value)


def _params(path, value, index, key, nullable=False) -> QuantParams | None:
    if value is None and nullable:
        return None
    if not isinstance(value, dict):
        _fail(path, f"layer {index}: {key!r} must be an object with scale, zero_point, dtype")
    try:
        scale, zero = value["scale"], value["zero_point"]
        if (not isinstance(zero, int) or isinstance(zero, bool)
                or not isinstance(scale, (int, float)) or isinstance(scale, bool)):
            raise ValueError("scale must be a number and zero_point a whole number")
        return QuantParams(float(scale), zero, value["dtype"])
    except (KeyError, ValueError, TypeError) as error:
        _fail(path, f"layer {index}: {key!r}: {error}")


def _array(path, archive, name, dtype, shape):
    if name not in archive:
        _fail(path, f"missing array {name!r}")
    value = archive[name]
    if value.dtype != np.dtype(dtype) or tuple(value.shape) != tuple(shape):
        _fail(path, f"array {name!r} must be {np.dtype(dtype)} of shape {tuple(shape)}, got "
                    f"{value.dtype} of shape {value.shape}")
    return value


def load(path, backend: str = "numba") -> QuantizedModel:
    """Read a :class:`QuantizedModel` written by :func:`save` (no pickles; checked)."""
    path = Path(path)
    if not path.is_file():
        raise QuantFileError(f"{path}: no such int8 model file")
    try:
        with np.load(path, allow_pickle=False) as npz:
            archive = {name: npz[name] for name in npz.files}
    except (ValueError, OSError, zipfile.BadZipFile, EOFError, KeyError) as error:
        raise QuantFileError(f"{path}: not a readable int8 model file "
                             f"({str(error).splitlines()[0] or type(error).__name__})") from None
    if "header" not in archive or archive["header"].dtype != np.uint8:
        _fail(path, "no header (not an int8 model file written by minicnn)")
    try:
        header = json.loads(archive["header"].tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        _fail(path, "the header is not valid JSON")
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        _fail(path, f"not an int8 model file (format is not {FORMAT!r})")
    version = header.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        _fail(path, f"format version must be a whole number >= 1, got {version!r}")
    if version > FORMAT_VERSION:
        _fail(path, f"format version {version} is newer than this minicnn reads "
                    f"({FORMAT_VERSION}); upgrade minicnn or run `minicnn quantize` again")
    input_shape = header.get("input_shape")
    if (not isinstance(input_shape, list) or len(input_shape) != 3
            or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0
                       for d in input_shape)):
        _fail(path, f"input_shape must be 3 positive whole numbers, got {input_shape!r}")
    records = header.get("layers")
    if not isinstance(records, list) or not records:
        _fail(path, "layers must be a non-empty list")
    info = header.get("info", {})
    if not isinstance(info, dict):
        _fail(path, "info must be an object")
    layers = [_layer(path, archive, index, record) for index, record in enumerate(records)]
    try:
        layer_shapes(layers, input_shape)
        return QuantizedModel(layers, input_shape, backend=backend, info=info)
    except ValueError as error:
        _fail(path, str(error))


def _layer(path, archive, index, record):
    if not isinstance(record, dict):
        _fail(path, f"layer {index} must be an object")
    kind = record.get("kind")
    source = record.get("source", [])
    if not isinstance(source, list) or not all(isinstance(s, int) for s in source):
        _fail(path, f"layer {index}: 'source' must be a list of whole numbers")
    source = tuple(source)
    if kind == "flatten":
        return QFlatten(source)
    if kind == "maxpool":
        kernel = _ints(path, record, "kernel", 2, index)
        stride = _ints(path, record, "stride", 2, index)
        if min(kernel) < 1 or min(stride) < 1:
            _fail(path, f"layer {index}: kernel and stride must be >= 1")
        return QMaxPool(source, kernel, stride, _ints(path, record, "padding", 4, index))
    if kind not in ("conv", "linear"):
        _fail(path, f"layer {index}: unknown kind {kind!r}")
    rank = 4 if kind == "conv" else 2
    shape = _ints(path, record, "weight_shape", rank, index)
    if min(shape) < 1:
        _fail(path, f"layer {index}: weight_shape must be positive, got {shape}")
    if not isinstance(record.get("relu"), bool):
        _fail(path, f"layer {index}: 'relu' must be true or false")
    input_params = _params(path, record.get("input"), index, "input")
    output = _params(path, record.get("output"), index, "output", nullable=True)
    prefix = f"layers.{index}."
    weight = _array(path, archive, prefix + "weight", np.int8, shape)
    weight_scale = _array(path, archive, prefix + "weight_scale", np.float32, shape[:1])
    bias = _array(path, archive, prefix + "bias", np.int32, shape[:1])
    if not all(math.isfinite(s) and s > 0 for s in weight_scale.tolist()):
        _fail(path, f"layer {index}: weight scales must be finite and > 0")
    if weight.size and int(np.abs(weight.astype(np.int16)).max()) > 127:
        _fail(path, f"layer {index}: int8 weights must lie in [-127, 127]")
    try:
        multiplier, shift = requantize_params(input_params, weight_scale, output)
    except ValueError as error:
        _fail(path, f"layer {index}: {error}")
    common = dict(source=source, weight=weight, weight_scale=weight_scale, bias=bias,
                  relu=record["relu"], input=input_params, output=output,
                  multiplier=multiplier, shift=shift)
    if kind == "conv":
        stride = _ints(path, record, "stride", 2, index)
        if min(stride) < 1:
            _fail(path, f"layer {index}: stride must be >= 1")
        return QConv(stride=stride, padding=_ints(path, record, "padding", 4, index), **common)
    return QLinear(**common)
