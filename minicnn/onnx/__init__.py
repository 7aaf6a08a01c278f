"""ONNX in and out: :func:`export` writes a minicnn model as an ``.onnx`` file that ONNX
Runtime (or any ONNX reader) runs, :func:`load` reads one back, PyTorch's included.

Needs the ``onnx`` package (``pip install minicnn[onnx]``); nothing here is imported by the
rest of minicnn, so the engine runs without it.

>>> from minicnn import models, onnx as mc_onnx
>>> net = models.build("lenet5", in_channels=1, num_classes=10, rng=0)
>>> mc_onnx.export(net, "lenet5.onnx", (1, 28, 28))        # doctest: +SKIP
>>> again = mc_onnx.load("lenet5.onnx")                     # doctest: +SKIP

What the graph holds (one operator per layer, the batch dimension free, the input the model's
own: normalised images) is described in :mod:`minicnn.onnx.to_onnx`; what can be read back in
:mod:`minicnn.onnx.from_onnx`; the run-folder commands ``minicnn export`` and ``minicnn import`` in
:mod:`minicnn.onnx.runs`.
"""

from __future__ import annotations

from pathlib import Path

from .errors import OnnxExportError, OnnxImportError


def _require_onnx(what: str) -> None:
    try:
        import onnx  # noqa: F401 - only checking that it is there
    except ImportError:
        raise ImportError(f"minicnn.onnx.{what} needs the onnx package: pip install "
                          "'minicnn[onnx]' (or pip install onnx)") from None


def export(model, path, input_shape, meta=None) -> Path:
    """Write ``model`` (eval-mode behaviour) to ``path`` as ONNX, atomically.

    Parameters
    ----------
    model : minicnn Module
        Built of the layers :mod:`minicnn.onnx.to_onnx` lists; anything else is refused with
        an :class:`OnnxExportError` naming the layer.
    path : str or Path
        The ``.onnx`` file (its folder is created).
    input_shape : (C, H, W)
        One sample's shape; the graph's input is ``(batch, C, H, W)`` with a free batch.
    meta : minicnn.runfolder.RunMeta, optional
        Normalisation (mean, std), class names, model and data set names: written to the
        model's ``metadata_props`` as JSON under ``minicnn.*`` keys.

    Returns
    -------
    Path
        ``path``; the model was checked by ``onnx.checker`` (full check) before writing.
    """
    _require_onnx("export")
    from ..serialize import atomic_write
    from .to_onnx import build_model_proto

    data = build_model_proto(model, input_shape, meta).SerializeToString()
    return atomic_write(path, lambda handle: handle.write(data))


def load(path, backend: str | None = None):
    """The minicnn model in the ``.onnx`` file ``path``: a :class:`~minicnn.nn.Sequential`
    (residual forks as :class:`~minicnn.nn.BasicBlock`), in eval mode, ready to run or train.

    Parameters
    ----------
    path : str or Path
    backend : str, optional
        Kernel backend for its convolution, pooling, ReLU and linear layers.

    Raises
    ------
    OnnxImportError
        A ``ValueError`` of one line naming the file (and the node and operator at fault):
        unreadable, truncated or corrupt files, unsupported operators, wrong shapes.
    """
    _require_onnx("load")
    from .from_onnx import read

    return read(path, backend=backend).model


def read(path, backend: str | None = None):
    """Like :func:`load`, but also the input and output shapes and the metadata
    (:class:`minicnn.onnx.from_onnx.OnnxModel`)."""
    _require_onnx("read")
    from .from_onnx import read as read_model

    return read_model(path, backend=backend)


__all__ = ["OnnxExportError", "OnnxImportError", "export", "load", "read"]
