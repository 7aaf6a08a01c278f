"""minicnn model -> ONNX graph, built with the ``onnx`` package's helpers (never by hand).

The graph is a translation of the *layers*, not of a forward pass: :class:`Sequential`'s fused
``Conv2d -> ReLU -> MaxPool2d`` blocks (:mod:`minicnn.nn.fusion`) are a way of running those
three layers, so the graph holds the three operators. Every layer becomes the ONNX operator of
the same meaning, with its weights as initializers named by their state-dict keys
(``"0.weight"``, ``"3.bn1.running_mean"``), so a reader can match the two:

=====================  ====================================================================
layer (eval mode)      ONNX
=====================  ====================================================================
Conv2d                 Conv (pads top, left, bottom, right: ``"same"`` as resolved)
MaxPool2d / AvgPool2d  MaxPool / AveragePool (``count_include_pad`` kept)
AdaptiveAvgPool2d      GlobalAveragePool for 1x1; AveragePool when the sides divide evenly;
                       else Reshape -> MatMul (a fixed averaging matrix) -> Reshape
BatchNorm1d / 2d       BatchNormalization (running statistics; ONNX momentum = 1 - ours)
Linear                 Gemm (``transB = 1``: the weight keeps PyTorch's layout)
ReLU, LeakyReLU,       Relu, LeakyRelu, Sigmoid, Tanh
Sigmoid, Tanh
Flatten                Flatten (``start_dim = 1, end_dim = -1``), else Reshape
Dropout                Dropout with its ratio, inference mode: the identity
BasicBlock             its layers, an Add of the shortcut and a final Relu
=====================  ====================================================================

The input ``"input"`` is ``(batch, C, H, W)`` with a symbolic batch dimension: the graph takes
the model's own input, i.e. images already normalised with the run's mean and std (the same
input as :meth:`Module.forward` and ``minicnn predict``'s model call). Those statistics, the
class names and the model's name travel in the model's ``metadata_props`` (:data:`METADATA_KEYS`)
so that a reader can normalise; the graph does not do it.

The detector (``tiny-detector``) is exported like any network: its output is the raw grid
``(batch, 5 + classes, rows, cols)`` of its last 1x1 convolution, no decoding in the graph.
Per cell ``(i, j)``: channel 0 the objectness logit, 1-2 ``tx, ty`` (centre at
``((j + sigmoid(tx)) * stride, (i + sigmoid(ty)) * stride)``), 3-4 ``tw, th`` (size
``prior * exp(tw)`` by ``prior * exp(th)`` pixels), then the class logits; a box's score is
``sigmoid(objectness) * max softmax(class logits)``, and non-maximum suppression removes
duplicates. ``stride`` and ``prior`` are in the metadata (``minicnn.detector``);
:func:`minicnn.detection.head.decode` does all of this on the ONNX output as on minicnn's.
"""

from __future__ import annotations

import json

import numpy as np

from .. import nn
from .errors import OnnxExportError

#: The operator set written: ONNX opset 20 (onnx 1.15+) with IR version 9, what every
#: ONNX Runtime since 1.17 reads.
OPSET = 20
IR_VERSION = 9

#: ``metadata_props`` keys (values are JSON text).
METADATA_KEYS = ("minicnn.input_shape", "minicnn.mean", "minicnn.std", "minicnn.classes",
                 "minicnn.model", "minicnn.dataset", "minicnn.input", "minicnn.detector")


class _GraphBuilder:
    """Collects nodes and initializers while the layers are walked."""

    def __init__(self, dtype: np.dtype):
        self.nodes, self.initializers, self.dtype = [], [], dtype
        self._names: set[str] = set()

    def fresh(self, base: str) -> str:
        """A tensor or node name not used yet, from ``base``."""
        name, count = base, 1
        while name in self._names:
            name, count = f"{base}_{count}", count + 1
        self._names.add(name)
        return name

    def constant(self, name: str, value: np.ndarray) -> str:
        from onnx import numpy_helper

        name = self.fresh(name)
        self.initializers.append(numpy_helper.from_array(np.array(value, order="C"), name))
        return name

    def weight(self, name: str, value: np.ndarray) -> str:
        return self.constant(name, np.asarray(value, dtype=self.dtype))

    def node(self, op: str, inputs: list[str], layer_name: str, **attributes) -> str:
        from onnx import helper

        node_name = self.fresh(f"{layer_name or 'model'}/{op}")
        output = self.fresh(f"{node_name}:0")
        self.nodes.append(helper.make_node(op, inputs, [output], name=node_name, **attributes))
        return output


def _prefix(name: str, key: str) -> str:
    return f"{name}.{key}" if name else key


def _conv(g: _GraphBuilder, layer: nn.Conv2d, name: str, x: str, shape):
    top, bottom, left, right = layer._pads
    inputs = [x, g.weight(_prefix(name, "weight"), layer.weight.data)]
    if layer.bias is not None:
        inputs.append(g.weight(_prefix(name, "bias"), layer.bias.data))
    y = g.node("Conv", inputs, name, kernel_shape=list(layer.kernel_size),
               strides=list(layer.stride), pads=[top, left, bottom, right],
               dilations=list(layer.dilation), group=layer.groups)
    return y, layer.output_shape(shape)


def _pool_shape(shape, kernel, stride, padding):
    n, c, h, w = shape
    return (n, c, (h + 2 * padding[0] - kernel[0]) // stride[0] + 1,
            (w + 2 * padding[1] - kernel[1]) // stride[1] + 1)


def _pool(g: _GraphBuilder, layer, name: str, x: str, shape):
    (ph, pw), attributes = layer.padding, {}
    if isinstance(layer, nn.AvgPool2d):
        op, attributes["count_include_pad"] = "AveragePool", int(layer.count_include_pad)
    else:
        op = "MaxPool"
    y = g.node(op, [x], name, kernel_shape=list(layer.kernel_size), strides=list(layer.stride),
               pads=[ph, pw, ph, pw], **attributes)
    return y, _pool_shape(shape, layer.kernel_size, layer.stride, layer.padding)


def _adaptive(g: _GraphBuilder, layer: nn.AdaptiveAvgPool2d, name: str, x: str, shape):
    n, c, h, w = shape
    out_h, out_w = layer.output_size
    if (out_h, out_w) == (1, 1):
        return g.node("GlobalAveragePool", [x], name), (n, c, 1, 1)
    if h % out_h == 0 and w % out_w == 0:
        # Even windows: AdaptiveAvgPool2d's cells are then exactly an ordinary pooling's.
        kernel = [h // out_h, w // out_w]
        return (g.node("AveragePool", [x], name, kernel_shape=kernel, strides=kernel),
                (n, c, out_h, out_w))
    # Uneven (overlapping) windows: every output cell is a fixed weighted sum of the H*W
    # inputs, one MatMul with the averaging matrix between two Reshapes.
    averaging = np.zeros((h * w, out_h * out_w), dtype=g.dtype)
    rows, cols = layer._bounds(h, out_h), layer._bounds(w, out_w)
    for i, (r0, r1) in enumerate(rows):
        for j, (c0, c1) in enumerate(cols):
            cell = np.zeros((h, w), dtype=g.dtype)
            cell[r0:r1, c0:c1] = 1.0 / ((r1 - r0) * (c1 - c0))
            averaging[:, i * out_w + j] = cell.ravel()
    flat = g.node("Reshape", [x, g.constant(_prefix(name, "flat_shape"),
                                            np.array([0, c, h * w], dtype=np.int64))], name)
    pooled = g.node("MatMul", [flat, g.weight(_prefix(name, "averaging"), averaging)], name)
    y = g.node("Reshape", [pooled, g.constant(_prefix(name, "out_shape"),
                                              np.array([0, c, out_h, out_w], dtype=np.int64))],
               name)
    return y, (n, c, out_h, out_w)


def _batchnorm(g: _GraphBuilder, layer, name: str, x: str, shape):
    if not layer.track_running_stats:
        raise OnnxExportError(
            f"cannot export layer {name!r} ({type(layer).__name__}): it has no running "
            "statistics (track_running_stats=False), so its eval forward uses each batch's "
            "own, which ONNX's BatchNormalization cannot express")
    count = layer.num_features
    scale = layer.weight.data if layer.affine else np.ones(count)
    shift = layer.bias.data if layer.affine else np.zeros(count)
    inputs = [x, g.weight(_prefix(name, "weight"), scale), g.weight(_prefix(name, "bias"), shift),
              g.weight(_prefix(name, "running_mean"), layer.running_mean),
              g.weight(_prefix(name, "running_var"), layer.running_var)]
    return g.node("BatchNormalization", inputs, name, epsilon=layer.eps,
                  momentum=1.0 - layer.momentum), shape


def _linear(g: _GraphBuilder, layer: nn.Linear, name: str, x: str, shape):
    inputs = [x, g.weight(_prefix(name, "weight"), layer.weight.data)]
    if layer.bias is not None:
        inputs.append(g.weight(_prefix(name, "bias"), layer.bias.data))
    return g.node("Gemm", inputs, name, transB=1), (shape[0], layer.out_features)


def _flatten(g: _GraphBuilder, layer: nn.Flatten, name: str, x: str, shape):
    rank = len(shape)
    start, end = layer.start_dim % rank, layer.end_dim % rank
    merged = int(np.prod(shape[start:end + 1]))
    out_shape = tuple(shape[:start]) + (merged,) + tuple(shape[end + 1:])
    if start == 1 and end == rank - 1:
        return g.node("Flatten", [x], name, axis=1), out_shape
    # 0 copies the input's size (the symbolic batch); -1 stands for a merge that includes it.
    target = [0] * start + [-1 if start == 0 else merged] + list(shape[end + 1:])
    y = g.node("Reshape", [x, g.constant(_prefix(name, "shape"), np.array(target, np.int64))],
               name)
    return y, out_shape


def _activation(g: _GraphBuilder, layer, name: str, x: str, shape):
    if isinstance(layer, nn.LeakyReLU):
        return g.node("LeakyRelu", [x], name, alpha=layer.negative_slope), shape
    op = {nn.ReLU: "Relu", nn.Sigmoid: "Sigmoid", nn.Tanh: "Tanh"}[type(layer)]
    return g.node(op, [x], name), shape


def _dropout(g: _GraphBuilder, layer: nn.Dropout, name: str, x: str, shape):
    ratio = g.constant(_prefix(name, "ratio"), np.array(layer.p, dtype=g.dtype))
    return g.node("Dropout", [x, ratio], name), shape


def _sequential(g: _GraphBuilder, layer: nn.Sequential, name: str, x: str, shape):
    for child_name, child in layer._modules.items():
        if child is not None:
            x, shape = _layer(g, child, _prefix(name, child_name), x, shape)
    return x, shape


def _basic_block(g: _GraphBuilder, block: nn.BasicBlock, name: str, x: str, shape):
    body, body_shape = x, shape
    for part in ("conv1", "bn1", "relu", "conv2", "bn2"):
        body, body_shape = _layer(g, getattr(block, part), _prefix(name, part), body, body_shape)
    shortcut = x
    if block.downsample is not None:
        shortcut, _ = _layer(g, block.downsample, _prefix(name, "downsample"), x, shape)
    total = g.node("Add", [body, shortcut], name)
    return _layer(g, block.relu_out, _prefix(name, "relu_out"), total, body_shape)


_EXPORTERS = (
    (nn.Conv2d, _conv), ((nn.MaxPool2d, nn.AvgPool2d), _pool),
    (nn.AdaptiveAvgPool2d, _adaptive), ((nn.BatchNorm1d, nn.BatchNorm2d), _batchnorm),
    (nn.Linear, _linear), (nn.Flatten, _flatten),
    ((nn.ReLU, nn.LeakyReLU, nn.Sigmoid, nn.Tanh), _activation), (nn.Dropout, _dropout),
    (nn.Sequential, _sequential), (nn.BasicBlock, _basic_block),
)


def _layer(g: _GraphBuilder, layer, name: str, x: str, shape):
    """Append ``layer``'s nodes; returns ``(output tensor name, output shape)``."""
    for kinds, exporter in _EXPORTERS:
        # Exact types: a subclass may have changed forward, which the graph would not show.
        if type(layer) in (kinds if isinstance(kinds, tuple) else (kinds,)):
            return exporter(g, layer, name, x, shape)
    raise OnnxExportError(
        f"cannot export layer {name or '(the model)'!r} ({type(layer).__name__}): minicnn.onnx "
        "exports Conv2d, MaxPool2d, AvgPool2d, AdaptiveAvgPool2d, BatchNorm1d/2d, Linear, "
        "ReLU, LeakyReLU, Sigmoid, Tanh, Flatten, Dropout, BasicBlock and Sequential")


def _metadata(model, input_shape, meta) -> dict[str, str]:
    values = {"minicnn.input_shape": list(input_shape),
              "minicnn.input": "the model's own input: images normalised as (pixel in [0, 1] "
                               "- mean) / std per channel; the graph does not normalise"}
    if meta is not None:
        values.update({"minicnn.mean": list(meta.mean), "minicnn.std": list(meta.std),
                       "minicnn.classes": list(meta.classes), "minicnn.model": meta.model,
                       "minicnn.dataset": meta.dataset})
    if hasattr(model, "stride") and hasattr(model, "prior"):
        values["minicnn.detector"] = {
            "stride": int(model.stride), "prior": float(model.prior),
            "output": "(N, 5 + classes, rows, cols) raw logits per cell: objectness, tx, ty, "
                      "tw, th, class logits; decode with minicnn.detection.head"}
    return {key: json.dumps(value) for key, value in values.items()}


def _eval_output_shape(model: nn.Module, input_shape, dtype) -> tuple[int, ...]:
    """The shape of ``model``'s eval output for one zero sample (the model's mode is kept):
    refuses, in one line, an ``input_shape`` the model cannot take."""
    was_training = model.training
    model.eval()
    try:
        return tuple(model(np.zeros((1, *input_shape), dtype=dtype)).shape)
    except (ValueError, TypeError) as error:
        raise OnnxExportError(f"export: the model cannot take input_shape {input_shape}: "
                              f"{str(error).splitlines()[0]}") from None
    finally:
        model.train(was_training)


def build_model_proto(model: nn.Module, input_shape, meta=None):
    """The ONNX ``ModelProto`` of ``model`` for inputs ``(batch, *input_shape)``, checked.

    Parameters
    ----------
    model : minicnn Module made of the layers in the module docstring's table
    input_shape : (C, H, W) or (features,)
        One sample's shape; the batch dimension is symbolic (``"batch"``).
    meta : RunMeta, optional
        Its mean, std, classes, model and data set names go into ``metadata_props``.
    """
    import onnx
    from onnx import helper

    input_shape = tuple(int(d) for d in input_shape)
    if not input_shape or any(d < 1 for d in input_shape):
        raise OnnxExportError(f"export: input_shape must be one sample's positive sizes, e.g. "
                              f"(C, H, W), got {input_shape}")
    params = model.parameters()
    dtype = params[0].data.dtype if params else np.dtype(np.float32)
    builder = _GraphBuilder(np.dtype(dtype))
    builder.fresh("input")
    output, output_shape = _layer(builder, model, "", "input", (1, *input_shape))
    expected = _eval_output_shape(model, input_shape, dtype)
    if tuple(output_shape) != expected:     # a bug in a translation above, not a user error
        raise OnnxExportError(f"export: the graph's output shape {output_shape} differs from "
                              f"the model's {expected}")
    # The graph's output must be a node's output named "output": rename the last one.
    last = builder.nodes[-1] if builder.nodes else None
    if last is None or list(last.output) != [output]:
        output = builder.node("Identity", [output], "output")
        last = builder.nodes[-1]
    last.output[0] = "output"
    elem = helper.np_dtype_to_tensor_dtype(builder.dtype)
    graph = helper.make_graph(
        builder.nodes, "minicnn",
        [helper.make_tensor_value_info("input", elem, ["batch", *input_shape])],
        [helper.make_tensor_value_info("output", elem, ["batch", *output_shape[1:]])],
        initializer=builder.initializers)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="minicnn", ir_version=IR_VERSION)
    helper.set_model_props(proto, _metadata(model, input_shape, meta))
    onnx.checker.check_model(proto, full_check=True)
    return proto
