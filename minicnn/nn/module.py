"""The building blocks every layer shares: ``Parameter``, ``Module`` and ``BackendContext``.

A ``Module`` runs ``forward`` when called, remembers what its ``backward`` needs, and
``backward(dy)`` returns the gradient with respect to its input while *adding* the gradients of
its parameters into ``param.grad`` -- exactly PyTorch's accumulate-then-``zero_grad`` rhythm,
made explicit.

``backward`` checks ``dy`` against the forward output (shape, floating dtype; see
:mod:`minicnn.nn._checks` for the dtype policy) before it touches anything. It may be called
more than once after one forward: every call returns the same ``dx`` and adds the parameter
gradients once more (PyTorch would need ``retain_graph=True``; here what forward remembered is
never freed, and timing a backward pass on its own relies on it).

``Sequential`` lives in :mod:`minicnn.nn.sequential`: it fuses layers that are built on this
module, so this module must not import it.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Iterator, NamedTuple

import numpy as np

from ._checks import check_grad


class Parameter:
    """A trainable array and the gradient accumulated for it.

    Parameters
    ----------
    data : ndarray
        The values; any shape.

    Attributes
    ----------
    data : ndarray
        The values, updated in place by optimisers.
    grad : ndarray or None
        Same shape as ``data``; layers add into it in ``backward``. It may be set to ``None``
        (as in PyTorch): the next ``backward`` then stores a fresh gradient and optimisers
        skip the parameter until then.
    """

    def __init__(self, data: np.ndarray):
        self.data = np.asarray(data)
        self.grad = np.zeros_like(self.data)

    @property
    def shape(self) -> tuple[int, ...]:
        return self.data.shape

    @property
    def dtype(self) -> np.dtype:
        return self.data.dtype

    def zero_grad(self) -> None:
        """Set the gradient to zeros (allocating it when it is ``None``)."""
        if self.grad is None:
            self.grad = np.zeros_like(self.data)
        else:
            self.grad[...] = 0

    def accumulate_grad(self, grad: np.ndarray) -> None:
        """Add ``grad`` into ``self.grad`` (or store a copy of it when ``self.grad`` is None)."""
        if self.grad is None:
            self.grad = np.array(grad, dtype=self.data.dtype, copy=True)
        else:
            self.grad += grad

    def __repr__(self) -> str:
        return f"Parameter(shape={self.data.shape}, dtype={self.data.dtype})"


class BackendContext(NamedTuple):
    """What a layer that runs a kernel backend (:mod:`minicnn.kernels`) keeps between its
    forward and its backward."""

    #: The backend's name, not its module: a module object could not be deep-copied.
    backend: str
    #: Whatever the backend's forward returned for its backward (for the numba backend's
    #: convolution, e.g. a :class:`minicnn.kernels.onepool.ConvContext`), passed back unchanged.
    ctx: Any


class Module:
    """Base class of every layer and network.

    Sub-classes implement ``forward(x)`` and ``backward(dy)``. Assigning a ``Parameter`` or a
    ``Module`` to an attribute registers it, so ``parameters()``, ``state_dict()`` and
    ``train()``/``eval()`` find it, with the same dotted names as PyTorch. Re-assigning a
    registered name follows PyTorch's rules (see :meth:`__setattr__`).
    """

    def __init__(self) -> None:
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "training", True)
        object.__setattr__(self, "_output_spec", None)

    # -- registration ---------------------------------------------------------------------
    def __setattr__(self, name: str, value) -> None:
        """Register ``Parameter`` and ``Module`` values, as ``torch.nn.Module`` does.

        - A ``Parameter`` (or ``Module``) registers under ``name``, replacing whatever was
          registered there before.
        - A registered parameter name accepts only a ``Parameter`` or ``None`` (``None`` keeps
          the name, without a value: it leaves ``parameters()`` and the state dict); a plain
          array raises ``TypeError``, since it would silently stop being trained.
        - A registered child-module name accepts only a ``Module`` or ``None``.
        - A registered buffer name accepts an ndarray (it stays a buffer, at the same place in
          the state dict) or ``None``.
        """
        if "_parameters" not in self.__dict__:
            raise RuntimeError(
                f"{type(self).__name__}: call super().__init__() before assigning attributes")
        if isinstance(value, Parameter):
            self._unregister(name)
            self._parameters[name] = value
        elif isinstance(value, Module):
            self._unregister(name)
            self._modules[name] = value
        elif name in self._parameters:
            if value is not None:
                raise TypeError(f"cannot assign '{_type_name(value)}' as parameter '{name}' "
                                "(Parameter or None expected)")
            self._parameters[name] = None
        elif name in self._modules:
            if value is not None:
                raise TypeError(f"cannot assign '{_type_name(value)}' as child module "
                                f"'{name}' (Module or None expected)")
            self._modules[name] = None
        elif name in self._buffers:
            if value is not None and not isinstance(value, np.ndarray):
                raise TypeError(f"cannot assign '{_type_name(value)}' as buffer '{name}' "
                                "(numpy.ndarray or None expected)")
        object.__setattr__(self, name, value)

    def _unregister(self, name: str) -> None:
        for table in (self._parameters, self._buffers, self._modules):
            table.pop(name, None)

    def register_buffer(self, name: str, value: np.ndarray | None) -> None:
        """Keep a non-trainable array (e.g. running statistics) in the state dict.

        Re-registering an existing buffer keeps its place in the state dict.
        """
        if value is not None and not isinstance(value, np.ndarray):
            raise TypeError(f"cannot assign '{_type_name(value)}' as buffer '{name}' "
                            "(numpy.ndarray or None expected)")
        if name not in self._buffers:
            self._unregister(name)
            self._buffers[name] = None  # the value lives in the attribute; this records the name
        object.__setattr__(self, name, value)

    # -- running --------------------------------------------------------------------------
    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    def forward(self, x: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError(f"{type(self).__name__} does not implement forward")

    def backward(self, dy: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError(f"{type(self).__name__} does not implement backward")

    def _require_forward(self, cache) -> None:
        """Raise a clear error when ``backward`` runs before ``forward``."""
        if cache is None:
            raise RuntimeError(
                f"{self._layer_name()}.backward called before forward: run the layer on an "
                "input first (backward needs what forward remembered)")

    def _output(self, y: np.ndarray) -> np.ndarray:
        """Remember the shape and dtype of the forward output ``y`` (for :meth:`_check_dy`);
        returns ``y``. Every layer's ``forward`` ends with ``return self._output(y)``."""
        object.__setattr__(self, "_output_spec", (y.shape, y.dtype))
        return y

    def _check_dy(self, dy, cache=True) -> np.ndarray:
        """The one gate every ``backward`` passes first: forward must have run (``cache`` is
        what it remembered) and ``dy`` must match its output. Returns ``dy`` in the output's
        dtype; raises before any state is touched."""
        self._require_forward(cache)
        self._require_forward(self._output_spec)
        shape, dtype = self._output_spec
        return check_grad(self._layer_name(), dy, shape, dtype)

    def _layer_name(self) -> str:
        return type(self).__name__

    # -- traversal ------------------------------------------------------------------------
    def children(self) -> Iterator["Module"]:
        yield from (m for m in self._modules.values() if m is not None)

    def named_modules(self, prefix: str = "") -> Iterator[tuple[str, "Module"]]:
        yield prefix, self
        for name, child in self._modules.items():
            if child is not None:
                yield from child.named_modules(f"{prefix}.{name}" if prefix else name)

    def modules(self) -> Iterator["Module"]:
        for _, module in self.named_modules():
            yield module

    def named_parameters(self, prefix: str = "") -> Iterator[tuple[str, Parameter]]:
        for module_name, module in self.named_modules(prefix):
            for name, param in module._parameters.items():
                if param is not None:
                    yield (f"{module_name}.{name}" if module_name else name), param

    def parameters(self) -> list[Parameter]:
        return [p for _, p in self.named_parameters()]

    def named_buffers(self, prefix: str = "") -> Iterator[tuple[str, np.ndarray]]:
        for module_name, module in self.named_modules(prefix):
            for name in module._buffers:
                value = getattr(module, name)
                if value is not None:
                    yield (f"{module_name}.{name}" if module_name else name), value

    # -- modes and gradients --------------------------------------------------------------
    def train(self, mode: bool = True) -> "Module":
        for module in self.modules():
            object.__setattr__(module, "training", bool(mode))
        return self

    def eval(self) -> "Module":
        return self.train(False)

    def zero_grad(self) -> None:
        for param in self.parameters():
            param.zero_grad()

    # -- state ----------------------------------------------------------------------------
    def _state_targets(self) -> "OrderedDict[str, tuple[Module, str, bool]]":
        """State-dict key -> (owning module, attribute name, is a parameter), in key order."""
        targets: OrderedDict[str, tuple[Module, str, bool]] = OrderedDict()
        for module_name, module in self.named_modules():
            prefix = f"{module_name}." if module_name else ""
            for name, param in module._parameters.items():
                if param is not None:
                    targets[prefix + name] = (module, name, True)
            for name in module._buffers:
                if getattr(module, name) is not None:
                    targets[prefix + name] = (module, name, False)
        return targets

    def state_dict(self) -> "OrderedDict[str, np.ndarray]":
        """Parameters and buffers by PyTorch's dotted names (copies, safe to keep)."""
        state: OrderedDict[str, np.ndarray] = OrderedDict()
        for key, (module, name, is_param) in self._state_targets().items():
            value = getattr(module, name)
            state[key] = (value.data if is_param else np.asarray(value)).copy()
        return state

    def load_state_dict(self, state_dict, strict: bool = True) -> None:
        """Copy arrays from ``state_dict`` into this module's parameters and buffers.

        All or nothing: every key, shape and value is checked, and every value converted to
        its target's dtype, before anything is written, so a failed load leaves every
        parameter and buffer byte-for-byte unchanged. Values may be NumPy arrays or anything
        ``np.asarray`` accepts (PyTorch tensors too, via ``.numpy()``); they must be real
        numbers (bool, integer or floating; NaN is fine, but not into an integer buffer).

        Raises
        ------
        ValueError
            Listing the missing and unexpected keys (only when ``strict``), the keys whose
            shapes differ and the keys whose values are not real numbers.
        """
        targets = self._state_targets()
        incoming, converted, problems_by_key = {}, {}, []
        for key, value in state_dict.items():
            try:
                incoming[key] = _to_numpy(value)
            except Exception as exc:  # ragged lists, objects NumPy cannot read...
                problems_by_key.append(f"{key}: not an array ({type(exc).__name__}: {exc})")
        missing = [k for k in targets if k not in state_dict]
        unexpected = [k for k in state_dict if k not in targets]
        mismatched = []
        for key, value in incoming.items():
            if key not in targets:
                continue
            current = _state_value(*targets[key])
            if value.shape != current.shape:
                mismatched.append(f"{key}: expected shape {current.shape}, got {value.shape}")
                continue
            reason = _unconvertible(value, current.dtype)
            if reason:
                problems_by_key.append(f"{key}: {reason}")
                continue
            converted[key] = np.array(value, dtype=current.dtype, copy=True)
        problems = []
        if strict and missing:
            problems.append(f"missing keys: {missing}")
        if strict and unexpected:
            problems.append(f"unexpected keys: {unexpected}")
        if mismatched:
            problems.append("shape mismatches: " + "; ".join(mismatched))
        if problems_by_key:
            problems.append("bad values: " + "; ".join(problems_by_key))
        if problems:
            message = (f"{type(self).__name__}.load_state_dict failed, model left unchanged: "
                       + " | ".join(problems))
            raise ValueError(message)

        # Nothing below can fail: shapes match and every value already has its target dtype.
        for key, value in converted.items():
            _state_value(*targets[key])[...] = value

    # -- dtype ----------------------------------------------------------------------------
    def to(self, dtype) -> "Module":
        """Cast every parameter (and its gradient) and floating buffer to ``dtype``.

        Names, registration and state-dict key order are unchanged.
        """
        dtype = np.dtype(dtype)
        for module in self.modules():
            for param in module._parameters.values():
                if param is None:
                    continue
                param.data = param.data.astype(dtype)
                if param.grad is not None:
                    param.grad = param.grad.astype(dtype)
            for name in module._buffers:
                value = getattr(module, name)
                if value is not None and np.issubdtype(value.dtype, np.floating):
                    setattr(module, name, value.astype(dtype))
        return self

    def double(self) -> "Module":
        return self.to(np.float64)

    def float(self) -> "Module":
        return self.to(np.float32)

    # -- printing -------------------------------------------------------------------------
    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        children = [(name, child) for name, child in self._modules.items() if child is not None]
        if not children:
            return f"{type(self).__name__}({self.extra_repr()})"
        lines = [f"{type(self).__name__}("]
        for name, child in children:
            child_repr = repr(child).replace("\n", "\n  ")
            lines.append(f"  ({name}): {child_repr}")
        lines.append(")")
        return "\n".join(lines)


def _type_name(value) -> str:
    cls = type(value)
    return cls.__name__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__name__}"


def _state_value(module: Module, name: str, is_param: bool) -> np.ndarray:
    """The array a state-dict entry reads from and writes into."""
    value = getattr(module, name)
    return value.data if is_param else value


def _unconvertible(value: np.ndarray, dtype: np.dtype) -> str | None:
    """Why ``value`` cannot be loaded into an array of ``dtype``, or None when it can."""
    if value.dtype.kind not in "biuf":
        return f"expected real numbers, got dtype {value.dtype}"
    if (np.issubdtype(dtype, np.integer) and value.dtype.kind == "f"
            and not np.all(np.isfinite(value))):
        return f"NaN or infinity cannot be stored in a {dtype} buffer"
    return None


def _to_numpy(value) -> np.ndarray:
    if hasattr(value, "detach") and hasattr(value, "numpy"):  # a torch.Tensor
        return value.detach().cpu().numpy()
    return np.asarray(value)

