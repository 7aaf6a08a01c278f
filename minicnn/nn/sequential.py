"""``Sequential``: layers run one after another, and backward through them in reverse.

It sits above the layers, not beside :class:`~minicnn.nn.module.Module`: its forward runs a
``Conv2d -> ReLU (-> MaxPool2d(2))`` block as one fused pass where it can
(:mod:`minicnn.nn.fusion`), so it imports the layers it fuses, and they import only
:mod:`minicnn.nn.module`.
"""

from __future__ import annotations

import inspect
from collections import OrderedDict
from typing import Iterator

import numpy as np

from . import fusion
from .module import Module


class Sequential(Module):
    """Layers run one after another; ``backward`` runs them in reverse.

    Children are named ``"0"``, ``"1"``, ... so state-dict keys match ``torch.nn.Sequential``;
    ``Sequential(OrderedDict(name=layer, ...))`` names them explicitly. A slice
    (``model[2:]``) is a new ``Sequential`` sharing the layers and keeping their names
    (``"2"``, ``"3"``, ...), as in PyTorch.
    """

    def __init__(self, *layers: Module):
        super().__init__()
        if len(layers) == 1 and isinstance(layers[0], OrderedDict):
            named = list(layers[0].items())
        else:
            named = [(str(index), layer) for index, layer in enumerate(layers)]
        for index, (name, layer) in enumerate(named):
            if not isinstance(layer, Module):
                raise TypeError(
                    f"Sequential: argument {index} must be a Module, got {type(layer).__name__}")
            setattr(self, name, layer)

    def __getitem__(self, index: int) -> Module:
        if isinstance(index, slice):
            return Sequential(OrderedDict(list(self._modules.items())[index]))
        return list(self._modules.values())[index]

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self) -> Iterator[Module]:
        return iter(self._modules.values())

    #: Run ``Conv2d -> ReLU (-> MaxPool2d(2))`` on the numba backend as one fused pass
    #: (:mod:`minicnn.nn.fusion`): the same numbers, fewer passes over memory. Set it to
    #: ``False`` on a model (``model.fuse = False``) to run every layer on its own.
    fuse = True

    def forward(self, x: np.ndarray) -> np.ndarray:
        layers = list(self.children())
        blocks = {}
        index = 0
        while index < len(layers):
            block = fusion.forward(layers, index, x) if self.fuse else None
            if block is None:
                x = layers[index](x)
                index += 1
            else:
                blocks[block.last] = block
                x = block.output
                index = block.last + 1
        object.__setattr__(self, "_fused_blocks", blocks)
        return self._output(x)

    def backward(self, dy: np.ndarray, need_input_grad: bool = True) -> np.ndarray | None:
        """Backpropagate through the layers in reverse order (a block the forward fused, in
        one pass: :mod:`minicnn.nn.fusion`).

        ``need_input_grad=False`` tells the first layer that nobody needs the gradient with
        respect to the network's input (true when training), so a first ``Conv2d`` can skip
        its most expensive product; the return value is then ``None`` for such a layer.
        """
        dy = self._check_dy(dy)
        layers = list(self.children())
        blocks = getattr(self, "_fused_blocks", {})
        index = len(layers) - 1
        while index >= 0:
            block = blocks.get(index)
            if block is not None and block.matches(layers):
                first_and_unneeded = block.first == 0 and not need_input_grad
                dy = block.backward(dy, need_input_grad=not first_and_unneeded)
                if first_and_unneeded:
                    return dy
                index = block.first - 1
                continue
            layer = layers[index]
            if index == 0 and not need_input_grad and _accepts_need_input_grad(layer):
                return layer.backward(dy, need_input_grad=False)
            dy = layer.backward(dy)
            index -= 1
        return dy


def _accepts_need_input_grad(layer: Module) -> bool:
    return "need_input_grad" in inspect.signature(layer.backward).parameters
