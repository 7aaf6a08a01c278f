"""A :class:`~minicnn.quant.model.QuantizedModel` as a QDQ ONNX graph.

QDQ ("quantize-dequantize") is ONNX's way of writing an integer network with ordinary
operators: every uint8 tensor of the minicnn model appears as a ``QuantizeLinear`` ->
``DequantizeLinear`` pair (its scale and zero point), weights are stored as int8 initializers
behind a ``DequantizeLinear`` with one scale per output channel (``axis = 0``), biases as
int32 behind a ``DequantizeLinear`` whose scales are ``input scale * weight scale``. ONNX
Runtime recognises the pattern ``DQ -> Conv/Gemm -> (Relu) -> Q`` and runs its integer
kernels (QLinearConv, ...); any other runtime can still run the graph in float.

==================  ======================================================================
minicnn int8 layer  ONNX nodes
==================  ======================================================================
(input)             QuantizeLinear -> DequantizeLinear (the model's input scale, zero point)
conv (+ relu)       DQ(weight), DQ(bias) -> Conv (-> Relu) -> Q -> DQ
linear (+ relu)     DQ(weight), DQ(bias) -> Gemm (transB = 1) (-> Relu) -> Q -> DQ
maxpool             MaxPool -> Q -> DQ (the same scale and zero point)
flatten             Flatten (axis 1) -> Q -> DQ
last conv / linear  no Q: its output is the float logits
==================  ======================================================================

The graph's input and metadata are those of the float export (:mod:`minicnn.onnx.to_onnx`,
whose graph builder and metadata helper this module reuses): normalised images with a free
batch dimension, mean, std and classes in ``metadata_props``, plus ``minicnn.quantization``.
ONNX Runtime's integer kernels requantize with a float multiplier and round half to even where
minicnn uses a fixed-point multiplier and rounds half up, so the two can differ by one unit in
a few activations; the predicted classes agree on nearly all images.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .model import QConv, QFlatten, QLinear, QMaxPool, QuantizedModel


def _qdq(g, x: str, params, name: str) -> str:
    scale = g.constant(f"{name}.scale", np.array(params.scale, dtype=np.float32))
    zero = g.constant(f"{name}.zero_point", np.array(params.zero_point, dtype=params.dtype))
    q = g.node("QuantizeLinear", [x, scale, zero], name)
    return g.node("DequantizeLinear", [q, scale, zero], name)


def _weights(g, layer, name: str):
    count = layer.weight.shape[0]
    w = g.node("DequantizeLinear",
               [g.constant(f"{name}.weight_quantized", layer.weight.astype(np.int8)),
                g.constant(f"{name}.weight_scale", layer.weight_scale.astype(np.float32)),
                g.constant(f"{name}.weight_zero_point", np.zeros(count, np.int8))],
               name, axis=0)
    bias_scale = (np.float64(layer.input.scale)
                  * layer.weight_scale.astype(np.float64)).astype(np.float32)
    b = g.node("DequantizeLinear",
               [g.constant(f"{name}.bias_quantized", layer.bias.astype(np.int32)),
                g.constant(f"{name}.bias_scale", bias_scale),
                g.constant(f"{name}.bias_zero_point", np.zeros(count, np.int32))],
               name, axis=0)
    return w, b


def build_model_proto(qmodel: QuantizedModel, input_shape, meta=None):
    """The checked QDQ ``ModelProto`` of ``qmodel`` for inputs ``(batch, *input_shape)``."""
    import onnx
    from onnx import helper

    from ..onnx.errors import OnnxExportError
    from ..onnx.to_onnx import IR_VERSION, OPSET, _GraphBuilder, _metadata

    input_shape = tuple(int(d) for d in input_shape)
    if input_shape != tuple(qmodel.input_shape):
        raise OnnxExportError(f"export: input_shape {input_shape} differs from the int8 "
                              f"model's {tuple(qmodel.input_shape)}")
    g = _GraphBuilder(np.dtype(np.float32))
    g.fresh("input")
    x = _qdq(g, "input", qmodel.input_params, "input")
    current = qmodel.input_params
    for index, layer in enumerate(qmodel.layers):
        name = f"int8.{index}"
        if isinstance(layer, QConv):
            w, b = _weights(g, layer, name)
            top, bottom, left, right = layer.padding
            x = g.node("Conv", [x, w, b], name, kernel_shape=list(layer.weight.shape[2:]),
                       strides=list(layer.stride), pads=[top, left, bottom, right])
        elif isinstance(layer, QLinear):
            w, b = _weights(g, layer, name)
            x = g.node("Gemm", [x, w, b], name, transB=1)
        elif isinstance(layer, QMaxPool):
            top, bottom, left, right = layer.padding
            x = g.node("MaxPool", [x], name, kernel_shape=list(layer.kernel),
                       strides=list(layer.stride), pads=[top, left, bottom, right])
            x = _qdq(g, x, current, name)
            continue
        elif isinstance(layer, QFlatten):
            x = _qdq(g, g.node("Flatten", [x], name, axis=1), current, name)
            continue
        if layer.relu:
            x = g.node("Relu", [x], name)
        if layer.output is not None:
            current = layer.output
            x = _qdq(g, x, current, name)
    g.nodes[-1].output[0] = "output"
    output_shape = qmodel.output_shape
    graph = helper.make_graph(
        g.nodes, "minicnn-int8",
        [helper.make_tensor_value_info("input", onnx.TensorProto.FLOAT,
                                       ["batch", *input_shape])],
        [helper.make_tensor_value_info("output", onnx.TensorProto.FLOAT,
                                       ["batch", *output_shape])],
        initializer=g.initializers)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="minicnn", ir_version=IR_VERSION)
    props = _metadata(qmodel, input_shape, meta)
    props["minicnn.quantization"] = json.dumps(
        {"scheme": "QDQ: uint8 activations per tensor, int8 symmetric weights per output "
                   "channel, int32 bias", "info": qmodel.info})
    helper.set_model_props(proto, props)
    onnx.checker.check_model(proto, full_check=True)
    return proto


def export(qmodel: QuantizedModel, path, input_shape, meta=None) -> Path:
    """Write ``qmodel`` to ``path`` as a QDQ ONNX file, atomically; returns the path."""
    try:
        import onnx  # noqa: F401 - only checking that it is there
    except ImportError:
        raise ImportError("minicnn.quant.export_onnx needs the onnx package: pip install "
                          "'minicnn[onnx]' (or pip install onnx)") from None
    from ..serialize import atomic_write

    data = build_model_proto(qmodel, input_shape, meta).SerializeToString()
    return atomic_write(path, lambda handle: handle.write(data))
