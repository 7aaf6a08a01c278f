"""ONNX graph -> minicnn model: a :class:`~minicnn.nn.Sequential` of ordinary layers.

The file is parsed by the ``onnx`` package (protobuf: nothing is unpickled or executed),
checked with ``onnx.checker`` and strict shape inference, and then read node by node from the
input to the output. Each node becomes the layer of the same meaning (the table in
:mod:`minicnn.onnx.to_onnx`, read backwards); a fork whose two paths meet at an ``Add``
followed by ``Relu`` becomes a :class:`~minicnn.nn.BasicBlock` when the paths are its
``conv-bn-relu-conv-bn`` body and an identity or ``conv 1x1-bn`` shortcut. ``Identity`` nodes
are skipped; weights may be initializers, ``Constant`` nodes or ``Identity`` copies of either
(PyTorch's exporter shares equal initial values that way).

Anything else is refused with one line naming the file, the operator and the node: an
unknown operator, an attribute minicnn has no layer for (``ceil_mode``, asymmetric padding,
``transA``), a weight that is computed rather than stored, a graph with more than one input or
output, or weights whose shapes disagree with the layer.

A note for PyTorch users: ``torch.onnx.export`` in its default eval mode folds each
``BatchNorm2d`` into the convolution before it. The graph then still runs the same, but there is
no batch norm left to train; export with ``training=torch.onnx.TrainingMode.PRESERVE`` (model in
eval mode) to keep ``BatchNormalization`` nodes, and so PyTorch's training behaviour.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import nn
from .errors import OnnxImportError


@dataclass
class OnnxModel:
    """What :func:`read` finds in an ``.onnx`` file.

    Attributes
    ----------
    model : minicnn Module (a Sequential), in eval mode
    input_shape : tuple of int
        One sample's shape, ``(C, H, W)`` (or ``(features,)``); the batch is free.
    output_shape : tuple of int
        One sample's output shape.
    metadata : dict
        The ``metadata_props``; values JSON-decoded where they are JSON.
    """

    model: nn.Module
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    metadata: dict = field(default_factory=dict)


class _Graph:
    """The parsed graph: constants, shapes, and who consumes which tensor."""

    def __init__(self, proto, where: str):
        from onnx import numpy_helper

        self.where = where
        graph = proto.graph
        self.constants = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
        self.nodes = []
        for node in graph.node:
            if node.op_type == "Constant":
                self.constants[node.output[0]] = self._constant_value(node)
            elif node.op_type == "Identity" and node.input[0] in self.constants:
                self.constants[node.output[0]] = self.constants[node.input[0]]
            else:
                self.nodes.append(node)
        self.consumers: dict[str, list] = {}
        for node in self.nodes:
            for name in node.input:
                if name and name not in self.constants:
                    self.consumers.setdefault(name, []).append(node)
        self.shapes = {}
        for info in (*graph.input, *graph.value_info, *graph.output):
            dims = info.type.tensor_type.shape.dim
            self.shapes[info.name] = tuple(d.dim_value if d.HasField("dim_value") else None
                                           for d in dims)

    def _constant_value(self, node) -> np.ndarray:
        from onnx import helper, numpy_helper

        for attribute in node.attribute:
            if attribute.name == "value":
                return numpy_helper.to_array(attribute.t)
            if attribute.name in ("value_float", "value_int", "value_floats", "value_ints"):
                return np.array(helper.get_attribute_value(attribute))
        raise self.error(node, "a Constant that holds no tensor")

    def error(self, node, text: str) -> OnnxImportError:
        return OnnxImportError(f"{self.where}: node {node.name or '(unnamed)'!r} "
                               f"({node.op_type}): {text}")

    def constant(self, node, index: int, what: str, required: bool = True):
        """Input ``index`` of ``node``, which must be a stored tensor (a weight)."""
        if index >= len(node.input) or not node.input[index]:
            if required:
                raise self.error(node, f"has no {what} input")
            return None
        name = node.input[index]
        if name not in self.constants:
            raise self.error(node, f"its {what} ({name!r}) is computed by the graph; minicnn "
                                   "reads only stored weights (initializers or Constants)")
        return self.constants[name]


def _attributes(node) -> dict:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _check_attributes(graph: _Graph, node, attributes: dict, allowed: dict) -> None:
    """Refuse attributes minicnn has no layer for; ``allowed`` maps a name to the values
    accepted (``None``: any)."""
    for name, value in attributes.items():
        value = tuple(value) if isinstance(value, list) else value
        if name not in allowed:
            raise graph.error(node, f"attribute {name}={value!r} is not supported")
        if allowed[name] is not None and value not in allowed[name]:
            raise graph.error(node, f"attribute {name}={value!r} is not supported (minicnn "
                                    f"reads {name} in {sorted(allowed[name], key=repr)})")


def _symmetric_pads(graph: _Graph, node, pads) -> tuple[int, int]:
    top, left, bottom, right = pads
    if (top, left) != (bottom, right):
        raise graph.error(node, f"asymmetric pads {list(pads)} (top, left, bottom, right); "
                                "minicnn pads both sides alike (or Conv2d's 'same')")
    return top, left


def _pads(graph: _Graph, node, attributes: dict, kernel, stride, dilation, input_shape):
    """(top, left, bottom, right) from ``pads`` or ``auto_pad`` (``SAME_UPPER``, PyTorch's
    ``padding='same'``, puts an odd extra row at the bottom; ``SAME_LOWER`` at the top)."""
    auto = attributes.get("auto_pad", b"NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else auto
    if auto in ("NOTSET", ""):
        return tuple(attributes.get("pads", (0, 0, 0, 0)))
    if auto == "VALID":
        return (0, 0, 0, 0)
    if auto not in ("SAME_UPPER", "SAME_LOWER") or None in input_shape[2:]:
        raise graph.error(node, f"auto_pad={auto!r} is not supported here")
    before, after = [], []
    for size, k, s, d in zip(input_shape[2:], kernel, stride, dilation):
        total = max((-(-size // s) - 1) * s + d * (k - 1) + 1 - size, 0)
        small, large = total // 2, total - total // 2
        before.append(small if auto == "SAME_UPPER" else large)
        after.append(large if auto == "SAME_UPPER" else small)
    return (*before, *after)


def _conv(graph: _Graph, node, dtype, backend, input_shape):
    a = _attributes(node)
    _check_attributes(graph, node, a, {"kernel_shape": None, "strides": None, "pads": None,
                                       "dilations": None, "group": None,
                                       "auto_pad": None})
    weight = graph.constant(node, 1, "weight")
    bias = graph.constant(node, 2, "bias", required=False)
    if weight.ndim != 4:
        raise graph.error(node, f"a {weight.ndim - 2}-D convolution (weight shape "
                                f"{weight.shape}); minicnn has Conv2d only")
    kernel = tuple(a.get("kernel_shape", weight.shape[2:]))
    if kernel != weight.shape[2:]:
        raise graph.error(node, f"kernel_shape {list(kernel)} disagrees with the weight's "
                                f"shape {weight.shape}")
    stride, dilation = tuple(a.get("strides", (1, 1))), tuple(a.get("dilations", (1, 1)))
    pads = _pads(graph, node, a, kernel, stride, dilation, input_shape)
    top, left, bottom, right = pads
    same = [d * (k - 1) for k, d in zip(kernel, dilation)]
    if (stride == (1, 1) and (top, bottom) == (same[0] // 2, same[0] - same[0] // 2)
            and (left, right) == (same[1] // 2, same[1] - same[1] // 2)
            and (top, left) != (bottom, right)):
        padding = "same"       # the one asymmetric padding minicnn has: PyTorch's 'same'
    else:
        padding = _symmetric_pads(graph, node, pads)
    groups = int(a.get("group", 1))
    layer = nn.Conv2d(weight.shape[1] * groups, weight.shape[0], kernel, stride=stride,
                      padding=padding, dilation=dilation, groups=groups,
                      bias=bias is not None, backend=backend, dtype=dtype)
    state = {"weight": weight} if bias is None else {"weight": weight, "bias": bias}
    return layer, state


def _pool(graph: _Graph, node, dtype, backend, input_shape):
    a = _attributes(node)
    allowed = {"kernel_shape": None, "strides": None, "pads": None, "ceil_mode": {0},
               "auto_pad": None, "dilations": {(1, 1)},
               "storage_order": {0}, "count_include_pad": {0, 1}}
    _check_attributes(graph, node, a, allowed)
    if len(node.output) > 1 and node.output[1]:
        raise graph.error(node, "its second output (the argmax indices) is not supported")
    kernel = tuple(a["kernel_shape"])
    stride = tuple(a.get("strides", (1,) * len(kernel)))
    pads = _pads(graph, node, a, kernel, stride, (1, 1), input_shape)
    padding = _symmetric_pads(graph, node, pads)
    if node.op_type == "MaxPool":
        return nn.MaxPool2d(kernel, stride, padding, backend=backend), {}
    # ONNX's default is count_include_pad=0, PyTorch's (and minicnn's) 1; without padding the
    # two agree, and minicnn's default is kept so the layer reads as it would be written.
    include = bool(a.get("count_include_pad", 0)) or padding == (0, 0)
    return nn.AvgPool2d(kernel, stride, padding, count_include_pad=include,
                        backend=backend), {}


def _batchnorm(graph: _Graph, node, dtype, backend, input_shape):
    a = _attributes(node)
    _check_attributes(graph, node, a, {"epsilon": None, "momentum": None,
                                       "training_mode": {0}, "spatial": {1}})
    if len([o for o in node.output if o]) > 1:
        raise graph.error(node, "training-mode outputs (running mean and variance) are not "
                                "supported; export the model in eval mode")
    names = ("weight", "bias", "running_mean", "running_var")
    state = {name: graph.constant(node, index + 1, name) for index, name in enumerate(names)}
    rank = len(input_shape)
    kind = nn.BatchNorm2d if rank == 4 else nn.BatchNorm1d if rank in (2, 3) else None
    if kind is None:
        raise graph.error(node, f"input of rank {rank}; minicnn's batch norms take rank 2, 3 "
                                "or 4")
    # Attributes are float32 in the file: round them back to the decimal that was written
    # (0.9 is stored as 0.899999976).
    eps = float(f"{a.get('epsilon', 1e-5):.6g}")
    momentum = float(f"{1.0 - a.get('momentum', 0.9):.6g}")
    layer = kind(int(state["weight"].shape[0]), eps=eps, momentum=momentum, dtype=dtype)
    state["num_batches_tracked"] = np.array(0, dtype=np.int64)
    return layer, state


def _gemm(graph: _Graph, node, dtype, backend, input_shape):
    a = _attributes(node)
    _check_attributes(graph, node, a, {"transA": {0}, "transB": {0, 1}, "alpha": None,
                                       "beta": None})
    weight = graph.constant(node, 1, "weight")
    bias = graph.constant(node, 2, "bias", required=False)
    if weight.ndim != 2:
        raise graph.error(node, f"weight of shape {weight.shape}, expected a matrix")
    weight = (weight if a.get("transB", 0) else weight.T) * a.get("alpha", 1.0)
    out_features = weight.shape[0]
    state = {"weight": weight}
    if bias is not None:
        if bias.size != out_features:
            raise graph.error(node, f"bias of shape {bias.shape}; expected one value per "
                                    f"output ({out_features})")
        state["bias"] = bias.reshape(out_features) * a.get("beta", 1.0)
    layer = nn.Linear(weight.shape[1], out_features, bias=bias is not None, dtype=dtype,
                      backend=backend)
    return layer, state


def _flatten(graph: _Graph, node, dtype, backend, input_shape):
    a = _attributes(node)
    _check_attributes(graph, node, a, {"axis": {1}})
    return nn.Flatten(), {}


def _reshape(graph: _Graph, node, dtype, backend, input_shape):
    """A Reshape that merges neighbouring dimensions after the batch (``x.view(N, -1)``):
    a :class:`~minicnn.nn.Flatten` over them, read from the shapes inference gave."""
    _check_attributes(graph, node, _attributes(node), {"allowzero": {0}})
    graph.constant(node, 1, "shape")        # a stored shape, not one computed at run time
    output_shape = graph.shapes.get(node.output[0], ())
    rank = len(input_shape)
    if None not in input_shape[1:] and len(output_shape) >= 1 \
            and output_shape[0] == input_shape[0]:
        for start in range(1, rank):
            for end in range(start, rank):
                merged = int(np.prod(input_shape[start:end + 1]))
                if output_shape == input_shape[:start] + (merged,) + input_shape[end + 1:]:
                    return nn.Flatten(start, end - rank if end == rank - 1 else end), {}
    raise graph.error(node, f"a reshape from {list(input_shape)} to {list(output_shape)}; "
                            "minicnn reads only reshapes that merge dimensions after the batch "
                            "(a Flatten)")


def _dropout(graph: _Graph, node, dtype, backend, input_shape):
    a = _attributes(node)
    _check_attributes(graph, node, a, {"ratio": None, "seed": None})
    if len(node.output) > 1 and node.output[1]:
        raise graph.error(node, "its mask output is not supported")
    ratio = graph.constant(node, 1, "ratio", required=False)
    training = graph.constant(node, 2, "training_mode", required=False)
    if training is not None and bool(training):
        raise graph.error(node, "training_mode=true in the graph; export in eval mode")
    p = float(ratio) if ratio is not None else float(a.get("ratio", 0.5))
    return nn.Dropout(float(f"{p:.6g}")), {}


def _activation(graph: _Graph, node, dtype, backend, input_shape):
    a = _attributes(node)
    if node.op_type == "LeakyRelu":
        _check_attributes(graph, node, a, {"alpha": None})
        return nn.LeakyReLU(float(f"{a.get('alpha', 0.01):.6g}")), {}
    _check_attributes(graph, node, a, {})
    if node.op_type == "Relu":
        return nn.ReLU(backend=backend), {}
    return {"Sigmoid": nn.Sigmoid, "Tanh": nn.Tanh}[node.op_type](), {}


def _global_pool(graph: _Graph, node, dtype, backend, input_shape):
    _check_attributes(graph, node, _attributes(node), {})
    return nn.AdaptiveAvgPool2d(1), {}


#: Operator -> converter ``(graph, node, dtype, backend, input shape) -> (layer, state)``.
CONVERTERS = {
    "Conv": _conv, "MaxPool": _pool, "AveragePool": _pool, "GlobalAveragePool": _global_pool,
    "BatchNormalization": _batchnorm, "Gemm": _gemm, "Flatten": _flatten,
    "Reshape": _reshape, "Dropout": _dropout, "Relu": _activation, "LeakyRelu": _activation,
    "Sigmoid": _activation, "Tanh": _activation,
}


def _layer(graph: _Graph, node, dtype, backend):
    converter = CONVERTERS.get(node.op_type)
    if converter is None or node.domain not in ("", "ai.onnx"):
        raise graph.error(node, f"operator {node.op_type!r} is not supported; minicnn reads "
                                f"{', '.join(sorted(CONVERTERS))}, Add (in a BasicBlock) and "
                                "Identity")
    try:
        layer, state = converter(graph, node, dtype, backend, graph.shapes.get(node.input[0], ()))
        if state:
            # Strict: a weight of the wrong shape is refused here, naming the node.
            layer.load_state_dict({k: np.asarray(v, dtype=np.int64 if v.dtype.kind == "i"
                                                 else dtype) for k, v in state.items()})
    except OnnxImportError:
        raise
    except (ValueError, TypeError, KeyError) as error:
        raise graph.error(node, str(error).splitlines()[0]) from None
    return layer


def _only_consumer(graph: _Graph, tensor: str):
    consumers = graph.consumers.get(tensor, [])
    return consumers[0] if len(consumers) == 1 else None


def _branch(graph: _Graph, tensor: str):
    """Follow single-consumer nodes from ``tensor`` to the ``Add`` they reach:
    ``(nodes before it, the Add node)``, or ``(nodes, None)`` when the path forks or ends."""
    nodes = []
    while True:
        node = _only_consumer(graph, tensor)
        if node is None or node.op_type == "Add":
            return nodes, node
        nodes.append(node)
        tensor = node.output[0]


def _basic_block(graph: _Graph, tensor: str, forks: list, dtype, backend):
    """The BasicBlock that starts where ``tensor`` forks; returns ``(block, output tensor)``."""
    def ops(nodes):
        return [n.op_type for n in nodes]

    paths = []
    for start in forks:
        if start.op_type == "Add":
            paths.append(([], start))
        else:
            nodes, add = _branch(graph, start.output[0])
            paths.append(([start, *nodes], add))
    paths.sort(key=lambda path: -len(path[0]))        # the body first, then the shortcut
    body, add = paths[0]
    shortcut = paths[1][0] if len(paths) == 2 else []
    after = _only_consumer(graph, add.output[0]) if add is not None else None
    body_ops = ["Conv", "BatchNormalization", "Relu", "Conv", "BatchNormalization"]
    if (len(paths) != 2 or paths[1][1] is not add or add is None
            or ops(body) != body_ops or ops(shortcut) not in ([], body_ops[:2])
            or after is None or after.op_type != "Relu"):
        raise graph.error(add if add is not None else forks[0],
                          "a fork or join minicnn cannot read: it reads them only as a "
                          "BasicBlock (Conv-BatchNormalization-Relu-Conv-BatchNormalization, "
                          "plus an identity or Conv-BatchNormalization shortcut, joined by Add "
                          f"then Relu); found {len(paths)} path(s): "
                          + " and ".join(str(ops(nodes)) for nodes, _ in paths))
    layers = [_layer(graph, node, dtype, backend) for node in body + shortcut]
    conv1 = layers[0]
    block = nn.BasicBlock(conv1.in_channels, conv1.out_channels, conv1.stride[0],
                          backend=backend, dtype=dtype)
    parts = OrderedDict(conv1=layers[0], bn1=layers[1], conv2=layers[3], bn2=layers[4])
    if shortcut:
        parts["downsample.0"], parts["downsample.1"] = layers[5], layers[6]
    for name, layer in parts.items():
        target = _submodule(block, name)
        if target is None or _signature(target) != _signature(layer):
            raise graph.error(add, f"the paths into this Add are not a BasicBlock: its {name} "
                                   f"would be {_describe(target)}, the graph has "
                                   f"{_describe(layer)}")
        target.load_state_dict(layer.state_dict())
    return block, after.output[0]


def _submodule(module, dotted: str):
    for part in dotted.split("."):
        module = module._modules.get(part) if module is not None else None
    return module


def _signature(layer) -> tuple:
    """What makes two layers compute the same function (weights aside)."""
    if isinstance(layer, nn.Conv2d):
        return ("Conv2d", f"{layer.in_channels}, {layer.out_channels}, kernel_size="
                          f"{layer.kernel_size}, stride={layer.stride}, pads={layer._pads}, "
                          f"dilation={layer.dilation}, groups={layer.groups}, "
                          f"bias={layer.bias is not None}")
    if layer is None:
        return ("missing",)
    text = layer.extra_repr()
    return (type(layer).__name__, text.split(", backend=")[0].split("backend=")[0])


def _describe(layer) -> str:
    return "nothing" if layer is None else repr(layer).splitlines()[0]


def _read_proto(path: Path):
    """The checked ``ModelProto`` in ``path`` with inferred shapes (one line when it is not
    a valid ONNX model)."""
    import onnx
    from google.protobuf.message import DecodeError

    where = str(path)
    try:
        data = path.read_bytes()
    except OSError as error:
        raise OnnxImportError(f"{where}: cannot read: {error.strerror}") from None
    try:
        proto = onnx.load_model_from_string(data)
    except (DecodeError, ValueError, RuntimeError) as error:
        raise OnnxImportError(f"{where} is not a readable ONNX model (truncated or corrupt: "
                              f"{str(error).splitlines()[0] or type(error).__name__})") from None
    if not proto.graph.node:
        raise OnnxImportError(f"{where} is not an ONNX model, or is truncated: it holds no "
                              "graph nodes")
    try:
        onnx.checker.check_model(proto, full_check=True)
        proto = onnx.shape_inference.infer_shapes(proto, check_type=True, strict_mode=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError,
            RuntimeError) as error:
        lines = [line for line in str(error).splitlines() if line.strip()]
        raise OnnxImportError(f"{where} is not a valid ONNX model (truncated, corrupt or "
                              f"inconsistent): {lines[0] if lines else type(error).__name__}"
                              ) from None
    return proto


def _metadata(proto) -> dict:
    values = {}
    for prop in proto.metadata_props:
        try:
            values[prop.key] = json.loads(prop.value)
        except ValueError:
            values[prop.key] = prop.value
    return values


def read(path, backend: str | None = None) -> OnnxModel:
    """Read ``path`` into a minicnn model; see :func:`minicnn.onnx.load` and :class:`OnnxModel`.

    Raises
    ------
    OnnxImportError
        One line naming the file (and the node and operator, where one is at fault).
    """
    from onnx import helper

    path = Path(path)
    proto = _read_proto(path)
    graph = _Graph(proto, str(path))
    inputs = [i for i in proto.graph.input if i.name not in graph.constants]
    if len(inputs) != 1 or len(proto.graph.output) != 1:
        raise OnnxImportError(f"{path}: the graph has {len(inputs)} input(s) and "
                              f"{len(proto.graph.output)} output(s); minicnn reads one of each")
    source, target = inputs[0], proto.graph.output[0].name
    elem = source.type.tensor_type.elem_type
    dtype = helper.tensor_dtype_to_np_dtype(elem) if elem else None
    if dtype not in (np.float32, np.float64):
        raise OnnxImportError(f"{path}: input {source.name!r} is of type {dtype}; minicnn "
                              "reads float32 or float64 graphs")
    input_shape = graph.shapes[source.name][1:]
    if not input_shape or None in input_shape:
        raise OnnxImportError(f"{path}: input {source.name!r} has shape "
                              f"{list(graph.shapes[source.name])}; minicnn needs fixed sizes "
                              "after the batch dimension")
    layers, tensor = [], source.name
    while tensor != target:
        forks = graph.consumers.get(tensor, [])
        if not forks:
            raise OnnxImportError(f"{path}: tensor {tensor!r} leads nowhere: the graph's "
                                  f"output {target!r} is not reached from its input")
        if len(forks) > 1 or forks[0].op_type == "Add":
            layer, tensor = _basic_block(graph, tensor, forks, dtype, backend)
        elif forks[0].op_type == "Identity":
            tensor = forks[0].output[0]
            continue
        else:
            layer, tensor = _layer(graph, forks[0], dtype, backend), forks[0].output[0]
        layers.append(layer)
    model = nn.Sequential(*layers)
    metadata = _metadata(proto)
    detector = metadata.get("minicnn.detector")
    if isinstance(detector, dict) and {"stride", "prior"} <= detector.keys():
        model.stride, model.prior = int(detector["stride"]), float(detector["prior"])
    model.eval()
    output_shape = _check_forward(path, model, input_shape, graph.shapes.get(target, ()), dtype)
    return OnnxModel(model, tuple(int(d) for d in input_shape), output_shape, metadata)


def _check_forward(path: Path, model, input_shape, declared, dtype) -> tuple[int, ...]:
    """Run one zero sample through ``model``: the layers must fit together and give the shape
    the graph declares."""
    try:
        out = model(np.zeros((1, *input_shape), dtype=dtype))
    except (ValueError, TypeError) as error:
        raise OnnxImportError(f"{path}: the graph's layers do not fit together for input "
                              f"{list(input_shape)}: {str(error).splitlines()[0]}") from None
    expected = tuple(declared[1:])
    got = tuple(out.shape[1:])
    if len(expected) != len(got) or any(e is not None and e != g for e, g in zip(expected, got)):
        raise OnnxImportError(f"{path}: the graph declares output shape {list(declared)} but "
                              f"its layers give {list(out.shape)} for one sample")
    return got
