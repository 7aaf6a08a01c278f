"""What the page shows, computed by minicnn's own layers: preprocessing steps, every layer's
output, class probabilities, saliency, and the inside of one convolution output.

:class:`Explorer` holds one trained run. :meth:`Explorer.analyse` takes the bytes of an image
file, prepares it exactly as ``minicnn predict`` does, runs the network layer by layer and
keeps the result under an id (a few recent ones), so that the page can then ask about one
layer's exact values, one output pixel's receptive field or another class's saliency without
sending the image again.

The layers keep state between forward and backward, so one lock serialises all computation:
the server may answer requests on several threads.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from .. import models, nn
from ..data import DataError
from ..kernels.im2col import im2col
from ..nn.functional import softmax
from ..preprocess import decode_rgba, prepare_rgba
from . import geometry

MAX_PIXELS = 12_000_000     # a 12-megapixel phone photo; more is refused before decoding


class ExploreError(Exception):
    """A request that cannot be answered; ``status`` is the HTTP status to send (4xx)."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


@dataclass
class Analysis:
    """One image, run through the network.

    Attributes
    ----------
    id : str
    pixels : ndarray (C, H, W) float32 in [0, 1]
        The prepared image (what ``minicnn predict`` feeds the network, before normalising).
    network_input : ndarray (1, C, H, W) float32
        ``(pixels - mean) / std``.
    outputs : list of ndarray
        ``outputs[i]`` is layer ``i``'s output for this image, without the batch axis.
    probabilities : ndarray (classes,)
    steps : list of (str, ndarray)
        The preprocessing steps (:class:`minicnn.preprocess.Prepared`).
    inverted : bool
    """

    id: str
    pixels: np.ndarray
    network_input: np.ndarray
    outputs: list
    probabilities: np.ndarray
    steps: list
    inverted: bool


def decode_upload(data: bytes) -> np.ndarray:
    """An uploaded image file's bytes as RGBA ``(H, W, 4)`` float32 in [0, 1].

    Raises
    ------
    ExploreError
        415 when the bytes are not an image, 413 when it has too many pixels.
    """
    try:
        return decode_rgba(data, max_pixels=MAX_PIXELS)
    except DataError as error:
        status = 413 if "pixels allowed" in str(error) else 415
        raise ExploreError(f"not a usable image: {error}", status) from error


class Explorer:
    """A trained run, ready to answer the page's questions.

    Parameters
    ----------
    model : Sequential
        The trained network (put in eval mode here).
    meta : minicnn.train.RunMeta
        Input shape, normalisation, classes, names.
    name : str
        Shown on the page (the run folder's name).
    keep : int
        How many recent analyses to keep for follow-up questions.
    """

    task = "classification"
    #: What a saliency is asked for (``GET /api/saliency?class=K``).
    saliency_target = "class"

    def __init__(self, model: nn.Module, meta, name: str = "", keep: int = 32):
        self.model = model.eval()
        self.meta = meta
        self.name = name
        self.layers = list(model) if isinstance(model, nn.Sequential) else [model]
        self.layer_names = ([n for n, _ in model._modules.items()]
                            if isinstance(model, nn.Sequential) else ["0"])
        channels = len(meta.mean)
        self.mean = np.asarray(meta.mean, dtype=np.float32).reshape(channels, 1, 1)
        self.std = np.asarray(meta.std, dtype=np.float32).reshape(channels, 1, 1)
        self.input_shape = tuple(int(d) for d in meta.input_shape)
        self._keep = keep
        self._recent: OrderedDict[str, Analysis] = OrderedDict()
        self._lock = threading.Lock()
        self._summary = models.profile(model, self.input_shape)
        self._shapes = self._layer_shapes()
        self._check_output()

    def _check_output(self) -> None:
        """Refuse a network whose output is not one logit per class."""
        classes = len(self.meta.classes)
        if self._shapes[-1] != (classes,):
            raise ExploreError(f"not a classification run: the network's output has shape "
                               f"{self._shapes[-1]}, expected ({classes},) for its "
                               f"{classes} classes")

    def payload(self, analysis: Analysis, gradient: np.ndarray, predicted: int) -> dict:
        """The answer to ``POST /api/analyse`` for what :meth:`analyse` returned."""
        from .payloads import analysis_payload

        return analysis_payload(self, analysis, gradient, predicted)

    # -----------------------------------------------------------------------------------------
    # The model: names, summary, first-layer filters
    # -----------------------------------------------------------------------------------------
    def info(self) -> dict:
        """What the page shows before any drawing: the run, its layers and first filters.

        ``filters`` is the first Conv2d's weight ``(C_out, C_in/groups, kH, kW)`` (None when
        there is no convolution); arrays are sent as :func:`.encode.exact` payloads.
        """
        first_conv = next((m for m in self.model.modules() if isinstance(m, nn.Conv2d)), None)
        shapes = self._shapes
        return {
            "run": self.name, "model": self.meta.model, "dataset": self.meta.dataset,
            "classes": list(self.meta.classes), "input_shape": list(self.input_shape),
            "mean": [float(v) for v in self.mean.ravel()],
            "std": [float(v) for v in self.std.ravel()],
            "layers": [{"name": name, "kind": type(layer).__name__, "shape": list(shape),
                        "conv": isinstance(layer, nn.Conv2d)}
                       for name, layer, shape in zip(self.layer_names, self.layers, shapes)],
            "summary": [{"name": r.name, "kind": r.kind, "shape": list(r.output_shape),
                         "parameters": r.parameters, "flops": r.flops} for r in self._summary],
            "total_parameters": models.count_parameters(self.model),
            "total_flops": sum(r.flops for r in self._summary),
            "filters": None if first_conv is None else first_conv.weight.data.astype(np.float32),
        }

    def _layer_shapes(self) -> list[tuple[int, ...]]:
        with self._lock:
            x = np.zeros((1, *self.input_shape), dtype=np.float32)
            shapes = []
            for layer in self.layers:
                x = layer(x)
                shapes.append(x.shape[1:])
            return shapes

    # -----------------------------------------------------------------------------------------
    # One image
    # -----------------------------------------------------------------------------------------
    def analyse(self, data: bytes, enhance: bool = True) -> tuple[Analysis, np.ndarray, int]:
        """Prepare an image file's bytes, run every layer, and the saliency of the top class.

        Parameters
        ----------
        data : bytes
            The file (PNG, JPEG, ...), as uploaded or as the canvas encodes it.
        enhance : bool
            False: as ``minicnn predict --no-preprocess`` (only convert and resize).

        Returns
        -------
        (Analysis, saliency gradient (C, H, W) float32, predicted class index)

        Raises
        ------
        ExploreError
            415 when the bytes are not an image, 413 when it has too many pixels.
        """
        rgba = decode_upload(data)
        prepared = prepare_rgba(rgba, self.input_shape, self.meta.dataset, enhance=enhance,
                                keep_steps=True)
        key = hashlib.sha256(data).hexdigest()[:16] + ("" if enhance else "-raw")
        network_input = ((prepared.image - self.mean) / self.std)[None].astype(np.float32)
        with self._lock:
            outputs = self._forward(network_input)
            probabilities = softmax(outputs[-1].astype(np.float64)).astype(np.float32)
            predicted = int(np.argmax(probabilities))
            gradient = self._backward_to_pixels(outputs[-1], predicted)
            analysis = Analysis(key, prepared.image, network_input, outputs, probabilities,
                                prepared.steps, prepared.inverted)
            self._recent[key] = analysis
            self._recent.move_to_end(key)
            while len(self._recent) > self._keep:
                self._recent.popitem(last=False)
        return analysis, gradient, predicted

    def _forward(self, network_input: np.ndarray) -> list[np.ndarray]:
        """Run the layers one by one (what ``Sequential.forward`` does), keeping each output."""
        outputs, x = [], network_input
        for layer in self.layers:
            x = layer(x)
            outputs.append(x[0].copy())
        return outputs

    def _backward_to_pixels(self, logits: np.ndarray, class_index: int) -> np.ndarray:
        """d(logit of ``class_index``) / d(prepared pixel), through the layers' ``backward``.

        Must follow a forward of the same image (the layers keep what backward needs). The
        network sees ``(pixel - mean) / std``, so the chain rule divides by ``std``.
        """
        dy = np.zeros((1, *logits.shape), dtype=np.float32)
        dy[0, class_index] = 1.0
        self.model.zero_grad()
        for layer in reversed(self.layers):
            dy = layer.backward(dy)
        self.model.zero_grad()          # the parameter gradients are not wanted here
        return (dy[0] / self.std).astype(np.float32)

    def get(self, input_id: str) -> Analysis:
        """An analysis kept from :meth:`analyse`; 404 when it is unknown or was dropped."""
        with self._lock:
            if input_id not in self._recent:
                raise ExploreError(f"unknown input {input_id!r} (analyse the image first; only "
                                   f"the last {self._keep} are kept)", 404)
            return self._recent[input_id]

    def saliency(self, input_id: str, class_index: int) -> np.ndarray:
        """d(logit of ``class_index``) / d(pixel) for a kept analysis, shape (C, H, W)."""
        analysis = self.get(input_id)
        if not 0 <= class_index < len(self.meta.classes):
            raise ExploreError(f"class must be 0..{len(self.meta.classes) - 1}, got "
                               f"{class_index}")
        with self._lock:
            outputs = self._forward(analysis.network_input)
            return self._backward_to_pixels(outputs[-1], class_index)

    def layer_index(self, name: str) -> int:
        """The position of the layer named ``name`` ("0", "1", ...); 404 when unknown."""
        if name not in self.layer_names:
            raise ExploreError(f"unknown layer {name!r}; the layers are "
                               f"{', '.join(self.layer_names)}", 404)
        return self.layer_names.index(name)

    def layer_input(self, analysis: Analysis, index: int) -> np.ndarray:
        """What layer ``index`` read: the network input or the previous layer's output."""
        return analysis.network_input[0] if index == 0 else analysis.outputs[index - 1]

    def convolution(self, input_id: str, layer_name: str, channel: int, y: int, x: int) -> dict:
        """How one output value of a Conv2d layer is made.

        Parameters
        ----------
        input_id : str
            A kept analysis.
        layer_name : str
            A Conv2d layer of the network.
        channel, y, x : int
            The output channel and pixel.

        Returns
        -------
        dict
            ``window`` (C_in_g, kH, kW): the input values the kernel covers (padding as 0);
            ``unrolled`` (C_in_g*kH*kW,): the same values as im2col lays them out (one
            column of its matrix), ``kernel`` (C_out's weights, same layout), ``products``,
            ``bias``, ``dot`` (sum of products + bias) and ``value`` (the layer's output);
            ``input_channels`` (which channels of the input the group reads);
            ``boxes``: the receptive field on the input of every earlier layer, as
            ``{layer index: [top, bottom, left, right]}`` (inclusive, clipped), and ``window_box``
            the unclipped box on this layer's input (it may reach into the padding).
        """
        analysis = self.get(input_id)
        index = self.layer_index(layer_name)
        layer = self.layers[index]
        if not isinstance(layer, nn.Conv2d):
            raise ExploreError(f"layer {layer_name} is a {type(layer).__name__}, not a Conv2d")
        out = analysis.outputs[index]
        for label, value, size in (("channel", channel, out.shape[0]), ("y", y, out.shape[1]),
                                   ("x", x, out.shape[2])):
            if not 0 <= value < size:
                raise ExploreError(f"{label} must be 0..{size - 1} for layer {layer_name}, "
                                   f"got {value}")
        per_group_out = layer.out_channels // layer.groups
        per_group_in = layer.in_channels // layer.groups
        first = channel // per_group_out * per_group_in
        layer_in = self.layer_input(analysis, index)[first:first + per_group_in]
        cols, (_, out_w) = im2col(layer_in[None], layer.kernel_size, layer.stride,
                                  layer._pads, layer.dilation)
        unrolled = cols[:, y * out_w + x]
        kernel = layer.weight.data[channel].reshape(-1).astype(np.float32)
        products = unrolled * kernel
        bias = 0.0 if layer.bias is None else float(layer.bias.data[channel])
        sizes = [tuple(self.layer_input(analysis, i).shape[-2:]) for i in range(index + 1)]
        field = geometry.receptive_field(self.layers, index, y, x, sizes)
        return {
            "layer": layer_name, "channel": channel, "y": y, "x": x,
            "input_channels": list(range(first, first + per_group_in)),
            "kernel_size": list(layer.kernel_size), "stride": list(layer.stride),
            "padding": list(layer._pads), "dilation": list(layer.dilation),
            "window": unrolled.reshape(per_group_in, *layer.kernel_size),
            "unrolled": unrolled, "kernel": kernel, "products": products, "bias": bias,
            "dot": float(products.sum(dtype=np.float64) + bias), "value": float(out[channel, y, x]),
            "boxes": {str(i): list(box) for i, box in field["boxes"].items()},
            "window_box": list(field["unclipped"]),
        }
