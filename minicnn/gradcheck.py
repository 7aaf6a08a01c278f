"""Finite-difference gradient checking, for learners and for the test suite.

The analytic gradient from ``backward`` is compared with central differences
``(L(θ + ε) - L(θ - ε)) / 2ε`` for every element of every parameter and of the input, in
float64 (float32 has too few digits: its round-off would swamp the difference).

For a layer the scalar checked is ``L = Σ y * g`` with a fixed random ``g`` (so every output
element matters); for a loss it is the loss itself.

The error reported per tensor is the worst absolute difference divided by the largest gradient
magnitude of that tensor: ``max|analytic - numeric| / max(max|analytic|, max|numeric|)``.
Scaling by the tensor's largest entry instead of each element's own keeps elements whose true
gradient is exactly zero (dead ReLUs) from turning round-off into a huge "relative" error. A
correct float64 backward typically scores 1e-9 to 1e-11; a wrong one scores 1e-2 or worse.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np

from . import init
from .nn.loss import _Loss
from .nn.module import Module


@dataclass
class GradcheckResult:
    """Worst relative error per checked tensor (``"input"`` and each parameter name)."""

    errors: dict[str, float] = field(default_factory=dict)

    @property
    def max_error(self) -> float:
        return max(self.errors.values()) if self.errors else 0.0

    def passed(self, tolerance: float = 1e-6) -> bool:
        return self.max_error < tolerance

    def __str__(self) -> str:
        width = max((len(name) for name in self.errors), default=5)
        rows = [f"{name:<{width}}  {error:.2e}" for name, error in self.errors.items()]
        return "\n".join([f"{'tensor':<{width}}  worst relative error", *rows])


def _relative_error(analytic: np.ndarray, numeric: np.ndarray) -> float:
    scale = max(np.abs(analytic).max(initial=0.0), np.abs(numeric).max(initial=0.0))
    if scale == 0.0:
        return 0.0
    return float(np.abs(analytic - numeric).max() / scale)


def _generators(module: Module) -> list[np.random.Generator]:
    """Every Generator a module draws from (Dropout masks), to replay the same draws.

    minicnn's default generator is always included: layers built without ``rng`` draw from
    it at run time. Replaying it leaves it where one forward pass would have.
    """
    found = [init.default_rng()]
    for sub in module.modules():
        for value in vars(sub).values():
            if isinstance(value, np.random.Generator) and not any(value is g for g in found):
                found.append(value)
    return found


def gradcheck(module: Module, x: np.ndarray, target=None, eps: float = 1e-6, seed: int = 0,
              check_input: bool = True) -> GradcheckResult:
    """Compare ``module.backward`` with central differences.

    Parameters
    ----------
    module : Module
        A layer, a whole model, or a loss (then ``target`` is required). It is copied and cast
        to float64; the original is left untouched.
    x : ndarray
        The input (for a loss: the prediction), any shape the module accepts; cast to float64.
    target : ndarray, optional
        Labels or targets, for losses.
    eps : float
        Step of the central difference.
    seed : int
        Seeds the random output weighting ``g``.
    check_input : bool
        Also check the gradient with respect to ``x``.

    Returns
    -------
    GradcheckResult
        ``.errors`` maps ``"input"`` and each parameter name to its worst relative error;
        ``.passed(tol)`` and ``print(result)`` for a quick look.

    Examples
    --------
    >>> from minicnn import nn, gradcheck
    >>> layer = nn.Conv2d(2, 3, 3, padding=1, rng=0)
    >>> x = np.random.default_rng(1).standard_normal((2, 2, 5, 5))
    >>> gradcheck(layer, x).passed()
    True
    """
    module = copy.deepcopy(module).double()
    x = np.array(x, dtype=np.float64)
    is_loss = isinstance(module, _Loss)
    if is_loss and target is None:
        raise ValueError(f"gradcheck: {type(module).__name__} is a loss; pass target=")
    generators = _generators(module)
    states = [g.bit_generator.state for g in generators]

    def run(inp):
        for generator, state in zip(generators, states):
            generator.bit_generator.state = state
        return module(inp, target) if is_loss else module(inp)

    # Analytic gradients.
    y = run(x)
    # A stream of its own, so g never equals an input the caller drew with the same seed.
    upstream = None if is_loss else np.random.default_rng((seed, 0x6A)).standard_normal(np.shape(y))
    module.zero_grad()
    dx = module.backward() if is_loss else module.backward(upstream)

    def objective(inp):
        out = run(inp)
        return float(out) if is_loss else float(np.sum(out * upstream))

    def numeric_gradient(array, inp):
        grad = np.zeros_like(array)
        flat, flat_grad = array.reshape(-1), grad.reshape(-1)
        for i in range(flat.size):
            original = flat[i]
            flat[i] = original + eps
            plus = objective(inp)
            flat[i] = original - eps
            minus = objective(inp)
            flat[i] = original
            flat_grad[i] = (plus - minus) / (2 * eps)
        return grad

    result = GradcheckResult()
    if check_input:
        if dx is None:
            raise ValueError("gradcheck: backward returned no input gradient")
        result.errors["input"] = _relative_error(dx, numeric_gradient(x, x))
    for name, param in module.named_parameters():
        analytic = param.grad.copy()
        result.errors[name] = _relative_error(analytic, numeric_gradient(param.data, x))
    return result
