"""A float ``Sequential`` made into an integer-only network: :class:`QuantizedModel`.

Supported layers (in a flat :class:`~minicnn.nn.Sequential`): ``Conv2d`` (groups 1, dilation
1, any stride and padding), a ``BatchNorm2d`` right after a conv (folded into its weights),
``ReLU`` right after a conv, BatchNorm or linear layer (fused: clamped at the zero point),
``MaxPool2d`` (integer max), ``Flatten`` (to a vector), ``Linear``, ``Dropout`` (the identity
at inference). That covers ``lenet5`` and ``mnist-cnn``; ``vgg-small``, ``resnet-small`` and
``separable-cnn`` end in ``AdaptiveAvgPool2d`` (and use residual blocks or groups), which are
refused with the layer's index and type.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import nn
from ..kernels import int8 as fast
from ..kernels import int8_reference as ref
from ..kernels import int8_positions as positions_kernel
from ..kernels import int8_winograd as winograd
from .arithmetic import (QuantParams, choose_params, dequantize, quantize,
                         quantize_multiplier, quantize_weights_per_channel)

BACKENDS = ("numba", "reference")
SUPPORTED = ("Conv2d (groups 1, dilation 1), BatchNorm2d after a conv, ReLU after a "
             "conv/BatchNorm/Linear, MaxPool2d, Flatten, Linear, Dropout")


class QuantizeError(ValueError):
    """A model that cannot be quantised (an unsupported layer), named in one line."""


# -- per-layer records ------------------------------------------------------------------------
@dataclass
class QConv:
    """An integer convolution (+ folded BatchNorm, + fused ReLU).

    weight : int8 (C_out, C_in, kH, kW); weight_scale : float32 (C_out,);
    bias : int32 (C_out,) in units of ``input.scale * weight_scale``;
    multiplier, shift : int32 (C_out,), ``input.scale * weight_scale / output.scale``
    (:func:`~minicnn.quant.arithmetic.quantize_multiplier`); output None: the last layer,
    whose int32 accumulators are the network's output.
    """

    source: tuple            # indices of the float layers it replaces
    weight: np.ndarray
    weight_scale: np.ndarray
    bias: np.ndarray
    stride: tuple
    padding: tuple           # (top, bottom, left, right)
    relu: bool
    input: QuantParams
    output: QuantParams | None
    multiplier: np.ndarray
    shift: np.ndarray
    kind: str = "conv"


@dataclass
class QLinear:
    """An integer fully connected layer; fields as :class:`QConv`, ``weight`` (out, in)."""

    source: tuple
    weight: np.ndarray
    weight_scale: np.ndarray
    bias: np.ndarray
    relu: bool
    input: QuantParams
    output: QuantParams | None
    multiplier: np.ndarray
    shift: np.ndarray
    kind: str = "linear"


@dataclass
class QMaxPool:
    """Max pooling on uint8 (input and output share their quantisation)."""

    source: tuple
    kernel: tuple
    stride: tuple
    padding: tuple           # (top, bottom, left, right)
    kind: str = "maxpool"


@dataclass
class QFlatten:
    """(N, C, H, W) -> (N, C*H*W): the same bytes."""

    source: tuple
    kind: str = "flatten"


def requantize_params(input_params: QuantParams, weight_scale: np.ndarray,
                      output: QuantParams | None):
    """Per channel ``(multiplier, shift)`` of ``input.scale * weight_scale / output.scale``
    (zeros for a final layer, which is not requantised)."""
    count = len(weight_scale)
    multiplier, shift = np.zeros(count, np.int32), np.zeros(count, np.int32)
    if output is not None:
        for c in range(count):
            real = input_params.scale * float(weight_scale[c]) / output.scale
            m, s = quantize_multiplier(real)
            if s > 31:
                # A tiny scale (a channel of near-zero weights): the shift 31 + s must stay
                # within 62 for the int64 arithmetic (and the fast kernel's rounding trick),
                # so move the excess into the multiplier; the value loses only bits far
                # below one output step.
                m, s = m >> (s - 31), 31
            multiplier[c], shift[c] = m, s
    return multiplier, shift


def quantize_bias(bias: np.ndarray, input_params: QuantParams, weight_scale: np.ndarray):
    """``round(bias / (input scale * weight scale))`` as int32 (saturated)."""
    real = np.asarray(bias, np.float64) / (input_params.scale * weight_scale.astype(np.float64))
    info = np.iinfo(np.int32)
    return np.clip(np.rint(real), info.min, info.max).astype(np.int32)


# -- the float model's layers, grouped ------------------------------------------------------
def _conv_geometry(layer: nn.Conv2d, index: int):
    if layer.groups != 1:
        raise QuantizeError(f"cannot quantize layer {index} (Conv2d): groups={layer.groups}; "
                            "minicnn.quant supports groups=1 only")
    if tuple(layer.dilation) != (1, 1):
        raise QuantizeError(f"cannot quantize layer {index} (Conv2d): dilation="
                            f"{tuple(layer.dilation)}; minicnn.quant supports dilation 1 only")
    return tuple(layer.stride), tuple(layer._pads)


def _fold_batchnorm(weight, bias, bn, index: int):
    if not bn.track_running_stats:
        raise QuantizeError(f"cannot quantize layer {index} (BatchNorm2d): no running "
                            "statistics to fold into the conv")
    gamma = bn.weight.data.astype(np.float64) if bn.affine else np.ones(bn.num_features)
    beta = bn.bias.data.astype(np.float64) if bn.affine else np.zeros(bn.num_features)
    factor = gamma / np.sqrt(bn.running_var.astype(np.float64) + bn.eps)
    weight = weight * factor.reshape(-1, *([1] * (weight.ndim - 1)))
    return weight, (bias - bn.running_mean.astype(np.float64)) * factor + beta


def plan_layers(model) -> list[dict]:
    """The float model's layers grouped into integer operations (before calibration).

    Returns a list of dicts: ``kind`` ("conv", "linear", "maxpool", "flatten"), ``source``
    (float layer indices), ``point`` (index of the layer whose output is the group's quantised
    output), and for conv/linear the folded float ``weight``, ``bias`` and ``relu``.
    """
    modules = list(model._modules.values()) if isinstance(model, nn.Sequential) else None
    if modules is None:
        raise QuantizeError(f"cannot quantize a {type(model).__name__}: minicnn.quant takes a "
                            "flat nn.Sequential")
    plan, i = [], 0
    while i < len(modules):
        layer, start = modules[i], i
        kind = type(layer)
        if kind in (nn.Conv2d, nn.Linear):
            weight = layer.weight.data.astype(np.float64)
            bias = (layer.bias.data.astype(np.float64) if layer.bias is not None
                    else np.zeros(weight.shape[0]))
            entry = {"kind": "conv" if kind is nn.Conv2d else "linear"}
            if kind is nn.Conv2d:
                entry["stride"], entry["padding"] = _conv_geometry(layer, i)
                if i + 1 < len(modules) and type(modules[i + 1]) is nn.BatchNorm2d:
                    i += 1
                    weight, bias = _fold_batchnorm(weight, bias, modules[i], i)
            relu = i + 1 < len(modules) and type(modules[i + 1]) is nn.ReLU
            if relu:
                i += 1
            entry.update(weight=weight, bias=bias, relu=relu, source=tuple(range(start, i + 1)),
                         point=i)
            plan.append(entry)
        elif kind is nn.MaxPool2d:
            plan.append({"kind": "maxpool", "kernel": tuple(layer.kernel_size),
                         "stride": tuple(layer.stride), "padding": tuple(layer._pads),
                         "source": (i,), "point": i})
        elif kind is nn.Flatten:
            if layer.start_dim != 1 or layer.end_dim not in (-1, 3):
                raise QuantizeError(f"cannot quantize layer {i} (Flatten): only start_dim=1, "
                                    f"end_dim=-1 is supported")
            plan.append({"kind": "flatten", "source": (i,), "point": i})
        elif kind is nn.Dropout:
            pass                                 # the identity at inference
        else:
            raise QuantizeError(f"cannot quantize layer {i} ({kind.__name__}): minicnn.quant "
                                f"supports {SUPPORTED}")
        i += 1
    computes = [k for k, entry in enumerate(plan) if entry["kind"] in ("conv", "linear")]
    if not computes:
        raise QuantizeError("cannot quantize a model without a Conv2d or Linear layer")
    # The last conv/linear gives int32 output when nothing but Flatten follows it.
    last = computes[-1]
    final = all(entry["kind"] == "flatten" for entry in plan[last + 1:])
    plan[last]["final"] = final and not plan[last]["relu"]
    return plan


def build_layers(plan: list[dict], ranges: dict, activation_dtype: str = "uint8") -> list:
    """Integer layer records from :func:`plan_layers`'s groups and calibrated ``ranges``."""
    if activation_dtype != "uint8":
        raise ValueError(f"activation_dtype: only 'uint8' is supported, got "
                         f"{activation_dtype!r}")
    current = choose_params(*ranges["input"], dtype="uint8")
    layers = []
    for entry in plan:
        kind = entry["kind"]
        if kind in ("conv", "linear"):
            weight_q, weight_scale = quantize_weights_per_channel(entry["weight"])
            low, high = ranges[entry["point"]]
            if entry["relu"]:
                low = 0.0
            output = None if entry.get("final") else choose_params(low, high, "uint8")
            multiplier, shift = requantize_params(current, weight_scale, output)
            common = dict(source=entry["source"], weight=weight_q, weight_scale=weight_scale,
                          bias=quantize_bias(entry["bias"], current, weight_scale),
                          relu=entry["relu"], input=current, output=output,
                          multiplier=multiplier, shift=shift)
            if kind == "conv":
                layers.append(QConv(stride=entry["stride"], padding=entry["padding"], **common))
            else:
                layers.append(QLinear(**common))
            if output is not None:
                current = output
        elif kind == "maxpool":
            layers.append(QMaxPool(entry["source"], entry["kernel"], entry["stride"],
                                   entry["padding"]))
        else:
            layers.append(QFlatten(entry["source"]))
    return layers


# -- shapes and packing -------------------------------------------------------------------------
def layer_shapes(layers, input_shape) -> list[tuple]:
    """Each layer's output shape for one sample (``input_shape`` = (C, H, W)); refuses in one
    line a layer that does not fit its input."""
    shape, shapes = tuple(int(d) for d in input_shape), []
    for index, layer in enumerate(layers):
        if isinstance(layer, QConv):
            c_out, c_in, kh, kw = layer.weight.shape
            if len(shape) != 3 or shape[0] != c_in:
                raise ValueError(f"int8 layer {index} (conv) expects {c_in} input channels "
                                 f"(C, H, W), got {shape}")
            top, bottom, left, right = layer.padding
            shape = (c_out, ref.output_size(shape[1], kh, layer.stride[0], top, bottom),
                     ref.output_size(shape[2], kw, layer.stride[1], left, right))
        elif isinstance(layer, QMaxPool):
            top, bottom, left, right = layer.padding
            shape = (shape[0], ref.output_size(shape[1], layer.kernel[0], layer.stride[0],
                                               top, bottom),
                     ref.output_size(shape[2], layer.kernel[1], layer.stride[1], left, right))
        elif isinstance(layer, QFlatten):
            shape = (int(np.prod(shape)),)
        else:
            if len(shape) != 1 or shape[0] != layer.weight.shape[1]:
                raise ValueError(f"int8 layer {index} (linear) expects {layer.weight.shape[1]} "
                                 f"features, got {shape}")
            shape = (layer.weight.shape[0],)
        if min(shape) < 1:
            raise ValueError(f"int8 layer {index} ({layer.kind}) has an empty output {shape}")
        shapes.append(shape)
    return shapes


#: The arrays :func:`minicnn.kernels.int8.forward` takes, built once per model by :func:`pack`.
PackedNetwork = fast.PackedNetwork


def _program(rows: list[dict]) -> np.ndarray:
    """The layers' fields as the fast kernel's program (a :data:`~minicnn.kernels.int8.LAYER_DTYPE`
    record per layer; fields a layer does not set are 0)."""
    program = np.zeros(len(rows), dtype=fast.LAYER_DTYPE)
    for record, row in zip(program, rows):
        for name, value in row.items():
            record[name] = value
    return program


def requantize_constants(multiplier, shift, out_zero: int):
    """The per-channel constants of the fast kernel's requantization
    (:func:`minicnn.kernels.int8._requantize_row`): ``(multiplier, rounding, total, lift)``.

    ``total = 31 + shift`` is the right shift, ``rounding = 2**(total-1) + 2**62`` and ``lift
    = 2**(62-total) - out_zero``. A shift past 62 bits leaves 0 of any product (|product| <
    2**62): such a channel gets multiplier 0 and shift 31, which gives the same 0.
    """
    multiplier = np.asarray(multiplier, np.int64).copy()
    total = 31 + np.asarray(shift, np.int64)
    if total.size and total.min() < 1:
        raise ValueError(f"int8 requantization shift {int(total.min()) - 31} out of range "
                         "(a multiplier of 2**30 or more)")
    vanishing = total > 62
    multiplier[vanishing], total[vanishing] = 0, 31
    one = np.int64(1)
    rounding = (one << (total - 1)) + (one << 62)
    lift = (one << (62 - total)) - np.int64(out_zero)
    return multiplier.astype(np.int32), rounding, total, lift


def _fusable_pool(layers, index) -> "QMaxPool | None":
    """The max pooling right after conv ``index`` that the fast kernel can fuse into the conv's
    requantization (no padding: every window inside the conv's output), else None."""
    if index + 1 < len(layers) and isinstance(layers[index + 1], QMaxPool):
        pool = layers[index + 1]
        if not any(pool.padding):
            return pool
    return None


#: Output channels below which a one-channel conv with a fused 2x2 pooling runs with output
#: positions in the vector lanes (:mod:`minicnn.kernels.int8_positions`): with channels in
#: the lanes, fewer than 8 leave lanes idle and the requantization's loop short.
POSITIONS_MAX_CHANNELS = 16


def _by_positions(layer, weight, pool) -> bool:
    """Whether conv ``layer`` (weights as packed) and its fused ``pool`` run with output
    positions in the lanes (:mod:`minicnn.kernels.int8_positions`): one input channel, stride
    1, a 2x2 stride-2 pooling, fewer than :data:`POSITIONS_MAX_CHANNELS` outputs."""
    return (weight.shape[1] == 1 and tuple(layer.stride) == (1, 1)
            and tuple(pool.kernel) == (2, 2) and tuple(pool.stride) == (2, 2)
            and weight.shape[0] < POSITIONS_MAX_CHANNELS)


#: Input channels from which a 3x3 stride-1 conv runs as integer Winograd F(2x2, 3x3)
#: (:mod:`minicnn.kernels.int8_winograd`); with fewer, the transforms cost more than the
#: multiplies they save (as the float plan's ``WINOGRAD_MIN_CHANNELS``).
WINOGRAD_MIN_CHANNELS = 16


def _winograd_filters(layer, weight) -> np.ndarray | None:
    """The transformed filters ``(16, C_out, C_in)`` of a conv that runs as integer Winograd
    (3x3, stride 1, an even number of at least :data:`WINOGRAD_MIN_CHANNELS` input channels as
    packed, sums inside int32), else None."""
    if (not isinstance(layer, QConv) or weight.shape[2:] != (3, 3)
            or tuple(layer.stride) != (1, 1) or weight.shape[1] % 2
            or weight.shape[1] < WINOGRAD_MIN_CHANNELS):
        return None
    u = winograd.filter_transform(weight)
    return u if winograd.fits_int32(u) else None


def _pairs_layout(matrix: np.ndarray) -> np.ndarray:
    """``(rows, K)`` -> ``(K / 2, rows, 2)``, flattened: a step of the kernels loads two
    consecutive k of 8 channels as one vector."""
    rows, k = matrix.shape
    return np.ascontiguousarray(matrix.reshape(rows, k // 2, 2).transpose(1, 0, 2)).ravel()


def pack(layers, input_shape) -> PackedNetwork:
    """Pre-pack the integer layers for the fast kernel (see :mod:`minicnn.kernels.int8`)."""
    shapes = layer_shapes(layers, input_shape)
    rows, weight_parts, bias_parts = [], [], []
    mult_parts, rounding_parts, total_parts, lift_parts = [], [], [], []
    w_offset = ch_offset = 0
    act_size, cols_size, padded_size, acc_size = int(np.prod(input_shape)), 1, 1, 1
    rows_size, tiles_size, products_size, stage_size = fast.ROW_BLOCK, 1, 1, 1
    shape_in = tuple(input_shape)
    channels_last_flat = None
    fused = set()                        # indices of pooling layers fused into their conv
    last_compute = max(i for i, layer in enumerate(layers) if isinstance(layer, (QConv, QLinear)))
    for index, (layer, shape_out) in enumerate(zip(layers, shapes)):
        act_size = max(act_size, int(np.prod(shape_out)))
        if index in fused:
            shape_in = shape_out
            continue
        row = {}                          # this layer's fast.LAYER_DTYPE fields (others 0)
        if isinstance(layer, QFlatten):
            if len(shape_in) == 3 and index > 0:
                channels_last_flat = shape_in     # conv/pool outputs are channels last
            shape_in = shape_out
            continue
        if isinstance(layer, QMaxPool):
            row["op"] = fast.OP_MAXPOOL
            row["kh"], row["kw"] = layer.kernel
            row["sh"], row["sw"] = layer.stride
            row["pad_top"], row["pad_left"] = layer.padding[0], layer.padding[2]
        else:
            c_out, weight = layer.weight.shape[0], layer.weight
            kw_packed = weight.shape[3] if isinstance(layer, QConv) else 0
            if isinstance(layer, QConv) and (weight.shape[1] * weight.shape[3]) % 2:
                # kW * C_in odd: a kernel row of a window must be whole pairs of values for the
                # direct convolution. Add a kernel column of zero weights where C_in < kW (the
                # window reads one more input column, padded below), else a channel of zero
                # weights (and zero inputs): whichever sums fewer products.
                if weight.shape[1] < weight.shape[3]:
                    weight = np.concatenate([weight, np.zeros_like(weight[..., :1])], axis=3)
                    kw_packed += 1
                else:
                    weight = np.concatenate([weight, np.zeros_like(weight[:, :1])], axis=1)
            k = int(np.prod(weight.shape[1:]))
            most = k * 255 * 127 + int(np.abs(layer.bias.astype(np.int64)).max(initial=0))
            if most >= 2 ** 31:               # |x - zero| <= 255, |w| <= 127, plus the bias
                raise ValueError(f"int8 layer {index} ({layer.kind}) sums {k} products and a "
                                 "bias, too many for an int32 accumulator (at most 66,311 "
                                 "products)")
            k_padded = fast.round_up(k, fast.K_ALIGN)
            rows_padded = fast.round_up(c_out, fast.ROW_BLOCK)
            rows_size = max(rows_size, rows_padded)
            positions = int(np.prod(shape_out[1:])) if isinstance(layer, QConv) else 1
            acc_size = max(acc_size, rows_padded * positions)
            matrix = np.zeros((rows_padded, k_padded), np.int16)
            if isinstance(layer, QConv):
                # (C_out, C_in, kH, kW) -> (C_out, kH, kW, C_in): the order of a window's
                # values in the channels-last input.
                matrix[:c_out, :k] = weight.transpose(0, 2, 3, 1).reshape(c_out, k)
            elif channels_last_flat is not None:
                # A flatten of a channels-last (H, W, C) tensor: permute the columns from
                # PyTorch's (C, H, W) order to match.
                c, h, w = channels_last_flat
                matrix[:c_out, :k] = (layer.weight.reshape(c_out, c, h, w)
                                      .transpose(0, 2, 3, 1).reshape(c_out, k))
            else:
                matrix[:c_out, :k] = layer.weight.reshape(c_out, k)
            channels_last_flat = None
            u = _winograd_filters(layer, weight)
            if u is not None:
                # 16 matrices U[t] (C_out, C_in), each in the pairs layout
                c_in = weight.shape[1]
                matrix = np.zeros((winograd.POSITIONS, rows_padded, c_in), np.int16)
                matrix[:, :c_out] = u
                weight_parts.append(np.concatenate([_pairs_layout(m) for m in matrix]))
                tiles_h, tiles_w = -(-shape_out[1] // 2), -(-shape_out[2] // 2)
                row["winograd"], row["tiles_h"], row["tiles_w"] = 1, tiles_h, tiles_w
                tiles_size = max(tiles_size, winograd.POSITIONS * tiles_h * tiles_w * c_in)
                products_size = max(products_size,
                                     winograd.POSITIONS * tiles_h * tiles_w * rows_padded)
                # Bᵀ d of a row of tiles (8 phase rows of Wp / 2 positions), Aᵀ M (8 x tiles)
                stage_size = max(stage_size, 8 * (tiles_w + 1) * c_in,
                                 8 * tiles_w * rows_padded)
            else:
                weight_parts.append(_pairs_layout(matrix))
            row["w_size"] = weight_parts[-1].size
            final = layer.output is None
            row["out_zero"] = 0 if final else layer.output.zero_point
            multiplier, rounding, total, lift = requantize_constants(
                layer.multiplier, layer.shift, row["out_zero"])
            bias_parts.append(layer.bias)
            mult_parts.append(multiplier)
            rounding_parts.append(rounding)
            total_parts.append(total)
            lift_parts.append(lift)
            row["k"], row["k_padded"] = k, k_padded
            row["w_offset"], row["ch_offset"] = w_offset, ch_offset
            row["in_zero"] = layer.input.zero_point
            row["clamp_low"] = row["out_zero"] if layer.relu else 0
            row["final"] = int(final)
            w_offset += weight_parts[-1].size
            ch_offset += c_out
            if isinstance(layer, QConv):
                row["op"] = fast.OP_CONV
                row["kh"], row["kw"] = layer.weight.shape[2:]
                row["kw_packed"] = kw_packed
                row["sh"], row["sw"] = layer.stride
                row["pad_top"], row["pad_left"] = layer.padding[0], layer.padding[2]
                top, bottom, left, right = layer.padding
                row["padded_h"] = shape_in[1] + top + bottom
                # a zero kernel column reads one input column past the last window's
                row["padded_w"] = shape_in[2] + left + right + (kw_packed - row["kw"])
                if row.get("winograd"):
                    # an odd output's last tiles read one row / column of zeros more
                    row["padded_h"] += shape_out[1] % 2
                    row["padded_w"] += shape_out[2] % 2
                row["padded_c"] = weight.shape[1]
                row["padded_extent"] = (weight.shape[1] * int(row["padded_h"])
                                        * int(row["padded_w"]))
                pool = None if final else _fusable_pool(layers, index)
                if pool is not None:
                    fused.add(index + 1)
                    row["pool_kh"], row["pool_kw"] = pool.kernel
                    row["pool_sh"], row["pool_sw"] = pool.stride
                    row["pooled_h"], row["pooled_w"] = shapes[index + 1][1:]
                    if _by_positions(layer, weight, pool):
                        row["by_positions"] = 1
                        row["padded_extent"] = max(row["padded_extent"], positions_kernel.read_extent(
                            int(row["padded_w"]), int(row["kh"]), kw_packed, shape_out[2],
                            int(row["pooled_h"])))
                        acc_size = max(acc_size, c_out * positions_kernel.grid(
                            shape_out[2], int(row["pooled_h"]))[1])
                padded_size = max(padded_size, int(row["padded_extent"]))
            else:
                row["op"] = fast.OP_LINEAR
                row["out_h"] = row["out_w"] = 1
                cols_size = max(cols_size, k_padded)
        if len(shape_in) == 3:
            row["in_c"], row["in_h"], row["in_w"] = shape_in
        else:
            row["in_c"], row["in_h"], row["in_w"] = (shape_in[0], 1, 1)
        if len(shape_out) == 3:
            row["out_c"], row["out_h"], row["out_w"] = shape_out
        else:
            row["out_c"], row["out_h"], row["out_w"] = (shape_out[0], 1, 1)
        if not row.get("pool_kh"):
            row["pooled_h"], row["pooled_w"] = row["out_h"], row["out_w"]
        rows.append(row)
        shape_in = shape_out
        if index == last_compute and layer.output is None:
            break
    program = _program(rows)
    return PackedNetwork(
        program=program,
        weights=np.ascontiguousarray(np.concatenate(weight_parts)),
        bias=np.ascontiguousarray(np.concatenate(bias_parts).astype(np.int32)),
        multiplier=np.ascontiguousarray(np.concatenate(mult_parts)),
        rounding=np.ascontiguousarray(np.concatenate(rounding_parts)),
        total=np.ascontiguousarray(np.concatenate(total_parts)),
        lift=np.ascontiguousarray(np.concatenate(lift_parts)),
        out_size=int(np.prod(shapes[-1])), act_size=act_size, cols_size=cols_size,
        padded_size=padded_size, acc_size=acc_size, rows_size=rows_size,
        tiles_size=tiles_size, products_size=products_size, stage_size=stage_size,
        **dict(zip(("tail_from", "tail_k", "tail_rows", "tail_out"), fast.linear_tail(program))))


# -- the model ----------------------------------------------------------------------------------
class QuantizedModel:
    """An integer-only network that behaves like an eval-mode float model.

    ``model(x)`` takes float32 normalised images ``(N, C, H, W)`` and returns float32 logits:
    the input is quantised (:attr:`input_params`), the network runs on integers only
    (:meth:`forward_int`), and the output is dequantised.

    Attributes
    ----------
    layers : list of QConv, QLinear, QMaxPool, QFlatten
        Readable per-layer records (named fields: weights, scales, zero points, multipliers).
    input_shape : (C, H, W)
    backend : {"numba", "reference"}
        The fast kernels (:mod:`minicnn.kernels.int8`) or the loops
        (:mod:`minicnn.kernels.int8_reference`); the same integers either way.
    training : bool
        Always False: a quantised model only infers.
    info : dict
        Free-form facts saved with the model (calibration method, accuracies).
    """

    training = False

    def __init__(self, layers, input_shape, backend: str = "numba", info: dict | None = None):
        if backend not in BACKENDS:
            raise ValueError(f"QuantizedModel: backend must be one of {BACKENDS}, got "
                             f"{backend!r}")
        self.layers = list(layers)
        computes = [layer for layer in self.layers if isinstance(layer, (QConv, QLinear))]
        if not computes:
            raise ValueError("QuantizedModel: needs at least one conv or linear layer")
        for layer in computes[:-1]:
            if layer.output is None:
                raise ValueError("QuantizedModel: only the last conv/linear layer may keep "
                                 "int32 output (output null)")
        if computes[-1].output is None and computes[-1].relu:
            raise ValueError("QuantizedModel: a last layer with int32 output cannot fuse ReLU")
        self.input_shape = tuple(int(d) for d in input_shape)
        self.backend = backend
        self.info = dict(info or {})
        self.shapes = layer_shapes(self.layers, self.input_shape)
        self.packed = pack(self.layers, self.input_shape)
        self._output_scale = None             # dequantize_output's, made on first use

    # -- quantisation of the ends --
    @property
    def input_params(self) -> QuantParams:
        return next(layer.input for layer in self.layers if isinstance(layer, (QConv, QLinear)))

    @property
    def output_shape(self) -> tuple:
        return self.shapes[-1]

    def _last_compute(self):
        return [layer for layer in self.layers if isinstance(layer, (QConv, QLinear))][-1]

    def _sizes(self) -> str:
        return ", ".join(map(str, self.input_shape))

    def quantize_input(self, x: np.ndarray) -> np.ndarray:
        """float32 normalised ``(N, C, H, W)`` -> uint8 of the same shape."""
        x = np.asarray(x)
        if x.ndim != 4 or tuple(x.shape[1:]) != self.input_shape:
            raise ValueError(f"QuantizedModel: expected input (N, {self._sizes()}), got shape "
                             f"{x.shape}")
        return quantize(x, self.input_params)

    def dequantize_output(self, out: np.ndarray) -> np.ndarray:
        """:meth:`forward_int`'s integers -> float32 (channel axis 1)."""
        last = self._last_compute()
        if last.output is None:
            if self._output_scale is None:
                # One real scale per output channel, laid out like one sample's output (a
                # flatten after a final conv repeats each channel's scale over its positions).
                scale = np.float64(last.input.scale) * last.weight_scale.astype(np.float64)
                index = next(i for i, layer in enumerate(self.layers) if layer is last)
                per_channel = self.shapes[index]    # (by identity: == compares arrays)
                self._output_scale = np.ascontiguousarray(np.broadcast_to(
                    scale.reshape((-1,) + (1,) * (len(per_channel) - 1)),
                    per_channel).reshape(self.output_shape))
            return (out.astype(np.float64) * self._output_scale[None]).astype(np.float32)
        return dequantize(out, last.output)

    # -- forward --
    def forward_int(self, xq: np.ndarray) -> np.ndarray:
        """uint8 ``(N, C, H, W)`` -> the last layer's integers: int32 accumulators ``(N,
        classes)`` when the network ends in a conv/linear layer, else uint8."""
        xq = np.asarray(xq)
        if xq.dtype != np.uint8 or xq.ndim != 4 or tuple(xq.shape[1:]) != self.input_shape:
            raise ValueError(f"forward_int: expected uint8 (N, {self._sizes()}), got {xq.dtype} "
                             f"{xq.shape}")
        if self.backend == "reference":
            return self._forward_reference(xq)
        out = fast.forward(self.packed, xq)
        out = out.reshape((xq.shape[0],) + self.output_shape)
        return out if self._last_compute().output is None else out.astype(np.uint8)

    def _forward_reference(self, x):
        for layer in self.layers:
            if isinstance(layer, QConv):
                x = ref.conv2d_int8(x, layer.input.zero_point, layer.weight, layer.bias,
                                    layer.stride, layer.padding)
            elif isinstance(layer, QLinear):
                x = ref.linear_int8(x, layer.input.zero_point, layer.weight, layer.bias)
            elif isinstance(layer, QMaxPool):
                x = ref.maxpool2d_uint8(x, layer.kernel, layer.stride, layer.padding)
                continue
            else:
                x = x.reshape(x.shape[0], -1)
                continue
            if layer.output is None:
                return x
            x = ref.requantize(x, layer.multiplier, layer.shift, layer.output.zero_point,
                               layer.output.zero_point if layer.relu else 0)
        return x

    def forward(self, x: np.ndarray) -> np.ndarray:
        """float32 normalised ``(N, C, H, W)`` -> float32 output (logits ``(N, classes)``)."""
        x = np.asarray(x)
        if self.backend == "reference" or x.dtype != np.float32:
            return self.dequantize_output(self.forward_int(self.quantize_input(x)))
        if x.ndim != 4 or tuple(x.shape[1:]) != self.input_shape:
            raise ValueError(f"QuantizedModel: expected input (N, {self._sizes()}), got shape "
                             f"{x.shape}")
        # the fast kernels quantise the input themselves (the same bytes as quantize_input)
        params = self.input_params
        out = fast.forward(self.packed, x, input_scale=params.scale,
                           input_zero=params.zero_point)
        out = out.reshape((x.shape[0],) + self.output_shape)
        return self.dequantize_output(out if self._last_compute().output is None
                                      else out.astype(np.uint8))

    __call__ = forward

    def eval(self) -> "QuantizedModel":
        return self

    def train(self, mode: bool = True) -> "QuantizedModel":
        if mode:
            raise RuntimeError("a QuantizedModel cannot be trained: train the float model, "
                               "then quantize it again")
        return self

    def __repr__(self) -> str:
        lines = [f"QuantizedModel(input {self.input_shape}, backend {self.backend!r})"]
        for index, (layer, shape) in enumerate(zip(self.layers, self.shapes)):
            extra = " + relu" if getattr(layer, "relu", False) else ""
            lines.append(f"  ({index}) {layer.kind}{extra} -> {shape}")
        return "\n".join(lines)


def quantize_model(model, calibration_images, method: str = "minmax",
                   percentile: float = 99.99, activation_dtype: str = "uint8",
                   backend: str = "numba") -> QuantizedModel:
    """Calibrate ``model`` (a float ``Sequential``) on ``calibration_images`` and return its
    :class:`QuantizedModel` (see :func:`minicnn.quant.quantize`)."""
    from .calibrate import record_ranges

    if activation_dtype != "uint8":
        raise ValueError(f"activation_dtype: only 'uint8' is supported, got "
                         f"{activation_dtype!r}")
    plan = plan_layers(model)            # refuses unsupported layers before any work
    images = np.asarray(calibration_images)
    if images.ndim != 4 or images.shape[0] == 0 or images.dtype != np.float32:
        raise ValueError(f"calibration_images must be float32 (N, C, H, W) with N >= 1, got "
                         f"{images.dtype} {images.shape}")
    was_training = model.training
    model.eval()
    try:
        points = [entry["point"] for entry in plan if entry["kind"] in ("conv", "linear")]
        ranges = record_ranges(list(model._modules.values()), images, points, method,
                               percentile)
    finally:
        model.train(was_training)
    layers = build_layers(plan, ranges, activation_dtype)
    return QuantizedModel(layers, images.shape[1:], backend=backend,
                          info={"method": method, "percentile": percentile,
                                "calibration_images": int(images.shape[0])})
