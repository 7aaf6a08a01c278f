"""Layer benchmarks: one layer shape, every backend, forward and backward timed separately.

What is timed is what users run: a minicnn layer (``nn.Conv2d(..., backend=name)``) called as
``y = layer(x)`` and ``dx = layer.backward(dy)``, and for PyTorch a ``torch.nn`` layer with
autograd, ``y = layer(x)`` and ``y.backward(dy)``. Gradients are zeroed between repeats,
outside the timed region. The input gradient is always computed (``need_input_grad`` True,
``x.requires_grad`` True), as for every layer but a network's first.

Implementations (the "backend" column):

- ``reference``, ``im2col``, ``numba``: minicnn kernel backends (convolution and pooling);
- ``numpy``: minicnn's ``Linear``, which has no kernel backend (one GEMM per product);
- ``torch``: PyTorch in NCHW, like minicnn;
- ``torch-cl``: PyTorch pooling on channels-last (NHWC) tensors, added beside ``torch`` for
  pooling because PyTorch's NCHW max pooling on CPU is much slower than its channels-last one.
"""

from __future__ import annotations

import math
import sys

import numpy as np

from .agreement import compare_all
from .suites import LayerCase
from .timing import Stats, time_forward_backward

MINICNN_BACKENDS = ("reference", "im2col", "numba")
#: The reference backend is explicit Python loops: it runs only where the forward pass needs
#: at most this many GFLOP (override with --reference-max-gflop) and with at most these
#: repeats and warm-up runs.
REFERENCE_MAX_REPEATS = 3
REFERENCE_MAX_WARMUP = 1


def implementations(case: LayerCase, backends) -> list[str]:
    """The implementations that run ``case`` for the requested ``backends``, in order."""
    ours = [b for b in backends if b in MINICNN_BACKENDS]
    names = (["numpy"] if ours else []) if case.kind == "linear" else ours
    if "torch" in backends:
        names.append("torch")
        if case.kind in ("maxpool", "avgpool"):
            names.append("torch-cl")
    return names


def layout_of(implementation: str) -> str:
    return "NHWC (channels_last)" if implementation == "torch-cl" else "NCHW"


# ------------------------------------------------------------------------------------------------
# The data every implementation of a case shares
# ------------------------------------------------------------------------------------------------
def make_data(case: LayerCase, seed: int = 0) -> dict[str, np.ndarray | None]:
    """Random float32 input, upstream gradient and (for conv/linear) weights and bias."""
    rng = np.random.default_rng(seed)
    data = {"x": rng.standard_normal(case.input_shape(), dtype=np.float32),
            "dy": rng.standard_normal(case.output_shape(), dtype=np.float32),
            "weight": None, "bias": None}
    shape = case.weight_shape()
    if shape is not None:
        fan_in = int(np.prod(shape[1:]))
        data["weight"] = (rng.standard_normal(shape, dtype=np.float32)
                          * np.float32(math.sqrt(2.0 / fan_in)))
        data["bias"] = rng.uniform(-0.1, 0.1, shape[0]).astype(np.float32)
    return data


# ------------------------------------------------------------------------------------------------
# Runners: forward / backward / reset / outputs for one implementation
# ------------------------------------------------------------------------------------------------
class MinicnnRunner:
    """A minicnn layer for ``case`` using kernel backend ``backend`` (``"numpy"``: Linear)."""

    def __init__(self, case: LayerCase, backend: str, data: dict):
        from .. import nn

        if case.kind == "conv":
            layer = nn.Conv2d(case.in_channels, case.out_channels, case.kernel,
                              stride=case.stride, padding=case.padding, groups=case.groups,
                              backend=backend, rng=0)
        elif case.kind == "maxpool":
            layer = nn.MaxPool2d(case.kernel, case.stride, case.padding, backend=backend)
        elif case.kind == "avgpool":
            layer = nn.AvgPool2d(case.kernel, case.stride, case.padding, backend=backend)
        else:
            layer = nn.Linear(case.in_channels, case.out_channels, rng=0)
        if data["weight"] is not None:
            layer.weight.data[...] = data["weight"]
            layer.bias.data[...] = data["bias"]
        self.layer, self.x, self.dy = layer, data["x"], data["dy"]
        self.y = self.dx = None

    def forward(self):
        self.y = self.layer(self.x)

    def backward(self):
        self.dx = self.layer.backward(self.dy)

    def reset(self):
        self.layer.zero_grad()

    def outputs(self) -> dict[str, np.ndarray]:
        result = {"output": self.y, "input grad": self.dx}
        if getattr(self.layer, "weight", None) is not None:
            result["weight grad"] = self.layer.weight.grad.copy()
            result["bias grad"] = self.layer.bias.grad.copy()
        return result


class TorchRunner:
    """The same layer in PyTorch with autograd; ``channels_last`` for the ``torch-cl`` column."""

    def __init__(self, case: LayerCase, data: dict, channels_last: bool = False):
        import torch

        if case.kind == "conv":
            layer = torch.nn.Conv2d(case.in_channels, case.out_channels, case.kernel,
                                    stride=case.stride, padding=case.padding, groups=case.groups)
        elif case.kind == "maxpool":
            layer = torch.nn.MaxPool2d(case.kernel, case.stride, case.padding)
        elif case.kind == "avgpool":
            layer = torch.nn.AvgPool2d(case.kernel, case.stride, case.padding)
        else:
            layer = torch.nn.Linear(case.in_channels, case.out_channels)
        if data["weight"] is not None:
            with torch.no_grad():
                layer.weight.copy_(torch.from_numpy(data["weight"]))
                layer.bias.copy_(torch.from_numpy(data["bias"]))
        x = torch.from_numpy(data["x"].copy())
        dy = torch.from_numpy(data["dy"].copy())
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
            dy = dy.contiguous(memory_format=torch.channels_last)
        self.layer, self.x, self.dy = layer, x.requires_grad_(True), dy
        self.y = None

    def forward(self):
        self.y = self.layer(self.x)

    def backward(self):
        self.y.backward(self.dy)

    def reset(self):
        self.x.grad = None
        for p in self.layer.parameters():
            p.grad = None

    def outputs(self) -> dict[str, np.ndarray]:
        result = {"output": self.y.detach().numpy(), "input grad": self.x.grad.numpy()}
        if getattr(self.layer, "weight", None) is not None:
            result["weight grad"] = self.layer.weight.grad.numpy()
            result["bias grad"] = self.layer.bias.grad.numpy()
        return result


def make_runner(case: LayerCase, implementation: str, data: dict):
    """The runner for one implementation name (see :func:`implementations`)."""
    if implementation in ("torch", "torch-cl"):
        if "torch" not in sys.modules:
            import torch  # noqa: F401  (imported by the harness before threads are set)
        return TorchRunner(case, data, channels_last=implementation == "torch-cl")
    return MinicnnRunner(case, None if implementation == "numpy" else implementation, data)


# ------------------------------------------------------------------------------------------------
# One case
# ------------------------------------------------------------------------------------------------
def _rate(amount: float, seconds: float) -> float | None:
    return amount / seconds / 1e9 if seconds > 0 else None


def _record(case: LayerCase, implementation: str, forward: Stats, backward: Stats) -> dict:
    flops_f, flops_b = case.flops()
    bytes_f, bytes_b = case.bytes_moved()
    total = forward.median + backward.median
    gflops = {"forward": _rate(flops_f, forward.median),
              "backward": _rate(flops_b, backward.median),
              "total": _rate(flops_f + flops_b, total)}
    return {
        "name": case.name, "kind": case.kind, "shape": case.describe(), "origin": case.origin,
        "batch": case.batch, "input_shape": list(case.input_shape()),
        "output_shape": list(case.output_shape()),
        "backend": implementation, "layout": layout_of(implementation),
        "forward": forward.to_dict(), "backward": backward.to_dict(),
        "total_ms": total * 1e3,
        "flops": {"forward": flops_f, "backward": flops_b},
        "bytes": {"forward": bytes_f, "backward": bytes_b},
        "gflops": gflops,
        "gbytes_per_s": {"forward": _rate(bytes_f, forward.median),
                         "backward": _rate(bytes_b, backward.median),
                         "total": _rate(bytes_f + bytes_b, total)},
        "compute_bound": case.is_compute_bound,
        "fraction_of_peak": None,
        "fraction_of_core_peak": None,
        "ratio_to_torch": None,
    }


def attach_fractions(records: list[dict], peak_gflops: float | None,
                     core_peak_gflops: float | None = None, threads: int | None = None) -> None:
    """Set ``fraction_of_peak`` = GFLOP/s / ``peak_gflops`` (forward, backward, total) for
    convolution and linear records; pooling (memory-bound) keeps ``None``.

    Given the single-thread GEMM peak ``core_peak_gflops`` and the ``threads`` the layer
    ran on, also ``fraction_of_core_peak`` = GFLOP/s / (``threads`` x ``core_peak_gflops``):
    the fraction of what one core's GEMM reaches, per core used (the issue's ">= 70 % of the
    single-thread GEMM peak per core")."""
    for record in records:
        record.setdefault("fraction_of_core_peak", None)
        if not record["compute_bound"]:
            continue
        if peak_gflops:
            record["fraction_of_peak"] = {k: (v / peak_gflops if v is not None else None)
                                          for k, v in record["gflops"].items()}
        if core_peak_gflops and threads:
            per_core = threads * core_peak_gflops
            record["fraction_of_core_peak"] = {k: (v / per_core if v is not None else None)
                                               for k, v in record["gflops"].items()}


def attach_ratios(records: list[dict]) -> None:
    """Set each record's ``ratio_to_torch`` = its median time / PyTorch NCHW's, for the same
    case (forward, backward and total); ``None`` where PyTorch was not run."""
    torch_by_case = {r["name"]: r for r in records if r["backend"] == "torch"}
    for record in records:
        torch_record = torch_by_case.get(record["name"])
        if torch_record is None:
            continue
        record["ratio_to_torch"] = {
            "forward": record["forward"]["median_ms"] / torch_record["forward"]["median_ms"],
            "backward": record["backward"]["median_ms"] / torch_record["backward"]["median_ms"],
            "total": record["total_ms"] / torch_record["total_ms"],
        }


def bench_layer(case: LayerCase, backends, repeats: int, warmup: int,
                reference_max_gflop: float, log=None) -> tuple[list[dict], list[dict]]:
    """Check then time every implementation of ``case``.

    Parameters
    ----------
    case : LayerCase
    backends : sequence of str
        Requested backends (``reference``, ``im2col``, ``numba``, ``torch``).
    repeats, warmup : int
    reference_max_gflop : float
        The reference backend skips cases whose forward pass needs more GFLOP than this.
    log : callable or None
        Called with one progress line per implementation.

    Returns
    -------
    (records, skipped)
        One record per implementation timed (``ratio_to_torch`` and ``fraction_of_peak``
        are filled in by :func:`attach_ratios` and :func:`attach_fractions` once the whole
        run is known); ``skipped`` lists ``{"name", "backend", "reason"}``.

    Raises
    ------
    AgreementError
        If an implementation's output or gradients differ from the first one's.
    """
    skipped = []
    names = []
    for name in implementations(case, backends):
        if name == "reference" and case.flops()[0] > reference_max_gflop * 1e9:
            skipped.append({"name": case.name, "backend": name, "reason":
                            f"forward needs {case.flops()[0] / 1e9:.2f} GFLOP > "
                            f"--reference-max-gflop {reference_max_gflop:g}"})
            continue
        names.append(name)
    data = make_data(case)
    runners = {name: make_runner(case, name, data) for name in names}

    outputs = {}
    for name, runner in runners.items():
        runner.reset()
        runner.forward()
        runner.backward()
        outputs[name] = runner.outputs()
    compare_all(f"{case.name} ({case.describe()}, batch {case.batch})", outputs)
    del outputs

    records = []
    for name in names:
        runner = runners.pop(name)
        reps, warm = repeats, warmup
        if name == "reference":
            reps, warm = min(repeats, REFERENCE_MAX_REPEATS), min(warmup, REFERENCE_MAX_WARMUP)
        forward, backward = time_forward_backward(runner.forward, runner.backward,
                                                  runner.reset, reps, warm)
        del runner
        record = _record(case, name, forward, backward)
        records.append(record)
        if log is not None:
            log(f"  {case.name:<28} {name:<9} fwd {record['forward']['median_ms']:9.3f} ms  "
                f"bwd {record['backward']['median_ms']:9.3f} ms")
    return records, skipped
