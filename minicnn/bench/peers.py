"""The competitors minicnn is timed against, each in its own process, and how each one runs.

A *competitor* is one column of the separate-process suites (``models``, ``latency``,
``epoch``): a minicnn kernel backend (``numba``, ``im2col``), minicnn's int8 path, or a peer
library in the configuration its users would run:

=====================  =========================================================================
name                   what runs
=====================  =========================================================================
``torch``              PyTorch eager as shipped: NCHW, glibc's default allocator
``torch-cl``           PyTorch eager, channels-last (NHWC) model and input, glibc's defaults
``torch-tuned``        ``torch-cl`` with the glibc thresholds minicnn gives itself
                       (``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_`` set in its
                       environment to :data:`minicnn.allocator.MMAP_THRESHOLD` and
                       :data:`~minicnn.allocator.TRIM_THRESHOLD`)
``torch-compile``      ``torch.compile`` of the ``torch-tuned`` twin; the first call of each
                       mode (the compilation) is untimed and reported as ``compile_s``
``onnxruntime``        inference only: minicnn's own ONNX export (:func:`minicnn.onnx.export`)
                       run by ONNX Runtime in a process that imports only onnxruntime and
                       NumPy (``ort_child.py``); intra-op threads = the thread count, one
                       inter-op thread, sequential execution, every graph optimisation
``onnxruntime-int8``   inference only: that graph quantised by ONNX Runtime's
                       ``quantize_static`` (QDQ, per-channel int8 weights, uint8 activations,
                       calibrated on :data:`CALIBRATION_IMAGES` random-normal images)
``minicnn-int8``       inference only: :func:`minicnn.quant.quantize` of the float model,
                       calibrated on the same kind of images
=====================  =========================================================================

Inputs are synthetic (speed only): the calibration images are random-normal images of the
model's input shape, so an int8 competitor's logits are compared with the float ones only
loosely (recorded as top-1 agreement, never an error).
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..argtypes import name_list

#: Variables ``--blas-native`` removes from the children's environment (so that OpenBLAS
#: picks this CPU's own kernels); :mod:`.process` re-exports them.
BLAS_ENV = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
#: Images of the model's shape used to calibrate the int8 competitors (64-512 asked).
CALIBRATION_IMAGES = 128
#: The stand-alone script an ONNX Runtime child runs (by path, so ``minicnn`` is not imported).
ORT_CHILD = Path(__file__).with_name("ort_child.py")


@dataclass(frozen=True)
class Competitor:
    """How one named competitor runs.

    Attributes
    ----------
    name : str
    library : {"minicnn", "torch", "onnxruntime"}
    layout : str
        Memory layout of activations, for the report.
    modes : tuple of str
        ``"train"`` and/or ``"inference"``: what it can be timed at.
    allocator : {"system", "tuned-env", "minicnn", "untouched"}
        ``system``: ``MINICNN_ALLOCATOR=system`` (glibc's defaults in a process that imports
        minicnn only for the harness); ``tuned-env``: minicnn's thresholds as ``MALLOC_*``
        variables; ``minicnn``: whatever minicnn sets on import; ``untouched``: the
        environment as inherited (a process that never imports minicnn).
    channels_last, compiled, int8 : bool
    epoch : bool
        Whether the epoch suite can run it (a training competitor with an epoch script).
    """

    name: str
    library: str
    layout: str
    modes: tuple[str, ...]
    allocator: str
    channels_last: bool = False
    compiled: bool = False
    int8: bool = False
    epoch: bool = False

    @property
    def is_peer(self) -> bool:
        """True for another library (what minicnn's ratio to the best peer is taken of)."""
        return self.library != "minicnn"


_BOTH = ("train", "inference")
_NHWC = "NHWC (channels_last)"
PEERS: dict[str, Competitor] = {c.name: c for c in (
    Competitor("torch", "torch", "NCHW", _BOTH, "system", epoch=True),
    Competitor("torch-cl", "torch", _NHWC, _BOTH, "system", channels_last=True, epoch=True),
    Competitor("torch-tuned", "torch", _NHWC, _BOTH, "tuned-env", channels_last=True,
               epoch=True),
    Competitor("torch-compile", "torch", _NHWC, _BOTH, "tuned-env", channels_last=True,
               compiled=True),
    Competitor("onnxruntime", "onnxruntime", "NCHW", ("inference",), "untouched"),
    Competitor("onnxruntime-int8", "onnxruntime", "NCHW (int8 QDQ)", ("inference",),
               "untouched", int8=True),
    Competitor("minicnn-int8", "minicnn", "NCHW (int8)", ("inference",), "minicnn",
               int8=True),
)}
#: The PyTorch competitors (the children that import torch).
TORCH_NAMES = tuple(name for name, c in PEERS.items() if c.library == "torch")
#: What ``--backends ...,torch`` has always meant in the separate-process suites.
DEFAULT_TORCH = ("torch", "torch-cl")


def competitor(name: str) -> Competitor:
    """The :class:`Competitor` called ``name``; a minicnn kernel backend otherwise."""
    if name in PEERS:
        return PEERS[name]
    return Competitor(name, "minicnn", "NCHW", _BOTH, "minicnn", epoch=True)


def parse_competitors(text: str) -> tuple[str, ...]:
    """``--competitors``: ``all`` or a comma-separated list of :data:`PEERS` names."""
    if text.strip() == "all":
        return tuple(PEERS)
    return name_list(text, tuple(PEERS), "competitor(s)", "torch-tuned,onnxruntime")


def select(minicnn_backends, competitors=None, torch_asked: bool = False) -> list[str]:
    """The process-mode competitors, in running order: the minicnn backends, then the peers.

    ``competitors`` (``--competitors``) names the peers; without it the peers are
    :data:`DEFAULT_TORCH` when ``torch_asked`` (``--backends ...,torch``), else none. With
    both, the union (``--backends numba,torch --competitors onnxruntime`` gives numba, torch,
    torch-cl and onnxruntime).
    """
    peers = list(DEFAULT_TORCH) if torch_asked else []
    peers += [n for n in (competitors or ()) if n not in peers]
    ordered = [n for n in PEERS if n in peers]        # one fixed order for every report
    return list(minicnn_backends) + ordered


# ------------------------------------------------------------------------------------------------
# Environment and allocator
# ------------------------------------------------------------------------------------------------
def user_sets_allocator(environ) -> bool:
    """True when ``environ`` already sets glibc's allocator (then minicnn leaves it alone, and
    so does the harness for ``torch-tuned``: both run with the user's settings)."""
    from ..allocator import GLIBC_MALLOC_ENV

    return any(name in environ for name in GLIBC_MALLOC_ENV) or \
        "glibc.malloc." in environ.get("GLIBC_TUNABLES", "")


def tuned_environment() -> dict[str, str]:
    """The ``MALLOC_*`` variables that give a process minicnn's glibc thresholds."""
    from .. import allocator

    return {"MALLOC_MMAP_THRESHOLD_": str(allocator.MMAP_THRESHOLD),
            "MALLOC_TRIM_THRESHOLD_": str(allocator.TRIM_THRESHOLD)}


def apply_environment(name: str, env: dict) -> dict:
    """Set, in ``env`` (changed and returned), what competitor ``name``'s process needs."""
    from ..allocator import ENV_VAR

    mode = competitor(name).allocator
    if mode == "system":
        env[ENV_VAR] = "system"
    elif mode == "tuned-env" and not user_sets_allocator(env):
        env.update(tuned_environment())
    return env


def allocator_label(status: dict | None, environment: dict | None) -> str:
    """How glibc's allocator ran in a child, from its recorded :func:`minicnn.allocator.status`
    (``None`` for a process that never imported minicnn) and recorded environment:
    ``"tuned mmap 32 MiB trim 128 MiB"`` (by minicnn, or ``(MALLOC_* environment)``),
    ``"glibc defaults"``, or the user's own ``MALLOC_*`` settings."""
    environment = environment or {}
    if status and status.get("tuned"):
        settings = status["settings"]
        return (f"tuned mmap {settings['M_MMAP_THRESHOLD'] >> 20} MiB trim "
                f"{settings['M_TRIM_THRESHOLD'] >> 20} MiB")
    if user_sets_allocator(environment):
        ours = tuned_environment()
        if all(environment.get(k) == v for k, v in ours.items()):
            mmap, trim = (int(ours[k]) >> 20 for k in ours)
            return f"tuned mmap {mmap} MiB trim {trim} MiB (MALLOC_* environment)"
        own = ", ".join(f"{k}={v}" for k, v in sorted(environment.items())
                        if k.startswith("MALLOC_") or k == "GLIBC_TUNABLES")
        return f"user settings ({own})"
    return "glibc defaults"


# ------------------------------------------------------------------------------------------------
# Availability
# ------------------------------------------------------------------------------------------------
def _missing(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is None
    except (ImportError, ValueError):
        return True


def unavailable(name: str) -> str | None:
    """Why competitor ``name`` cannot run here (one line), or ``None`` when it can."""
    peer = competitor(name)
    if peer.library == "torch" and _missing("torch"):
        return "PyTorch is not installed (pip install -e '.[torch]')"
    if peer.library == "onnxruntime":
        absent = [m for m in ("onnx", "onnxruntime") if _missing(m)]
        if absent:
            return (f"{' and '.join(absent)} not installed (pip install -e '.[bench]'); "
                    "no ONNX Runtime row")
    if name == "minicnn-int8" and _missing("minicnn.quant"):
        return "minicnn.quant is not importable yet (no minicnn int8 path in this tree)"
    return None


# ------------------------------------------------------------------------------------------------
# ONNX files for the ONNX Runtime children
# ------------------------------------------------------------------------------------------------
def calibration_images(shape, count: int = CALIBRATION_IMAGES) -> np.ndarray:
    """``count`` seeded random-normal float32 images of ``shape`` (C, H, W): the calibration
    set of both int8 competitors (the bench measures speed, not accuracy)."""
    rng = np.random.default_rng(12345)
    return rng.standard_normal((count, *shape), dtype=np.float32)


def export_float(template, shape, path) -> Path:
    """Write ``template`` (a minicnn model) as ONNX with minicnn's own exporter."""
    from .. import onnx as mc_onnx

    template.eval()
    try:
        return mc_onnx.export(template, path, tuple(shape))
    finally:
        template.train()


def quantize_onnx(float_path, int8_path, shape, batch: int = 16) -> Path:
    """ONNX Runtime's static int8 quantisation of ``float_path``: QDQ format, per-channel
    int8 weights, uint8 activations, calibrated (min-max) on :func:`calibration_images`."""
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType,
                                          quantize_static)

    from onnxruntime.quantization.shape_inference import quant_pre_process

    images = calibration_images(shape)
    # ONNX Runtime's recommended first step (shape inference, graph clean-up); the float
    # graph is kept as exported for the float competitor.
    prepared = Path(int8_path).with_suffix(".prepared.onnx")
    quant_pre_process(str(float_path), str(prepared))

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.starts = iter(range(0, len(images), batch))

        def get_next(self):
            start = next(self.starts, None)
            return None if start is None else {"input": images[start:start + batch]}

    quantize_static(str(prepared), str(int8_path), Reader(), quant_format=QuantFormat.QDQ,
                    per_channel=True, activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8)
    return Path(int8_path)


def environment_for(name: str, blas_native: bool, base=None) -> dict:
    """The environment of competitor ``name``'s child: ``base`` (default ``os.environ``)
    copied, without the BLAS variables when ``blas_native``, then :func:`apply_environment`."""
    env = dict(os.environ if base is None else base)
    if blas_native:
        for variable in BLAS_ENV:
            env.pop(variable, None)
    return apply_environment(name, env)
