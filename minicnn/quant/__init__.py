"""int8 post-training quantization: a trained float classifier run on 8-bit integers.

The scheme
----------
A real tensor is stored as integers with a *scale* and a *zero point*,
``real = scale * (q - zero_point)`` (:mod:`minicnn.quant.arithmetic`):

* **activations** (the input and every layer's output) are ``uint8``, one scale and zero
  point per tensor, chosen from the range the tensor took on calibration images
  (:mod:`minicnn.quant.calibrate`: ``minmax``, ``percentile`` or ``entropy``). The zero point
  represents 0.0 exactly, so zero padding is the zero point and a fused ReLU is a clamp at it;
* **weights** are ``int8`` symmetric (zero point 0, ``[-127, 127]``), one scale per output
  channel; a BatchNorm after a conv is folded into the conv's weights and bias first;
* **biases** are ``int32`` in units of ``input scale * weight scale``, so they add straight
  into the accumulator.

A conv or linear layer then computes, in integers only (:mod:`minicnn.kernels.int8_reference`)::

    acc[co] = bias[co] + sum_k w[co, k] * (x[k] - x_zero)            (int32)
    y[co]   = clamp(x_zero' + (acc[co] * M[co]) >> (31 + shift[co]))  (uint8)

where ``M * 2**-(31 + shift)`` is ``x_scale * w_scale[co] / y_scale`` in fixed point
(:func:`~minicnn.quant.arithmetic.quantize_multiplier`; the shift rounds half up). Max pooling
works on the uint8 values directly. The last layer's int32 accumulators are the output:
``logits[c] = x_scale * w_scale[c] * acc[c]``, with no final rounding to 8 bits.

Use
---
::

    qmodel = minicnn.quant.quantize(model, calibration_images)   # float32 normalised NCHW
    logits = qmodel(images)                   # like model(images): float in, float out
    codes = qmodel.forward_int(qmodel.quantize_input(images))    # the integers themselves
    minicnn.quant.save(qmodel, "model.int8.npz"); minicnn.quant.load("model.int8.npz")

On the command line: ``minicnn quantize RUN``, then ``minicnn evaluate RUN --int8``,
``minicnn predict RUN --int8 IMAGES`` and ``minicnn export RUN OUT.onnx --int8`` (a QDQ graph
that ONNX Runtime runs with its integer kernels).

Covered models: ``lenet5`` and ``mnist-cnn`` (and any flat Sequential of Conv2d, BatchNorm2d
after a conv, ReLU, MaxPool2d, Flatten, Linear, Dropout). Models with ``AdaptiveAvgPool2d``,
residual blocks or grouped convolutions are refused, naming the layer.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .files import QuantFileError, RUN_FILE, RUN_INFO, load, save
from .model import QuantizeError, QuantizedModel, quantize_model

__all__ = ["quantize", "QuantizedModel", "save", "load", "quantize_run", "export_onnx",
           "load_run_int8", "QuantizeError", "QuantFileError", "RUN_FILE", "RUN_INFO"]


def quantize(model, calibration_images, method: str = "minmax", percentile: float = 99.99,
             activation_dtype: str = "uint8") -> QuantizedModel:
    """The int8 version of a trained float ``Sequential``.

    Parameters
    ----------
    model : nn.Sequential
        Conv2d / BatchNorm2d / ReLU / MaxPool2d / Flatten / Linear / Dropout layers.
    calibration_images : float32 (N, C, H, W)
        Normalised as training feeds them; a few hundred training images suffice.
    method : {"minmax", "percentile", "entropy"}
        How a tensor's range is chosen from the values it took (:mod:`.calibrate`).
    percentile : float
        For ``method="percentile"``: the percentile kept at each tail (99.99).
    activation_dtype : {"uint8"}

    Returns
    -------
    QuantizedModel
        Backend ``"numba"``; set ``qmodel.backend = "reference"`` for the loop kernels.
    """
    return quantize_model(model, calibration_images, method=method, percentile=percentile,
                          activation_dtype=activation_dtype)


def export_onnx(qmodel: QuantizedModel, path, input_shape, meta=None) -> Path:
    """Write ``qmodel`` as a QDQ ONNX graph (see :mod:`minicnn.quant.onnx_qdq`)."""
    from .onnx_qdq import export

    return export(qmodel, path, input_shape, meta=meta)


def _file_size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def load_run_int8(run, data_dir=None, backend: str = "numba"):
    """``(config, qmodel, meta)`` of a run folder that ``minicnn quantize`` has quantised.

    Raises
    ------
    minicnn.argtypes.UserError
        When the run has no ``model.int8.npz`` (one line: run ``minicnn quantize RUN``).
    QuantFileError
        When that file is damaged or from a newer minicnn.
    """
    from ..argtypes import UserError
    from ..runfolder import load_run

    config, _, meta = load_run(run, data_dir=data_dir)
    path = Path(run) / RUN_FILE
    if not path.exists():
        raise UserError(f"{run} has no int8 model ({RUN_FILE}); run `minicnn quantize {run}` "
                        "first")
    qmodel = load(path, backend=backend)
    if tuple(qmodel.input_shape) != tuple(meta.input_shape):
        raise QuantFileError(f"{path}: input shape {list(qmodel.input_shape)} differs from "
                             f"the run's {list(meta.input_shape)}; run `minicnn quantize` again")
    return config, qmodel, meta


def quantize_run(run, method: str = "minmax", calibration_images: int = 512,
                 data_dir=None, seed: int = 0, percentile: float = 99.99) -> dict:
    """Quantise run folder ``run``'s trained model and write ``model.int8.npz`` beside it.

    ``calibration_images`` training images (picked with ``numpy.random.default_rng(seed)``,
    normalised with the run's mean and std) calibrate the activation ranges; the float and
    int8 models are then measured on the run's test set.

    Returns
    -------
    dict
        ``method``, ``calibration_images``, ``test_images``, ``float_accuracy``,
        ``int8_accuracy``, ``float_size`` and ``int8_size`` (bytes of ``model.npz`` and
        ``model.int8.npz``), ``path`` (the int8 file) and ``info_path`` (``quantized.json``).
    """
    from ..argtypes import UserError
    from ..data import load_dataset
    from ..data.transforms import Normalize, default_transform
    from ..runfolder import load_run
    from ..serialize import write_json
    from ..tasks import for_model
    from ..tasks.classification import evaluate

    if calibration_images < 1:
        raise UserError(f"calibration images must be at least 1, got {calibration_images}")
    run = Path(run)
    config, model, meta = load_run(run, data_dir=data_dir)
    if for_model(config.model).name != "classification":
        raise UserError(f"minicnn quantize takes classifiers; {run} is a "
                        f"{for_model(config.model).name} run")
    model.eval()
    from .model import plan_layers
    plan_layers(model)                   # an unsupported layer is refused before data loads
    where = data_dir or config.data_dir
    train = load_dataset(config.dataset, "train", data_dir=where, seed=config.seed)
    rng = np.random.default_rng(seed)
    count = min(int(calibration_images), len(train))
    chosen = np.sort(rng.choice(len(train), size=count, replace=False))
    normalize = Normalize(meta.mean, meta.std)
    images = normalize.apply_to_uint8(train.images[chosen])
    qmodel = quantize(model, images, method=method, percentile=percentile)

    test = load_dataset(config.dataset, "test", data_dir=where, limit=config.test_limit,
                        seed=config.seed)
    test.mean, test.std = meta.mean, meta.std
    transform = default_transform(test)
    float_accuracy = evaluate(model, test, transform=transform).accuracy
    int8_accuracy = evaluate(qmodel, test, transform=transform).accuracy
    qmodel.info.update(float_accuracy=float_accuracy, int8_accuracy=int8_accuracy,
                       test_images=len(test), seed=int(seed), model=config.model,
                       dataset=config.dataset)
    path = save(qmodel, run / RUN_FILE)
    result = {"method": method, "calibration_images": count, "test_images": len(test),
              "float_accuracy": float_accuracy, "int8_accuracy": int8_accuracy,
              "float_size": _file_size(run / "model.npz"), "int8_size": _file_size(path),
              "path": str(path), "info_path": str(run / RUN_INFO)}
    write_json(run / RUN_INFO, {**qmodel.info, "float_size": result["float_size"],
                                "int8_size": result["int8_size"]})
    return result
