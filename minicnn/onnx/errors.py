"""The errors of :mod:`minicnn.onnx`: one line each, ``ValueError``s so that the command line
reports them as any other bad input (exit code 1)."""

from __future__ import annotations


class OnnxExportError(ValueError):
    """A model cannot be written as ONNX; the message names the layer and says why."""


class OnnxImportError(ValueError):
    """An ``.onnx`` file cannot become a minicnn model (unreadable, invalid, or an operator,
    attribute or shape minicnn does not have); the message names the file and the node."""
