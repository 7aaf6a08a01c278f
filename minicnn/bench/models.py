"""End-to-end benchmarks: training steps and inference of whole networks, minicnn vs PyTorch.

For each network in :mod:`minicnn.models` and batch size, minicnn (one model per requested
kernel backend) races a PyTorch twin built from ``torch.nn`` with the same architecture and the
same weights (minicnn's ``state_dict`` keys are PyTorch's). All competitors share one input
batch and thread count and are timed *in turns* (see :func:`~.timing.time_interleaved`), so
noise on a shared machine hits them alike.

- training step: ``zero_grad``, forward, cross-entropy loss, backward, SGD step (lr 0.01,
  momentum 0.9). The network's input gradient is not computed by either side (minicnn:
  ``backward(dy, need_input_grad=False)``; PyTorch: the input does not require grad).
- inference: eval mode, forward only (PyTorch under ``torch.inference_mode()``).

FLOPs count only the convolutions' and linear layers' multiply-adds (x2): inference is the
forward count; a training step is three times it (forward, weight and input gradients) minus
the first layer's input gradient, which is skipped.
"""

from __future__ import annotations

import numpy as np

from .. import models as zoo
from .. import nn
from .agreement import BenchError, compare_all
from .suites import ModelCase
from .timing import time_blocks, time_interleaved

LR, MOMENTUM = 0.01, 0.9
MODES = ("train", "inference")


# ------------------------------------------------------------------------------------------------
# The PyTorch twin
# ------------------------------------------------------------------------------------------------
def torch_twin(model: nn.Module):
    """A ``torch.nn`` network with the same layers, hyper-parameters and weights as ``model``.

    Raises
    ------
    BenchError
        For a layer type without a PyTorch counterpart here.
    """
    import torch

    class BasicBlock(torch.nn.Module):
        """torchvision's BasicBlock with minicnn's attribute names (``relu_out`` included, so
        that the state-dict keys and the module tree match :class:`minicnn.nn.BasicBlock`)."""

        def __init__(self, block: nn.BasicBlock):
            super().__init__()
            self.conv1, self.bn1 = convert(block.conv1), convert(block.bn1)
            self.relu = torch.nn.ReLU()
            self.conv2, self.bn2 = convert(block.conv2), convert(block.bn2)
            self.relu_out = torch.nn.ReLU()
            self.downsample = (None if block.downsample is None
                               else convert(block.downsample))

        def forward(self, x):
            out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
            shortcut = x if self.downsample is None else self.downsample(x)
            return self.relu_out(out + shortcut)

    def convert(layer):
        if isinstance(layer, nn.Sequential):
            return torch.nn.Sequential(*(convert(child) for child in layer))
        if isinstance(layer, nn.BasicBlock):
            return BasicBlock(layer)
        if isinstance(layer, nn.Conv2d):
            return torch.nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size,
                                   stride=layer.stride, padding=layer.padding,
                                   dilation=layer.dilation, groups=layer.groups,
                                   bias=layer.bias is not None)
        if isinstance(layer, nn.MaxPool2d):
            return torch.nn.MaxPool2d(layer.kernel_size, layer.stride, layer.padding)
        if isinstance(layer, nn.AvgPool2d):
            return torch.nn.AvgPool2d(layer.kernel_size, layer.stride, layer.padding,
                                      count_include_pad=layer.count_include_pad)
        if isinstance(layer, nn.AdaptiveAvgPool2d):
            return torch.nn.AdaptiveAvgPool2d(layer.output_size)
        if isinstance(layer, nn.Linear):
            return torch.nn.Linear(layer.in_features, layer.out_features,
                                   bias=layer.bias is not None)
        if isinstance(layer, nn.Flatten):
            return torch.nn.Flatten(layer.start_dim, layer.end_dim)
        if isinstance(layer, nn.BatchNorm2d):
            return torch.nn.BatchNorm2d(layer.num_features, layer.eps, layer.momentum)
        if isinstance(layer, nn.Dropout):
            return torch.nn.Dropout(layer.p)
        if isinstance(layer, nn.LeakyReLU):
            return torch.nn.LeakyReLU(layer.negative_slope)
        simple = {nn.ReLU: torch.nn.ReLU, nn.Sigmoid: torch.nn.Sigmoid, nn.Tanh: torch.nn.Tanh}
        for ours, theirs in simple.items():
            if type(layer) is ours:
                return theirs()
        raise BenchError(f"no PyTorch twin for layer {type(layer).__name__}; the models "
                         "benchmark supports Sequential nets of Conv2d, pooling, Linear, "
                         "Flatten, BatchNorm2d, BasicBlock, Dropout and activations")

    twin = convert(model)
    twin.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v))
                          for k, v in model.state_dict().items()})
    return twin


# ------------------------------------------------------------------------------------------------
# Steps
# ------------------------------------------------------------------------------------------------
class MinicnnModel:
    """A minicnn network with its loss and optimiser, ready to step."""

    def __init__(self, case: ModelCase, backend: str, state: dict, x, labels):
        from .. import optim

        self.model = zoo.build(case.model, case.in_channels, case.num_classes,
                               image_size=case.image_size, backend=backend, rng=0)
        self.model.load_state_dict(state)
        self.loss_fn = nn.CrossEntropyLoss()
        self.optimizer = optim.SGD(self.model.parameters(), lr=LR, momentum=MOMENTUM)
        self.x, self.labels = x, labels
        self.logits = None

    def forward_backward(self):
        self.model.train()
        self.optimizer.zero_grad()
        self.logits = self.model(self.x)
        self.loss_fn(self.logits, self.labels)
        self.model.backward(self.loss_fn.backward(), need_input_grad=False)

    def train_step(self):
        self.forward_backward()
        self.optimizer.step()

    def inference(self):
        """The eval forward as a user gets it: :func:`minicnn.inference.forward` (the
        whole-network plan up to its batch limit, the layers above)."""
        from .. import inference

        return inference.forward(self.model, self.x)

    def gradients(self) -> dict[str, np.ndarray]:
        result = {"logits": self.logits}
        result.update({f"{k} grad": p.grad.copy() for k, p in self.model.named_parameters()})
        return result


class TorchModel:
    """The PyTorch twin with its loss and optimiser; ``channels_last`` puts the model and the
    input in ``torch.channels_last`` memory format (PyTorch's fastest CPU layout here)."""

    def __init__(self, minicnn_model: nn.Module, x, labels, channels_last: bool = False):
        import torch

        self.torch = torch
        self.model = torch_twin(minicnn_model)
        self.x = torch.from_numpy(x.copy())
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
            self.x = self.x.contiguous(memory_format=torch.channels_last)
        self.loss_fn = torch.nn.CrossEntropyLoss()
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=LR, momentum=MOMENTUM)
        self.labels = torch.from_numpy(labels.astype(np.int64))
        self.logits = None

    def forward_backward(self):
        self.model.train()
        self.optimizer.zero_grad()
        self.logits = self.model(self.x)
        self.loss_fn(self.logits, self.labels).backward()

    def train_step(self):
        self.forward_backward()
        self.optimizer.step()

    def inference(self):
        with self.torch.inference_mode():
            return self.model(self.x)

    def gradients(self) -> dict[str, np.ndarray]:
        result = {"logits": self.logits.detach().numpy()}
        result.update({f"{k} grad": p.grad.numpy().copy()
                       for k, p in self.model.named_parameters()})
        return result


def make_inputs(case: ModelCase):
    """``(x, labels, template)``: the seeded random batch every competitor of ``case`` uses
    (float32 NCHW images, int labels) and a minicnn model with the seeded weights (``rng=0``)
    that every competitor copies (PyTorch through :func:`torch_twin`). The same in every
    process, so competitors timed in different processes still share inputs and weights."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((case.batch, case.in_channels, case.image_size, case.image_size),
                            dtype=np.float32)
    labels = rng.integers(0, case.num_classes, case.batch)
    template = zoo.build(case.model, case.in_channels, case.num_classes,
                         image_size=case.image_size, rng=0)
    return x, labels, template


# ------------------------------------------------------------------------------------------------
# FLOPs
# ------------------------------------------------------------------------------------------------
def model_flops(model: nn.Module, case: ModelCase) -> dict[str, int]:
    """``{"inference", "train"}`` FLOPs for one batch (see the module docstring)."""
    layers = dict(model.named_modules())
    per_image = []
    for info in zoo.profile(model, (case.in_channels, case.image_size, case.image_size)):
        layer = layers[info.name]
        if isinstance(layer, nn.Conv2d):
            per_output = (layer.in_channels // layer.groups) * int(np.prod(layer.kernel_size))
            per_image.append(2 * per_output * int(np.prod(info.output_shape)))
        elif isinstance(layer, nn.Linear):
            per_image.append(2 * layer.in_features * layer.out_features)
    forward = case.batch * sum(per_image)
    first = case.batch * (per_image[0] if per_image else 0)
    return {"inference": forward, "train": 3 * forward - first}


def attach_fractions(records: list[dict], peak_gflops: float | None,
                     core_peak_gflops: float | None = None, threads: int | None = None) -> None:
    """Set each record's ``fraction_of_peak`` = its GFLOP/s / ``peak_gflops`` and, given the
    single-thread GEMM peak, ``fraction_of_core_peak`` = GFLOP/s / (``threads`` x
    ``core_peak_gflops``) (the record's own ``threads`` when it has one)."""
    for record in records:
        record["fraction_of_peak"] = record["gflops"] / peak_gflops if peak_gflops else None
        used = record.get("threads") or threads
        record["fraction_of_core_peak"] = (record["gflops"] / (used * core_peak_gflops)
                                           if core_peak_gflops and used else None)


# ------------------------------------------------------------------------------------------------
# One model case
# ------------------------------------------------------------------------------------------------
def competitors(backends) -> list[str]:
    """minicnn backends (in the order asked; the default backend when none was asked), then
    ``torch`` if asked."""
    from ..kernels import get_default_backend
    from .layers import MINICNN_BACKENDS

    names = [b for b in backends if b in MINICNN_BACKENDS] or [get_default_backend()]
    return names + (["torch"] if "torch" in backends else [])


def _largest_layer_gflop(model: nn.Module, case: ModelCase) -> float:
    layers = dict(model.named_modules())
    largest = 0
    for info in zoo.profile(model, (case.in_channels, case.image_size, case.image_size)):
        if isinstance(layers[info.name], nn.Conv2d):
            largest = max(largest, info.flops)
    return largest * case.batch / 1e9


def bench_model(case: ModelCase, backends, repeats: int, warmup: int,
                reference_max_gflop: float, interleave: bool = True,
                log=None) -> tuple[list[dict], list[dict]]:
    """Check then time training steps and inference of ``case`` for every competitor.

    ``interleave`` (default) times the competitors in turns; ``False`` runs each one's
    repeats back to back (to see whether taking turns changes the numbers).

    Returns
    -------
    (records, skipped)
        One record per (mode, competitor); ``ratio_to_torch`` filled in when ``torch`` ran,
        ``fraction_of_peak`` by :func:`attach_fractions`.

    Raises
    ------
    AgreementError
        If a competitor's logits or parameter gradients differ from the first one's.
    """
    from .layers import REFERENCE_MAX_REPEATS, REFERENCE_MAX_WARMUP

    x, labels, template = make_inputs(case)
    state = template.state_dict()
    flops = model_flops(template, case)

    skipped, names = [], []
    for name in competitors(backends):
        if name == "reference" and _largest_layer_gflop(template, case) > reference_max_gflop:
            skipped.append({"name": f"{case.name} batch {case.batch}", "backend": name,
                            "reason": f"a layer needs more than --reference-max-gflop "
                                      f"{reference_max_gflop:g} GFLOP forward"})
            continue
        names.append(name)

    def build(name):
        if name == "torch":
            return TorchModel(template, x, labels)
        return MinicnnModel(case, name, state, x, labels)

    # Agreement: one forward + backward from the same weights, before any optimiser step.
    outputs = {}
    for name in names:
        competitor = build(name)
        competitor.forward_backward()
        outputs[name] = competitor.gradients()
    compare_all(f"model {case.name} (batch {case.batch})", outputs)
    del outputs

    reps = {n: min(repeats, REFERENCE_MAX_REPEATS) if n == "reference" else repeats
            for n in names}
    warm = {n: min(warmup, REFERENCE_MAX_WARMUP) if n == "reference" else warmup
            for n in names}
    records = []
    for mode in MODES:
        built = {name: build(name) for name in names}
        if mode == "inference":
            for competitor in built.values():
                competitor.model.eval()
            functions = {name: c.inference for name, c in built.items()}
        else:
            functions = {name: c.train_step for name, c in built.items()}
        stats = (time_interleaved if interleave else time_blocks)(functions, reps, warm)
        mode_flops = flops["train" if mode == "train" else "inference"]
        for name in names:
            step = stats[name]
            gflops = mode_flops / step.median / 1e9
            records.append({
                "name": case.name, "batch": case.batch, "mode": mode, "backend": name,
                "step": step.to_dict(),
                "images_per_s": case.batch / step.median,
                "flops": mode_flops, "gflops": gflops,
                "fraction_of_peak": None,
                "ratio_to_torch": (step.median / stats["torch"].median
                                   if "torch" in stats else None),
            })
            if log is not None:
                log(f"  {case.name:<10} batch {case.batch:<4} {mode:<9} {name:<9} "
                    f"{step.median * 1e3:9.3f} ms/step  {case.batch / step.median:9.0f} img/s")
        del built, functions
    return records, skipped
