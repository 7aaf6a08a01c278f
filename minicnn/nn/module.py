"""The building blocks every layer shares: ``Parameter``, ``Module`` and ``Sequential``.

A ``Module`` runs ``forward`` when called, remembers what its ``backward`` needs, and
``backward(dy)`` returns the gradient with respect to its input while *adding* the gradients of
its parameters into ``param.grad`` -- exactly PyTorch's accumulate-then-``zero_grad`` rhythm,
made explicit.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Iterator

import numpy as np


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
    grad : ndarray
        Same shape and dtype as ``data``; layers add into it in ``backward``.
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
        self.grad[...] = 0

    def __repr__(self) -> str:
        return f"Parameter(shape={self.data.shape}, dtype={self.data.dtype})"


class Module:
    """Base class of every layer and network.

    Sub-classes implement ``forward(x)`` and ``backward(dy)``. Assigning a ``Parameter`` or a
    ``Module`` to an attribute registers it, so ``parameters()``, ``state_dict()`` and
    ``train()``/``eval()`` find it, with the same dotted names as PyTorch.
    """

    def __init__(self) -> None:
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "training", True)

    # -- registration ---------------------------------------------------------------------
    def __setattr__(self, name: str, value) -> None:
        if "_parameters" not in self.__dict__:
            raise RuntimeError(
                f"{type(self).__name__}: call super().__init__() before assigning attributes")
        for table in (self._parameters, self._buffers, self._modules):
            table.pop(name, None)
        if isinstance(value, Parameter):
            self._parameters[name] = value
        elif isinstance(value, Module):
            self._modules[name] = value
        object.__setattr__(self, name, value)

    def register_buffer(self, name: str, value: np.ndarray) -> None:
        """Keep a non-trainable array (e.g. running statistics) in the state dict."""
        self.__setattr__(name, value)
        self._buffers[name] = None  # the value lives in the attribute; this records the name

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

    def _layer_name(self) -> str:
        return type(self).__name__

    # -- traversal ------------------------------------------------------------------------
    def children(self) -> Iterator["Module"]:
        yield from self._modules.values()

    def named_modules(self, prefix: str = "") -> Iterator[tuple[str, "Module"]]:
        yield prefix, self
        for name, child in self._modules.items():
            yield from child.named_modules(f"{prefix}.{name}" if prefix else name)

    def modules(self) -> Iterator["Module"]:
        for _, module in self.named_modules():
            yield module

    def named_parameters(self, prefix: str = "") -> Iterator[tuple[str, Parameter]]:
        for module_name, module in self.named_modules(prefix):
            for name, param in module._parameters.items():
                yield (f"{module_name}.{name}" if module_name else name), param

    def parameters(self) -> list[Parameter]:
        return [p for _, p in self.named_parameters()]

    def named_buffers(self, prefix: str = "") -> Iterator[tuple[str, np.ndarray]]:
        for module_name, module in self.named_modules(prefix):
            for name in module._buffers:
                yield (f"{module_name}.{name}" if module_name else name), getattr(module, name)

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
    def state_dict(self) -> "OrderedDict[str, np.ndarray]":
        """Parameters and buffers by PyTorch's dotted names (copies, safe to keep)."""
        state: OrderedDict[str, np.ndarray] = OrderedDict()
        for module_name, module in self.named_modules():
            prefix = f"{module_name}." if module_name else ""
            for name, param in module._parameters.items():
                state[prefix + name] = param.data.copy()
            for name in module._buffers:
                state[prefix + name] = np.array(getattr(module, name), copy=True)
        return state

    def load_state_dict(self, state_dict, strict: bool = True) -> None:
        """Copy arrays from ``state_dict`` into this module's parameters and buffers.

        Every key is checked before anything is written, so a failed load leaves the module
        unchanged. Values may be NumPy arrays or anything ``np.asarray`` accepts (PyTorch
        tensors too, via ``.numpy()``).

        Raises
        ------
        ValueError
            Listing the missing and unexpected keys (only when ``strict``) and the keys
            whose shapes differ.
        """
        targets = {}
        for module_name, module in self.named_modules():
            prefix = f"{module_name}." if module_name else ""
            for name in module._parameters:
                targets[prefix + name] = (module, name, True)
            for name in module._buffers:
                targets[prefix + name] = (module, name, False)

        incoming = {key: _to_numpy(value) for key, value in state_dict.items()}
        missing = [k for k in targets if k not in incoming]
        unexpected = [k for k in incoming if k not in targets]
        mismatched = []
        for key, value in incoming.items():
            if key not in targets:
                continue
            module, name, is_param = targets[key]
            current = getattr(module, name).data if is_param else np.asarray(getattr(module, name))
            if value.shape != current.shape:
                mismatched.append(f"{key}: expected shape {current.shape}, got {value.shape}")
        problems = []
        if strict and missing:
            problems.append(f"missing keys: {missing}")
        if strict and unexpected:
            problems.append(f"unexpected keys: {unexpected}")
        if mismatched:
            problems.append("shape mismatches: " + "; ".join(mismatched))
        if problems:
            message = (f"{type(self).__name__}.load_state_dict failed, model left unchanged: "
                       + " | ".join(problems))
            raise ValueError(message)

        for key, value in incoming.items():
            if key not in targets:
                continue
            module, name, is_param = targets[key]
            if is_param:
                param = getattr(module, name)
                param.data[...] = value.astype(param.data.dtype, copy=False)
            else:
                buffer = getattr(module, name)
                if isinstance(buffer, np.ndarray) and buffer.ndim > 0:
                    buffer[...] = value
                else:
                    module.register_buffer(name, np.array(value, dtype=np.asarray(buffer).dtype))

    # -- dtype ----------------------------------------------------------------------------
    def to(self, dtype) -> "Module":
        """Cast every parameter (and its gradient) and floating buffer to ``dtype``."""
        dtype = np.dtype(dtype)
        for module in self.modules():
            for param in module._parameters.values():
                param.data = param.data.astype(dtype)
                param.grad = param.grad.astype(dtype)
            for name in list(module._buffers):
                value = getattr(module, name)
                if np.issubdtype(np.asarray(value).dtype, np.floating):
                    module.register_buffer(name, np.asarray(value).astype(dtype))
        return self

    def double(self) -> "Module":
        return self.to(np.float64)

    def float(self) -> "Module":
        return self.to(np.float32)

    # -- printing -------------------------------------------------------------------------
    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        if not self._modules:
            return f"{type(self).__name__}({self.extra_repr()})"
        lines = [f"{type(self).__name__}("]
        for name, child in self._modules.items():
            child_repr = repr(child).replace("\n", "\n  ")
            lines.append(f"  ({name}): {child_repr}")
        lines.append(")")
        return "\n".join(lines)


def _to_numpy(value) -> np.ndarray:
    if hasattr(value, "detach") and hasattr(value, "numpy"):  # a torch.Tensor
        return value.detach().cpu().numpy()
    return np.asarray(value)


class Sequential(Module):
    """Layers run one after another; ``backward`` runs them in reverse.

    Children are named ``"0"``, ``"1"``, ... so state-dict keys match ``torch.nn.Sequential``.
    """

    def __init__(self, *layers: Module):
        super().__init__()
        for index, layer in enumerate(layers):
            if not isinstance(layer, Module):
                raise TypeError(
                    f"Sequential: argument {index} must be a Module, got {type(layer).__name__}")
            setattr(self, str(index), layer)

    def __getitem__(self, index: int) -> Module:
        layers = list(self._modules.values())
        if isinstance(index, slice):
            return Sequential(*layers[index])
        return layers[index]

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self) -> Iterator[Module]:
        return iter(self._modules.values())

    def forward(self, x: np.ndarray) -> np.ndarray:
        for layer in self._modules.values():
            x = layer(x)
        return x

    def backward(self, dy: np.ndarray, need_input_grad: bool = True) -> np.ndarray | None:
        """Backpropagate through the layers in reverse order.

        ``need_input_grad=False`` tells the first layer that nobody needs the gradient with
        respect to the network's input (true when training), so a first ``Conv2d`` can skip
        its most expensive product; the return value is then ``None`` for such a layer.
        """
        layers = list(self._modules.values())
        for index in range(len(layers) - 1, -1, -1):
            layer = layers[index]
            if index == 0 and not need_input_grad and _accepts_need_input_grad(layer):
                return layer.backward(dy, need_input_grad=False)
            dy = layer.backward(dy)
        return dy


def _accepts_need_input_grad(layer: Module) -> bool:
    import inspect

    return "need_input_grad" in inspect.signature(layer.backward).parameters
