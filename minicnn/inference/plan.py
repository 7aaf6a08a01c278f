"""How a network becomes one plan: its layers, read once, turned into a short list of steps.

A forward pass in eval mode is a fixed sequence of arithmetic on fixed shapes, so it can be
written down once and run by one compiled function (:mod:`minicnn.kernels.network`) instead
of calling each layer from Python. Reading the layers in order, :func:`build` makes:

=========================================  ==================================================
layers                                     step
=========================================  ==================================================
Conv2d [BatchNorm2d] [activation]          ``conv``: the GEMM, then per channel the bias,
[MaxPool2d(2)]                             the folded batch norm, the activation and the
                                           pooling, while the output is still in cache
Linear [BatchNorm1d] [activation]          ``linear``: the same for a fully connected layer
BasicBlock                                 ``conv`` (conv1, bn1, ReLU); ``conv`` (the 1x1
                                           shortcut and its batch norm, if any); ``conv``
                                           (conv2, bn2, *the residual add*, ReLU)
MaxPool2d, AvgPool2d, AdaptiveAvgPool2d    ``maxpool``, ``avgpool``, ``adaptive-avgpool``
Flatten                                    ``flatten`` (to one row of features per sample)
BatchNorm, activation on their own         ``affine``, ``activation``
Dropout                                    nothing: it is the identity in eval mode
=========================================  ==================================================

Each step names the per-thread buffer it reads and the one it writes; a residual block keeps
its input in a third. ``print(plan)`` shows the steps.

Anything else (a layer this table does not list, ``ceil_mode``-like shapes it cannot express,
float64 weights, a backend other than ``numba``) makes :func:`build` return a plan that says
why it cannot run (:attr:`NetworkPlan.fallback`), and :func:`minicnn.inference.forward` then
runs the layers one by one: slower, never wrong.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .. import kernels, nn
from ..kernels import blas, winograd4
from ..kernels import network as K


class Unsupported(Exception):
    """A layer the plan cannot express; the message names it. ``surprising``: the user did
    not ask for it (a layer with no step warns; float64 weights or another backend do not)."""

    def __init__(self, message: str, surprising: bool = True):
        super().__init__(message)
        self.surprising = surprising


class InputMismatch(Unsupported):
    """The input's shape does not fit the layers: the layers run and raise their own error."""

    def __init__(self, message: str):
        super().__init__(message, surprising=False)


@dataclass
class Step:
    """One step, readable: what it does, which layers it stands for, its fields (the
    :data:`minicnn.kernels.network.STEP_DTYPE` fields, by name)."""

    op: int
    layers: list[str]
    fields: dict = field(default_factory=dict)

    def describe(self) -> str:
        f = self.fields
        shape_in = f"{f['c_in']}x{f['h_in']}x{f['w_in']}"
        shape_out = f"{f['c_out']}x{f['h_out']}x{f['w_out']}"
        extras = []
        if f.get("bn_mean", K.NONE) != K.NONE:
            extras.append("batch norm")
        if f.get("residual", K.NONE) != K.NONE:
            extras.append(f"+ buffer {f['residual']}")
        if f.get("activation", K.IDENTITY) != K.IDENTITY:
            extras.append(K.ACTIVATION_NAMES[f["activation"]])
        if f.get("pool"):
            extras.append("maxpool 2x2")
        if self.op == K.CONV:
            extras.insert(0, K.ALGORITHM_NAMES[f["algorithm"]])
        extra = f" [{', '.join(extras)}]" if extras else ""
        return (f"{K.OP_NAMES[self.op]:<17} {shape_in:>10} -> {shape_out:<10} buffer "
                f"{f['src']} -> {f['dst']}{extra}   ({' + '.join(self.layers)})")


#: Every field of a step, with the value a step that does not use it holds.
_DEFAULTS = dict(residual=K.NONE, kh=1, kw=1, sh=1, sw=1, top=0, left=0, conv_h=0, conv_w=0,
                 rows=0, algorithm=K.GEMM, packed_at=K.NONE, columns=0, groups=1, pool=0,
                 count_pad=0, activation=K.IDENTITY, slope=0.0,
                 weight=K.NONE, bias=K.NONE, bn_weight=K.NONE, bn_bias=K.NONE,
                 bn_mean=K.NONE, bn_var=K.NONE, bn_eps=0.0, out_first=0, out_last=K.NONE)

_ACTIVATIONS = {nn.ReLU: K.RELU, nn.LeakyReLU: K.LEAKY_RELU, nn.Sigmoid: K.SIGMOID,
                nn.Tanh: K.TANH}

#: Buffers a thread keeps: the current activation, the next one, a residual block's input and
#: its shortcut's output.
BUFFERS = 4


@dataclass
class NetworkPlan:
    """A model's eval-mode forward for one input shape ``(C, H, W)``, as steps.

    Attributes
    ----------
    steps : list of Step
    tensor_sources : list of (Module, attribute name)
        Where each of the program's tensors is read from, on every call (live, not copied).
    output_shape : tuple
        Per sample: ``(features,)`` or ``(C, H, W)``.
    activation_size : int
        The largest spatial activation per sample (float32 elements); ``cols_size`` the
        largest unrolled matrix per sample, ``conv_out_size`` the largest unpooled convolution
        output, ``rows_features`` the most features per sample after the flatten;
        ``fixed_size``, per thread, the largest working space that does not grow with the
        number of samples; ``packed_size`` what the plan keeps between calls (Winograd
        steps' filters and their transforms, :func:`minicnn.kernels.network.refresh_packed`).
    min_group : int
        The fewest samples a thread should carry through the spatial steps at once: an F(4x4,
        3x3) step's GEMMs want a chunk of :data:`~minicnn.kernels.network.WINOGRAD4_TILES`
        tiles (:func:`minicnn.inference.grouping`).
    rows_from : int
        The first step after the flatten (the number of steps when there is none): steps
        from here on run on a thread's share of the batch's rows at once.
    fallback : str or None
        Why this model cannot run as a plan (then ``steps`` is empty).
    warn : bool
        Whether that reason deserves a warning (a layer with no step does; float64 weights,
        another backend or an input of the wrong shape do not).
    """

    input_shape: tuple
    steps: list = field(default_factory=list)
    tensor_sources: list = field(default_factory=list)
    output_shape: tuple = ()
    activation_size: int = 0
    cols_size: int = 0
    conv_out_size: int = 0
    rows_features: int = 0
    rows_from: int = 0
    fixed_size: int = 0
    packed_size: int = 0
    min_group: int = 1
    fallback: str | None = None
    warn: bool = False

    def program(self) -> np.ndarray:
        """The steps as the compiled kernels take them: a structured array of
        :data:`~minicnn.kernels.network.STEP_DTYPE` records, one per step, each with the index
        of the step kernel that runs it."""
        program = np.zeros(len(self.steps), dtype=K.STEP_DTYPE)
        for record, step in zip(program, self.steps):
            f = step.fields
            for name in K.STEP_DTYPE.names:
                if name != "kernel":
                    record[name] = f[name]
            record["kernel"] = K.kernel_for(step.op, f["algorithm"], f["sh"], f["sw"])
        return program

    def __str__(self) -> str:
        c, h, w = self.input_shape
        if self.fallback:
            return f"no plan for input {c}x{h}x{w}: {self.fallback}"
        lines = [f"network plan for input {c}x{h}x{w}, {len(self.steps)} steps, "
                 f"{len(self.tensor_sources)} tensors read live:"]
        lines += [f"  {i:2d} {step.describe()}" for i, step in enumerate(self.steps)]
        return "\n".join(lines)


class _Builder:
    """Walks the layers, keeping the current shape, layout and buffer."""

    def __init__(self, input_shape):
        self.plan = NetworkPlan(input_shape=tuple(input_shape))
        self.shape = tuple(input_shape)            # (C, H, W); rows: (features, 1, 1)
        self.rows = False
        self.buffer = 0
        self.held = set()                          # buffers a residual block still needs
        self.plan.activation_size = int(np.prod(self.shape))

    # -- bookkeeping --------------------------------------------------------------------------
    def tensor(self, module, name: str) -> int:
        value = getattr(module, name)
        array = value.data if isinstance(value, nn.Parameter) else value
        if not isinstance(array, np.ndarray) or array.dtype != np.float32:
            raise Unsupported(f"{type(module).__name__}.{name} is not float32 "
                              f"(the plan runs float32 only)", surprising=False)
        self.plan.tensor_sources.append((module, name))
        return len(self.plan.tensor_sources) - 1

    def free_buffer(self, *busy) -> int:
        for candidate in range(BUFFERS):
            if candidate != self.buffer and candidate not in self.held and candidate not in busy:
                return candidate
        raise Unsupported("more buffers than a plan keeps")   # pragma: no cover

    def add(self, op, layers, out_shape, dst=None, **fields) -> Step:
        c_in, h_in, w_in = self.shape
        c_out, h_out, w_out = out_shape
        dst = self.free_buffer() if dst is None else dst
        values = dict(_DEFAULTS, op=op, src=self.buffer, dst=dst, c_in=c_in, h_in=h_in,
                      w_in=w_in, c_out=c_out, h_out=h_out, w_out=w_out, rows=int(self.rows))
        values.update(fields)
        step = Step(op, list(layers), values)
        self.plan.steps.append(step)
        self.shape, self.buffer = tuple(out_shape), dst
        if op == K.FLATTEN or self.rows:
            self.plan.rows_features = max(self.plan.rows_features, int(np.prod(out_shape)))
        else:
            self.plan.activation_size = max(self.plan.activation_size, int(np.prod(out_shape)))
        return step

    # -- layers -------------------------------------------------------------------------------
    def conv(self, name, conv: nn.Conv2d, following, residual=K.NONE):
        """A convolution and whatever of batch norm, activation and 2x2 max pooling follows it
        in ``following`` (a list of ``(name, layer)``, consumed from the front)."""
        if self.rows:
            raise Unsupported(f"layer {name} (Conv2d) after a Flatten")
        if conv.dilation != (1, 1):
            raise Unsupported(f"layer {name} (Conv2d) has dilation {conv.dilation}")
        c, h, w = self.shape
        if c != conv.in_channels:
            raise InputMismatch(f"layer {name} (Conv2d) takes {conv.in_channels} channels, "
                                f"gets {c}")
        kh, kw = conv.kernel_size
        sh, sw = conv.stride
        top, bottom, left, right = conv._pads
        out_h = (h + top + bottom - kh) // sh + 1
        out_w = (w + left + right - kw) // sw + 1
        if out_h < 1 or out_w < 1:
            raise Unsupported(f"layer {name} (Conv2d): input {h}x{w} smaller than its kernel")
        fields = dict(kh=kh, kw=kw, sh=sh, sw=sw, top=top, left=left, conv_h=out_h,
                      conv_w=out_w, groups=conv.groups, residual=residual,
                      weight=self.tensor(conv, "weight"))
        if conv.bias is not None:
            fields["bias"] = self.tensor(conv, "bias")
        names = [f"{name} Conv2d"]
        self.absorb_norm(following, nn.BatchNorm2d, fields, names, conv.out_channels)
        self.absorb_activation(following, fields, names)
        pooled = (out_h, out_w)
        if following and _is_plain_2x2_maxpool(following[0][1]) and out_h >= 2 and out_w >= 2:
            pool_name, _ = following.pop(0)
            names.append(f"{pool_name} MaxPool2d")
            fields["pool"] = 1
            pooled = (out_h // 2, out_w // 2)
        algorithm, per_sample, fixed, columns = _algorithm(conv, c, (h, w), (out_h, out_w),
                                                           pooled=bool(fields.get("pool")))
        fields["columns"] = columns
        if fields.get("pool"):
            # the blocked step keeps its unpooled output on its wide grid (kW - 1 more columns)
            width = out_w + kw - 1 if algorithm == K.BLOCKED else out_w
            self.plan.conv_out_size = max(self.plan.conv_out_size,
                                          conv.out_channels * out_h * width)
        fields["algorithm"] = algorithm
        if algorithm in (K.WINOGRAD, K.WINOGRAD4):
            fields["packed_at"] = self.plan.packed_size
            # the filters' copy (9 per pair of channels), then their transform (16 or 36)
            positions = 16 if algorithm == K.WINOGRAD else winograd4.POSITIONS
            self.plan.packed_size += (9 + positions) * conv.out_channels * c
        if algorithm == K.WINOGRAD4:
            tiles_h, _, pitch = winograd4.tiles_of(out_h, out_w)
            self.plan.min_group = max(self.plan.min_group,
                                      K.WINOGRAD4_TILES // (tiles_h * pitch))
        self.plan.cols_size = max(self.plan.cols_size, per_sample)
        self.plan.fixed_size = max(self.plan.fixed_size, fixed)
        busy = () if residual == K.NONE else (residual,)
        self.add(K.CONV, names, (conv.out_channels,) + pooled, dst=self.free_buffer(*busy),
                 **fields)

    def absorb_norm(self, following, kind, fields, names, channels: int):
        if following and type(following[0][1]) is kind:
            norm_name, norm = following.pop(0)
            if norm.num_features != channels:
                raise InputMismatch(f"layer {norm_name} ({kind.__name__}) takes "
                                    f"{norm.num_features} channels, gets {channels}")
            if not norm.track_running_stats:
                raise Unsupported(f"layer {norm_name} ({kind.__name__}) keeps no running "
                                  f"statistics: its eval forward uses the batch's")
            fields.update(bn_mean=self.tensor(norm, "running_mean"),
                          bn_var=self.tensor(norm, "running_var"), bn_eps=norm.eps)
            if norm.affine:
                fields.update(bn_weight=self.tensor(norm, "weight"),
                              bn_bias=self.tensor(norm, "bias"))
            names.append(f"{norm_name} {kind.__name__}")

    def absorb_activation(self, following, fields, names):
        if following and type(following[0][1]) in _ACTIVATIONS:
            act_name, act = following.pop(0)
            fields["activation"] = _ACTIVATIONS[type(act)]
            fields["slope"] = getattr(act, "negative_slope", 0.0)
            names.append(f"{act_name} {type(act).__name__}")

    def linear(self, name, linear: nn.Linear, following):
        if not self.rows:
            raise Unsupported(f"layer {name} (Linear) on a 4-D activation (Flatten first)")
        if self.shape[0] != linear.in_features:
            raise InputMismatch(f"layer {name} (Linear) takes {linear.in_features} features, "
                                f"gets {self.shape[0]}")
        fields = dict(weight=self.tensor(linear, "weight"))
        if linear.bias is not None:
            fields["bias"] = self.tensor(linear, "bias")
        names = [f"{name} Linear"]
        self.absorb_norm(following, nn.BatchNorm1d, fields, names, linear.out_features)
        self.absorb_activation(following, fields, names)
        self.add(K.LINEAR, names, (linear.out_features, 1, 1), **fields)

    def block(self, name, block: nn.BasicBlock):
        """conv1 (bn1, ReLU); the shortcut; conv2 (bn2, + shortcut, ReLU)."""
        block_input = self.buffer
        input_shape = self.shape
        self.held.add(block_input)
        self.conv(f"{name}.conv1", block.conv1,
                  [(f"{name}.bn1", block.bn1), (f"{name}.relu", block.relu)])
        body, body_shape = self.buffer, self.shape
        shortcut = block_input
        if block.downsample is not None:
            down = list(block.downsample._modules.items())
            if len(down) != 2 or type(down[0][1]) is not nn.Conv2d:
                raise Unsupported(f"layer {name}.downsample is not Conv2d + BatchNorm2d")
            self.held.add(body)
            self.buffer, self.shape = block_input, input_shape
            self.conv(f"{name}.downsample.0", down[0][1],
                      [(f"{name}.downsample.{n}", m) for n, m in down[1:]])
            shortcut = self.buffer
            self.held.add(shortcut)
            self.held.discard(body)
            self.buffer, self.shape = body, body_shape
        self.conv(f"{name}.conv2", block.conv2,
                  [(f"{name}.bn2", block.bn2), (f"{name}.relu_out", block.relu_out)],
                  residual=shortcut)
        if self.plan.steps[-1].fields["activation"] != K.RELU:      # pragma: no cover
            raise Unsupported(f"layer {name}: its last ReLU was not fused")
        self.held.clear()

    def pool(self, name, layer):
        c, h, w = self.shape
        if self.rows:
            raise Unsupported(f"layer {name} ({type(layer).__name__}) after a Flatten")
        if isinstance(layer, nn.AdaptiveAvgPool2d):
            oh, ow = layer.output_size
            self.add(K.ADAPTIVE_AVGPOOL, [f"{name} AdaptiveAvgPool2d"], (c, oh, ow))
            return
        kh, kw = layer.kernel_size
        sh, sw = layer.stride
        ph, pw = layer.padding
        oh, ow = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
        if oh < 1 or ow < 1:
            raise Unsupported(f"layer {name} ({type(layer).__name__}): input {h}x{w} smaller "
                              f"than its window")
        op = K.MAXPOOL if isinstance(layer, nn.MaxPool2d) else K.AVGPOOL
        self.add(op, [f"{name} {type(layer).__name__}"], (c, oh, ow), kh=kh, kw=kw, sh=sh,
                 sw=sw, top=ph, left=pw,
                 count_pad=int(getattr(layer, "count_include_pad", False)))

    def flatten(self, name, layer: nn.Flatten):
        if (layer.start_dim, layer.end_dim) not in ((1, -1), (1, 3)):
            raise Unsupported(f"layer {name} (Flatten) with start_dim={layer.start_dim}, "
                              f"end_dim={layer.end_dim}")
        if self.rows:
            return
        features = int(np.prod(self.shape))
        self.add(K.FLATTEN, [f"{name} Flatten"], (features, 1, 1))
        self.rows = True
        self.plan.steps[-1].fields["rows"] = 1

    def elementwise(self, name, layer, following):
        """A batch norm or an activation not after a layer that could take it."""
        fields, names = {}, []
        if isinstance(layer, (nn.BatchNorm1d, nn.BatchNorm2d)):
            following.insert(0, (name, layer))
            self.absorb_norm(following, type(layer), fields, names, self.shape[0])
            self.absorb_activation(following, fields, names)
            op = K.AFFINE
        else:
            following.insert(0, (name, layer))
            self.absorb_activation(following, fields, names)
            op = K.ACTIVATION
        self.add(op, names, self.shape, dst=self.buffer, **fields)


#: Winograd's F(2x2, 3x3) for 3x3, stride-1 convolutions with at least this many input
#: channels (its 16 GEMMs have ``K = C_in``; below, the direct multiply-adds win); F(4x4, 3x3)
#: instead where :func:`minicnn.kernels.winograd4.applies` (64 input channels or more, an
#: output of at least 8x8) and no pooling follows (F(2x2, 3x3) pools inside its output
#: transform).
WINOGRAD_MIN_CHANNELS = 16

#: Grouped convolutions (depthwise ones included) run as direct multiply-adds
#: (:data:`~minicnn.kernels.network.DIRECT`) where their stride is 1: a GEMM per group of a
#: few channels is mostly call overhead. Ordinary convolutions with few input channels do
#: not: measured on MNIST's first layer (``K = 9``) and LeNet-5's second (``K = 150``) at
#: batch 64, the unrolled matrix and one GEMM beat the direct loops 2x and 2.7x.
#: Ordinary stride-1 convolutions with at most ``BLOCKED_MAX_K`` terms per output (``C_in *
#: kH * kW``) and a padded sample of at most ``BLOCKED_MAX_INPUT`` floats (16 KB, half of L1)
#: run as register blocks computed in place (:data:`~minicnn.kernels.network.BLOCKED`): there
#: the GEMM's packing and edges cost more than its arithmetic (LeNet-5 at batch 64, one
#: thread: 1.43 -> 1.13 ms for its second conv's K = 150 alone). Each block reads every input
#: plane, so a larger input is streamed from L2 once per 4 output channels and the GEMM wins
#: (the separable CNN's 1x1 convs of 32-128 channels: 45 -> 69 ms had they been blocked).
BLOCKED_MAX_K = 160
BLOCKED_MAX_INPUT = 4096


def _algorithm(conv: nn.Conv2d, c_in: int, size, out_size,
               pooled: bool = False) -> tuple[int, int, int, int]:
    """How the plan computes ``conv`` (``pooled``: a 2x2 max pooling follows it), its
    working space in float32 elements: per sample (grows with the group) and fixed (per
    thread), and a Winograd step's ``columns`` (0 for the others)."""
    h, w = size
    out_h, out_w = out_size
    kh, kw = conv.kernel_size
    top, bottom, left, right = conv._pads
    stride_one = conv.stride == (1, 1)
    if (stride_one and (kh, kw) == (3, 3) and conv.groups == 1 and c_in >= WINOGRAD_MIN_CHANNELS
            and top == bottom == left == right and top in (0, 1)):
        if not pooled and winograd4.applies(np.float32, c_in, out_h, out_w):
            tiles_h, tiles_w, pitch = winograd4.tiles_of(out_h, out_w)
            per_sample = tiles_h * pitch
            capacity = winograd4.capacity(max(1, K.WINOGRAD4_TILES // per_sample),
                                          per_sample, tiles_h * tiles_w, c_in,
                                          conv.out_channels)
            fixed = (winograd4.phases_size(tiles_h, pitch)
                     + (winograd4.POSITIONS * (c_in + conv.out_channels) + 16) * capacity)
            return K.WINOGRAD4, 0, fixed, capacity
        tiles_h, tiles_w = (out_h + 1) // 2, (out_w + 1) // 2
        per_sample = tiles_h * (tiles_w + 1)        # tiles of one sample, on the wide grid
        capacity = K.winograd_capacity(per_sample, c_in, conv.out_channels)
        fixed = (4 * (tiles_h + 2) * (tiles_w + 1)
                 + (16 * c_in + 16 * conv.out_channels + 12) * capacity)
        return K.WINOGRAD, 0, fixed, capacity
    pitch = out_w + kw - 1                          # the wide grid of a stride-1 convolution
    if stride_one and conv.groups > 1:
        return K.DIRECT, c_in * (out_h + kh) * pitch, out_h * pitch, 0
    if (stride_one and c_in * kh * kw <= BLOCKED_MAX_K
            and c_in * (out_h + kh) * pitch <= BLOCKED_MAX_INPUT):
        # padded planes (and a block's slack), sums on whole blocks of the grid
        span = -(-out_h * pitch // K.BLOCK_POSITIONS) * K.BLOCK_POSITIONS
        return (K.BLOCKED, 0,
                c_in * (out_h + kh) * pitch + K.BLOCK_POSITIONS + conv.out_channels * span, 0)
    if stride_one:                  # one sample's padded planes, unrolled rows and sums
        wide = out_h * pitch
        return (K.GEMM, 0,
                c_in * (out_h + kh) * pitch + (c_in * kh * kw + conv.out_channels) * wide, 0)
    return K.GEMM, c_in // conv.groups * kh * kw * out_h * out_w, 0, 0


def _is_plain_2x2_maxpool(layer) -> bool:
    return (type(layer) is nn.MaxPool2d and layer.kernel_size == (2, 2)
            and layer.stride == (2, 2) and layer.padding == (0, 0))


def _flat_layers(model: nn.Module, prefix: str = "") -> list:
    """``(name, layer)`` in forward order: nested ``Sequential``s opened, blocks kept whole."""
    if not isinstance(model, nn.Sequential):
        return [(prefix or type(model).__name__, model)]
    found = []
    for name, child in model._modules.items():
        full = f"{prefix}.{name}" if prefix else name
        found += _flat_layers(child, full) if isinstance(child, nn.Sequential) else [(full, child)]
    return found


def _backend_problem(model: nn.Module) -> str | None:
    default = kernels.get_default_backend()
    for name, module in model.named_modules():
        backend = getattr(module, "backend", None) or default
        if hasattr(module, "backend") and backend != "numba":
            return f"layer {name or type(module).__name__} uses the {backend!r} backend"
    if not blas.AVAILABLE:
        return "NumPy's BLAS exports no GEMM compiled code can call"
    return None


def build(model: nn.Module, input_shape, softmax: bool = False) -> NetworkPlan:
    """The plan of ``model``'s eval-mode forward on inputs ``(N, *input_shape)``.

    Parameters
    ----------
    model : Module
        A ``Sequential`` (nested ones and ``BasicBlock``s included) or a single layer.
    input_shape : tuple of 3 ints
        ``(C, H, W)`` of one sample.
    softmax : bool
        End with a softmax over the last step's features (probabilities, not logits).

    Returns
    -------
    NetworkPlan
        With ``fallback`` set, and no steps, where some layer cannot be planned.
    """
    builder = _Builder(input_shape)
    try:
        problem = _backend_problem(model)
        if problem:
            raise Unsupported(problem, surprising=False)
        following = _flat_layers(model)
        while following:
            name, layer = following.pop(0)
            kind = type(layer)
            if kind is nn.Conv2d:
                builder.conv(name, layer, following)
            elif kind is nn.Linear:
                builder.linear(name, layer, following)
            elif kind is nn.BasicBlock:
                builder.block(name, layer)
            elif kind in (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d):
                builder.pool(name, layer)
            elif kind is nn.Flatten:
                builder.flatten(name, layer)
            elif kind in (nn.BatchNorm1d, nn.BatchNorm2d) or kind in _ACTIVATIONS:
                builder.elementwise(name, layer, following)
            elif kind is nn.Dropout:
                continue
            else:
                raise Unsupported(f"layer {name} ({kind.__name__}) has no plan step")
        if not builder.plan.steps:
            raise Unsupported("the model has no layer with a plan step")
        if softmax:
            if not builder.rows:
                raise Unsupported("a softmax needs one row of features per sample")
            builder.add(K.SOFTMAX, ["softmax"], builder.shape, dst=builder.buffer)
    except Unsupported as reason:
        return NetworkPlan(input_shape=tuple(input_shape), fallback=str(reason),
                           warn=reason.surprising)
    plan = builder.plan
    plan.rows_from = next((i + 1 for i, step in enumerate(plan.steps) if step.op == K.FLATTEN),
                          len(plan.steps))
    c, h, w = builder.shape
    plan.output_shape = (c,) if builder.rows else (c, h, w)
    return plan
