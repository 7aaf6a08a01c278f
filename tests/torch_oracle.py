"""Shared helpers for the engine tests, and the ONE place their tolerances are stated.

* :func:`check_against_torch` is the single road by which a layer is compared with PyTorch:
  it copies our weights into the torch module, runs both forwards, backpropagates the *same*
  random upstream gradient and compares the output, the input gradient, every parameter
  gradient (by name) and every buffer (running statistics).
* :func:`assert_close` is the single tolerance check every other comparison goes through.
* :func:`spaced` makes inputs that keep finite differences away from ReLU / max kinks.

torch is imported lazily, so the NumPy-only test modules can use these helpers without it.
"""

from __future__ import annotations

import math

import numpy as np

from minicnn.kernels import BACKENDS

# --------------------------------------------------------------------------------------------
# Tolerances (stated once, used everywhere)
# --------------------------------------------------------------------------------------------
#: ``minicnn.gradcheck`` in float64: a correct backward scores ~1e-9..1e-11 (central
#: differences with eps=1e-6 leave O(eps^2) truncation and O(1e-16/eps) round-off), a wrong
#: one 1e-2 or worse, so 1e-6 separates the two by three orders of magnitude either way.
#: Measured (same runs): the worst correct layer scored 3.3e-9 (BasicBlock in eval mode), a
#: 300x margin; the deliberately broken layers in test_engine_gradcheck score 0.5..1.
GRADCHECK_TOL = 1e-6

#: float32 comparisons (ours vs PyTorch, or backend vs backend in float32).
#: float32 has eps = 6e-8. A conv output is a sum of K = C_in/groups * kH * kW products
#: (K <= ~100 here) and a weight gradient a sum over N * H_out * W_out (<= ~200) terms; the
#: round-off of such a sum grows like sqrt(K) * eps * (magnitude of the *terms*), i.e. a few
#: 1e-7 relative to the largest entries, and it does not shrink when the terms cancel to a
#: small result. So: rtol 1e-4 for entries of ordinary size, plus an absolute floor of
#: 1e-5 * (largest |expected| in the tensor, at least 1) for entries that cancelled to
#: near zero -- a >10x margin over the expected error that still catches any wrong index,
#: window, padding or scale (those give O(1) relative errors).
#:
#: Measured (issue 8), over test_engine_torch_parity / _backends / _gradcheck with
#: OPENBLAS_CORETYPE unset, =Haswell, and =Haswell with one BLAS/Numba thread: the largest
#: error seen was 0.059 of this tolerance (BasicBlock, grad of bn1.bias, through two convs
#: and two batch norms: 3.6e-6 absolute), i.e. a 17x margin; a single conv or pool against
#: PyTorch used at most 0.01 of it, and backend vs reference in float32 0.0044 (227x).
F32_RTOL = 1e-4
F32_ATOL = 1e-5

#: float64 comparisons (backend vs backend, optimiser parity): same reasoning with
#: eps = 1.1e-16, keeping a wide margin for different summation orders (GEMM vs loops).
#: Measured (same runs): at most 1.3e-4 of this tolerance (3.6e-15 absolute); it is kept at
#: 1e-10 rather than tightened to the observed 1e-14 because other CPUs (FMA, AVX-512) sum
#: in other orders, and a wrong index or scale still misses it by ten orders of magnitude.
F64_RTOL = 1e-10
F64_ATOL = 1e-12

#: A correct float64 result vs exact arithmetic identities (adjointness, sums).
F64_IDENTITY_RTOL = 1e-10


def tolerances(dtype) -> tuple[float, float]:
    """(rtol, atol) for arrays of ``dtype``."""
    if np.dtype(dtype) == np.float64:
        return F64_RTOL, F64_ATOL
    return F32_RTOL, F32_ATOL


def assert_close(actual, expected, what: str = "", dtype=None) -> None:
    """``actual`` equals ``expected`` to the tolerance of ``dtype`` (default: ``expected``'s;
    anything that is not float64 gets the float32 tolerance).

    The absolute floor is scaled by the largest magnitude in ``expected`` (see ``F32_ATOL``).
    """
    actual = np.asarray(actual)
    expected = np.asarray(expected)
    assert actual.shape == expected.shape, (
        f"{what}: shape {actual.shape} != expected {expected.shape}")
    rtol, atol = tolerances(dtype if dtype is not None else
                            (expected.dtype if np.issubdtype(expected.dtype, np.floating)
                             else np.float64))
    scale = max(1.0, float(np.max(np.abs(expected), initial=0.0)))
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol * scale, err_msg=what)


# --------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------
def spaced(shape, rng: np.random.Generator, low: float = 0.1, high: float = 1.0,
           dtype=np.float64, signed: bool = True) -> np.ndarray:
    """A random permutation of evenly spaced magnitudes in ``[low, high]`` with random signs.

    Every value is at least ``low`` away from 0 (no ReLU kink within reach of a finite
    difference) and any two differ by at least ``(high - low) / size`` (~1e-3 for the sizes
    used here, far above gradcheck's eps = 1e-6), so max pooling has one clear winner in
    every window, and stays that way under the perturbation.
    """
    size = math.prod(shape)
    magnitudes = np.linspace(low, high, size)
    values = rng.permutation(magnitudes)
    if signed:
        values = values * rng.choice([-1.0, 1.0], size=size)
    return values.reshape(shape).astype(dtype)


def backend_params(kernel_layer: bool = True):
    """Backends to parametrise a test over: all of them for layers that run kernels."""
    return list(BACKENDS) if kernel_layer else ["reference"]


# --------------------------------------------------------------------------------------------
# The PyTorch oracle
# --------------------------------------------------------------------------------------------
def _torch():
    import torch  # noqa: PLC0415 - lazy on purpose

    return torch


def to_torch(array: np.ndarray, requires_grad: bool = False):
    torch = _torch()
    tensor = torch.from_numpy(np.ascontiguousarray(array)).clone()
    tensor.requires_grad_(requires_grad)
    return tensor


def to_numpy(tensor) -> np.ndarray:
    return tensor.detach().cpu().numpy()


def copy_state(ours, theirs) -> None:
    """Load our state dict into the torch module (strict: the keys must be PyTorch's)."""
    theirs.load_state_dict({key: to_torch(value) for key, value in ours.state_dict().items()},
                           strict=True)


def _is_loss(module) -> bool:
    from minicnn.nn.loss import _Loss

    return isinstance(module, _Loss)


def check_against_torch(ours, theirs, x: np.ndarray, target=None, *, sync: bool = True,
                        seed: int = 0):
    """Compare forward and backward of ``ours`` with the torch module ``theirs``.

    Parameters
    ----------
    ours : minicnn Module or loss
    theirs : torch.nn.Module built with the same architecture
    x : ndarray, the input (for a loss: the prediction)
    target : labels / targets for a loss
    sync : copy our state (weights *and* buffers) into ``theirs`` first; pass False on later
        steps of a multi-step comparison, so diverging running statistics are not masked.
    seed : seeds the random upstream gradient (the same one is sent into both).

    Checks output, input gradient, every parameter gradient by name, and every buffer after
    the step (running_mean / running_var / num_batches_tracked). Returns ``(y, dx)``.
    """
    torch = _torch()
    if _is_loss(ours):
        tx = to_torch(x, requires_grad=True)
        t_target = to_torch(np.asarray(target))
        loss = ours(x, target)
        t_loss = theirs(tx, t_target)
        assert_close(np.asarray(loss, dtype=x.dtype), to_numpy(t_loss), f"{ours} value", x.dtype)
        dx = ours.backward()
        t_loss.backward()
        assert dx.dtype == x.dtype, f"{ours}: gradient dtype {dx.dtype} != input {x.dtype}"
        assert_close(dx, to_numpy(tx.grad), f"{ours} d(loss)/d(input)", x.dtype)
        return loss, dx

    if sync:
        copy_state(ours, theirs)
    theirs.train(ours.training)
    ours.zero_grad()
    theirs.zero_grad(set_to_none=True)

    tx = to_torch(x, requires_grad=True)
    y = ours(x)
    ty = theirs(tx)
    assert y.dtype == x.dtype, f"{type(ours).__name__}: output dtype {y.dtype} != {x.dtype}"
    assert_close(y, to_numpy(ty), f"{type(ours).__name__} output", x.dtype)

    upstream = np.random.default_rng(seed).standard_normal(y.shape).astype(y.dtype)
    dx = ours.backward(upstream)
    ty.backward(to_torch(upstream))
    assert dx.dtype == x.dtype, f"{type(ours).__name__}: dx dtype {dx.dtype} != {x.dtype}"
    assert_close(dx, to_numpy(tx.grad), f"{type(ours).__name__} input gradient", x.dtype)

    their_params = dict(theirs.named_parameters())
    our_params = dict(ours.named_parameters())
    assert sorted(our_params) == sorted(their_params), (
        f"parameter names differ: ours {sorted(our_params)}, torch {sorted(their_params)}")
    for name, param in our_params.items():
        t_grad = their_params[name].grad
        expected = np.zeros(param.shape, np.float32) if t_grad is None else to_numpy(t_grad)
        assert_close(param.grad, expected, f"{type(ours).__name__} grad of {name!r}", x.dtype)

    their_state = theirs.state_dict()
    for name, value in ours.state_dict().items():
        if name in our_params:
            continue
        expected = to_numpy(their_state[name])
        if np.issubdtype(expected.dtype, np.floating):
            assert_close(value, expected, f"{type(ours).__name__} buffer {name!r}", x.dtype)
        else:
            assert np.array_equal(value, expected), f"buffer {name!r}: {value} != {expected}"
    return y, dx


def torch_basic_block(in_channels: int, out_channels: int, stride: int = 1):
    """torchvision's BasicBlock (same attribute names), built here so torchvision is not
    needed: ``relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))``."""
    torch = _torch()
    nn = torch.nn

    class TorchBasicBlock(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(out_channels)
            self.relu = nn.ReLU()
            self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(out_channels)
            if stride != 1 or in_channels != out_channels:
                self.downsample = nn.Sequential(
                    nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                    nn.BatchNorm2d(out_channels))
            else:
                self.downsample = None

        def forward(self, x):
            out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
            shortcut = x if self.downsample is None else self.downsample(x)
            return torch.relu(out + shortcut)

    return TorchBasicBlock()


# --------------------------------------------------------------------------------------------
# Shared convolution grid (backends-vs-reference and ours-vs-torch)
# --------------------------------------------------------------------------------------------
#: (in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias, (H, W))
CONV_GRID = [
    (3, 4, 3, 1, 0, 1, 1, True, (7, 7)),
    (3, 4, 3, 1, 1, 1, 1, True, (6, 5)),
    (2, 3, 3, 2, 1, 1, 1, True, (8, 7)),            # stride 2, size does not divide
    (2, 3, 3, 3, 2, 1, 1, True, (9, 10)),           # stride 3, padding 2
    (2, 3, 3, 1, "same", 1, 1, True, (6, 7)),
    (2, 3, 2, 1, "same", 1, 1, True, (5, 6)),       # even kernel, asymmetric "same"
    (2, 3, (2, 4), 1, "same", (2, 1), 1, False, (7, 6)),
    (2, 2, 3, 1, "valid", 1, 1, True, (5, 5)),
    (2, 3, 3, 1, 2, 2, 1, True, (7, 7)),            # dilation 2
    (2, 3, 3, 2, 1, 2, 1, False, (9, 8)),           # dilation 2 + stride 2
    (4, 6, 3, 1, 1, 1, 2, True, (5, 5)),            # groups 2
    (4, 4, 3, 2, 1, 1, 4, True, (7, 6)),            # depthwise
    (3, 6, 3, 1, 1, 1, 3, False, (5, 6)),           # depthwise multiplier 2
    (2, 3, (3, 2), (1, 2), (1, 0), 1, 1, True, (6, 7)),   # non-square everything
    (2, 2, (1, 3), (2, 1), (0, 2), (1, 2), 1, True, (5, 6)),
    (3, 2, 1, 1, 0, 1, 1, False, (4, 3)),           # 1x1, bias off
    (2, 3, 5, 2, 2, 1, 1, True, (5, 5)),            # kernel as large as the input
]


def compact(value) -> str:
    """``(2, 3)`` -> ``"2x3"`` for readable test ids."""
    return "x".join(map(str, value)) if isinstance(value, (tuple, list)) else str(value)


def conv_id(cfg) -> str:
    cin, cout, k, s, p, d, g, b, hw = cfg
    return (f"c{cin}-{cout}_k{compact(k)}_s{compact(s)}_p{compact(p)}_d{compact(d)}_g{g}_"
            f"{'bias' if b else 'nobias'}_{compact(hw)}")
