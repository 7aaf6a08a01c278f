"""Optimisers (``SGD``, ``Adam``, ``AdamW``) and learning-rate schedules, with PyTorch's update
rules, so the same hyper-parameters mean the same thing.

Each optimiser keeps ``param_groups`` (a list with one dict of hyper-parameters per group) like
PyTorch, updates ``param.data`` in place in ``step()``, and has ``state_dict()`` /
``load_state_dict()`` so a training run can be resumed exactly.
"""

from __future__ import annotations

import math

import numpy as np

from .nn.module import Parameter


class Optimizer:
    """Base class: holds parameter groups and per-parameter state (momentum buffers...)."""

    def __init__(self, params, defaults: dict):
        params = list(params)
        if not params:
            raise ValueError(f"{type(self).__name__}: got an empty parameter list")
        if isinstance(params[0], dict):
            groups = [dict(group) for group in params]
        else:
            groups = [{"params": params}]
        self.param_groups = []
        for group in groups:
            group["params"] = list(group["params"])
            for p in group["params"]:
                if not isinstance(p, Parameter):
                    raise TypeError(f"{type(self).__name__}: expected Parameters, got "
                                    f"{type(p).__name__}; pass model.parameters()")
            for key, value in defaults.items():
                group.setdefault(key, value)
            self._check_hyperparameters(group)
            group.setdefault("initial_lr", group["lr"])
            self.param_groups.append(group)
        self.state: dict[int, dict] = {}   # keyed by the parameter's position, for saving

    #: Per-parameter state each optimiser keeps: name -> shape (``"param"``: the parameter's).
    _state_shapes: dict[str, object] = {}

    def _check_hyperparameters(self, group: dict) -> None:
        """Refuse values PyTorch refuses, with PyTorch's wording (prefixed by our name)."""
        if not group["lr"] >= 0:
            raise ValueError(f"{type(self).__name__}: Invalid learning rate: {group['lr']}")
        if not group.get("weight_decay", 0.0) >= 0:
            raise ValueError(f"{type(self).__name__}: Invalid weight_decay value: "
                             f"{group['weight_decay']}")

    def _parameters(self):
        index = 0
        for group in self.param_groups:
            for p in group["params"]:
                yield index, group, p
                index += 1

    @property
    def lr(self) -> float:
        """Learning rate of the first group (handy for printing)."""
        return self.param_groups[0]["lr"]

    def zero_grad(self) -> None:
        for group in self.param_groups:
            for p in group["params"]:
                p.zero_grad()

    def step(self) -> None:
        """Update every parameter that has a gradient (``p.grad is None`` is skipped, as in
        PyTorch, and gets no optimiser state)."""
        for index, group, p in self._parameters():
            if p.grad is not None:
                self._update(p, self.state.setdefault(index, {}), group)

    def _update(self, p: Parameter, state: dict, group: dict) -> None:  # pragma: no cover
        raise NotImplementedError

    def state_dict(self) -> dict[str, np.ndarray]:
        """Flat ``{name: array}`` (hyper-parameters and buffers), storable in ``.npz``."""
        out = {}
        for g, group in enumerate(self.param_groups):
            for key, value in group.items():
                if key != "params":
                    out[f"group{g}.{key}"] = np.asarray(value)
        for index, state in self.state.items():
            for key, value in state.items():
                out[f"state{index}.{key}"] = np.array(value, copy=True)
        return out

    def load_state_dict(self, state_dict) -> None:
        """Restore what :meth:`state_dict` saved. All or nothing: every name, index, shape and
        hyper-parameter is checked before anything changes.

        Raises
        ------
        ValueError
            Naming the entry that is malformed, refers to a group or parameter this optimiser
            does not have, has the wrong shape, is not numeric, or holds a hyper-parameter
            value the optimiser refuses.
        """
        name_of = type(self).__name__
        params = [p for _, _, p in self._parameters()]
        groups = [dict(group) for group in self.param_groups]
        state: dict[int, dict] = {}

        def fail(entry: str, why: str):
            raise ValueError(f"{name_of}.load_state_dict failed, optimiser left unchanged: "
                             f"{entry}: {why}")

        for name, value in state_dict.items():
            head, _, key = str(name).partition(".")
            kind, number = head[:5], head[5:]
            if kind not in ("group", "state") or not number.isdigit() or not key:
                fail(name, "expected 'group<i>.<hyper-parameter>' or 'state<i>.<buffer>'")
            index = int(number)
            value = np.asarray(value)
            if value.dtype.kind not in "biuf":
                fail(name, f"expected numbers, got dtype {value.dtype}")
            if kind == "group":
                if index >= len(groups):
                    fail(name, f"this optimiser has {len(groups)} parameter group(s)")
                if key == "params" or key not in groups[index]:
                    fail(name, f"{name_of} has no hyper-parameter {key!r}")
                groups[index][key] = value.item() if value.ndim == 0 else tuple(value.tolist())
            else:
                if index >= len(params):
                    fail(name, f"this optimiser has {len(params)} parameter(s)")
                if key not in self._state_shapes:
                    fail(name, f"{name_of} keeps no state {key!r} (expected one of "
                               f"{sorted(self._state_shapes)})")
                shape = self._state_shapes[key]
                shape = params[index].shape if shape == "param" else shape
                if value.shape != shape:
                    fail(name, f"expected shape {shape}, got {value.shape}")
                state.setdefault(index, {})[key] = np.array(value, copy=True)
        for g, group in enumerate(groups):
            try:
                self._check_hyperparameters(group)
            except (ValueError, TypeError) as exc:
                fail(f"group{g}", str(exc))
        for group, loaded in zip(self.param_groups, groups):
            group.update(loaded)
        self.state = state


class SGD(Optimizer):
    """Stochastic gradient descent with optional momentum, Nesterov and weight decay.

    PyTorch's rule: ``g = grad + wd * p``; ``buf = momentum * buf + (1 - dampening) * g``
    (``buf = g`` on the first step); ``g = g + momentum * buf`` (Nesterov) or ``g = buf``;
    ``p -= lr * g``.
    """

    _state_shapes = {"momentum_buffer": "param"}

    def __init__(self, params, lr: float = 0.01, momentum: float = 0.0, dampening: float = 0.0,
                 weight_decay: float = 0.0, nesterov: bool = False):
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening,
                                      weight_decay=weight_decay, nesterov=nesterov))

    def _check_hyperparameters(self, group: dict) -> None:
        super()._check_hyperparameters(group)
        if not group["momentum"] >= 0:
            raise ValueError(f"SGD: Invalid momentum value: {group['momentum']}")
        if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
            raise ValueError("SGD: Nesterov momentum requires a momentum and zero dampening")

    def _update(self, p, state, group):
        grad = p.grad
        if group["weight_decay"]:
            grad = grad + group["weight_decay"] * p.data
        momentum = group["momentum"]
        if momentum:
            if "momentum_buffer" not in state:
                state["momentum_buffer"] = np.array(grad, copy=True)
            else:
                buf = state["momentum_buffer"]
                buf *= momentum
                buf += (1 - group["dampening"]) * grad
            buf = state["momentum_buffer"]
            grad = grad + momentum * buf if group["nesterov"] else buf
        p.data -= (group["lr"] * grad).astype(p.data.dtype, copy=False)


class Adam(Optimizer):
    """Adam (Kingma & Ba) with bias correction; ``weight_decay`` adds ``wd * p`` to the
    gradient (L2 penalty), as ``torch.optim.Adam`` does."""

    _decoupled = False
    _state_shapes = {"step": (), "exp_avg": "param", "exp_avg_sq": "param"}

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0):
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps,
                                      weight_decay=weight_decay))

    def _check_hyperparameters(self, group: dict) -> None:
        super()._check_hyperparameters(group)
        name = type(self).__name__
        if not group["eps"] >= 0:
            raise ValueError(f"{name}: Invalid epsilon value: {group['eps']}")
        betas = group["betas"]
        if len(betas) != 2:
            raise ValueError(f"{name}: betas must be a pair (beta1, beta2), got {betas!r}")
        for i, beta in enumerate(betas):
            if not 0.0 <= beta < 1.0:
                raise ValueError(f"{name}: Invalid beta parameter at index {i}: {beta}")

    def _update(self, p, state, group):
        beta1, beta2 = group["betas"]
        lr, wd = group["lr"], group["weight_decay"]
        grad = p.grad
        if wd and self._decoupled:
            p.data *= p.data.dtype.type(1 - lr * wd)
        elif wd:
            grad = grad + wd * p.data
        if not state:
            state["step"] = np.array(0, dtype=np.int64)
            state["exp_avg"] = np.zeros_like(p.data)
            state["exp_avg_sq"] = np.zeros_like(p.data)
        state["step"] += 1
        step = int(state["step"])
        exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
        exp_avg *= beta1
        exp_avg += (1 - beta1) * grad
        exp_avg_sq *= beta2
        exp_avg_sq += (1 - beta2) * grad * grad
        bias_correction1 = 1 - beta1 ** step
        bias_correction2 = 1 - beta2 ** step
        denom = np.sqrt(exp_avg_sq) / math.sqrt(bias_correction2) + group["eps"]
        p.data -= ((lr / bias_correction1) * exp_avg / denom).astype(p.data.dtype, copy=False)


class AdamW(Adam):
    """Adam with *decoupled* weight decay (Loshchilov & Hutter): ``p *= 1 - lr * wd`` before
    the Adam step, instead of adding ``wd * p`` to the gradient."""

    _decoupled = True

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2):
        super().__init__(params, lr, betas, eps, weight_decay)


# ---------------------------------------------------------------------------------------------
# Learning-rate schedules: call ``scheduler.step()`` after ``optimizer.step()``, once per epoch
# (StepLR, CosineAnnealingLR) or once per batch (WarmupCosineLR); ``last_epoch`` counts calls.
# ---------------------------------------------------------------------------------------------
class LRScheduler:
    """Base class: sets each group's ``lr`` from ``initial_lr`` and the epoch count."""

    def __init__(self, optimizer: Optimizer):
        self.optimizer = optimizer
        self.last_epoch = 0
        self._apply()

    def _lr(self, initial_lr: float) -> float:  # pragma: no cover - abstract
        raise NotImplementedError

    def _apply(self) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = self._lr(group["initial_lr"])

    def step(self) -> None:
        self.last_epoch += 1
        self._apply()

    def get_last_lr(self) -> list[float]:
        return [group["lr"] for group in self.optimizer.param_groups]

    def state_dict(self) -> dict:
        return {"last_epoch": self.last_epoch}

    def load_state_dict(self, state: dict) -> None:
        self.last_epoch = int(state["last_epoch"])
        self._apply()


class StepLR(LRScheduler):
    """Multiply the learning rate by ``gamma`` every ``step_size`` epochs."""

    def __init__(self, optimizer: Optimizer, step_size: int, gamma: float = 0.1):
        if step_size < 1:
            raise ValueError(f"StepLR: step_size must be >= 1, got {step_size}")
        self.step_size, self.gamma = step_size, gamma
        super().__init__(optimizer)

    def _lr(self, initial_lr):
        return initial_lr * self.gamma ** (self.last_epoch // self.step_size)


class CosineAnnealingLR(LRScheduler):
    """Cosine decay from the initial rate to ``eta_min`` over ``T_max`` epochs:
    ``eta_min + (lr0 - eta_min) * (1 + cos(pi * epoch / T_max)) / 2``.

    As in PyTorch, the formula keeps going after ``T_max``: the rate climbs back towards
    ``lr0`` over the next ``T_max`` epochs (set ``T_max`` to the run's length to avoid that)."""

    def __init__(self, optimizer: Optimizer, T_max: int, eta_min: float = 0.0):
        if T_max < 1:
            raise ValueError(f"CosineAnnealingLR: T_max must be >= 1, got {T_max}")
        self.T_max, self.eta_min = T_max, eta_min
        super().__init__(optimizer)

    def _lr(self, initial_lr):
        progress = self.last_epoch / self.T_max
        return self.eta_min + (initial_lr - self.eta_min) * (1 + math.cos(math.pi * progress)) / 2


class LambdaLR(LRScheduler):
    """``lr = initial_lr * lr_lambda(last_epoch)``, as ``torch.optim.lr_scheduler.LambdaLR``
    (one function for every group).

    ``last_epoch`` counts calls to :meth:`step`: epochs or batches, whichever the caller steps
    it by. The function is not saved by :meth:`state_dict`; rebuild the scheduler with the same
    function and load the count.
    """

    def __init__(self, optimizer: Optimizer, lr_lambda):
        if not callable(lr_lambda):
            raise TypeError(f"LambdaLR: lr_lambda must be callable, got {lr_lambda!r}")
        self.lr_lambda = lr_lambda
        super().__init__(optimizer)

    def _lr(self, initial_lr):
        return initial_lr * self.lr_lambda(self.last_epoch)


class WarmupCosineLR(LRScheduler):
    """Linear warm-up, then cosine decay to ``eta_min``, stepped once per *batch*.

    For step ``t`` (calls to :meth:`step` so far) and ``lr0`` the group's initial rate::

        t <  warmup_steps:  lr0 * (start_factor + (1 - start_factor) * t / warmup_steps)
        t >= warmup_steps:  eta_min + (lr0 - eta_min) * (1 + cos(pi * p)) / 2,
                            p = min((t - warmup_steps) / (total_steps - warmup_steps), 1)

    This is PyTorch's ``SequentialLR([LinearLR(opt, start_factor, total_iters=warmup_steps),
    CosineAnnealingLR(opt, T_max=total_steps - warmup_steps, eta_min)],
    milestones=[warmup_steps])`` written in closed form (which PyTorch's recursive cosine
    matches to rounding), except that after ``total_steps`` the rate stays at ``eta_min``
    instead of climbing back. With ``eta_min=0`` it is also ``LambdaLR`` with the same
    factor. The warm-up keeps the first, largest updates of a freshly initialised network
    small; decaying per batch instead of per epoch avoids the jumps of an epoch schedule,
    which matter when a run has only a few epochs.

    Parameters
    ----------
    total_steps : int
        Length of the whole schedule (warm-up included), usually epochs * batches per epoch.
    warmup_steps : int
        Steps of linear warm-up (0: start at ``lr0`` and decay at once).
    start_factor : float in (0, 1]
        The warm-up starts at ``start_factor * lr0`` (as ``LinearLR``'s ``start_factor``).
    eta_min : float
        The rate at the end.
    """

    def __init__(self, optimizer: Optimizer, total_steps: int, warmup_steps: int = 0,
                 start_factor: float = 0.1, eta_min: float = 0.0):
        if total_steps < 1:
            raise ValueError(f"WarmupCosineLR: total_steps must be >= 1, got {total_steps}")
        if not 0 <= warmup_steps < total_steps:
            raise ValueError(f"WarmupCosineLR: warmup_steps must be in [0, total_steps), got "
                             f"{warmup_steps} with total_steps={total_steps}")
        if not 0 < start_factor <= 1:
            raise ValueError(f"WarmupCosineLR: start_factor must be in (0, 1], got "
                             f"{start_factor}")
        if not eta_min >= 0:
            raise ValueError(f"WarmupCosineLR: eta_min must be >= 0, got {eta_min}")
        self.total_steps, self.warmup_steps = int(total_steps), int(warmup_steps)
        self.start_factor, self.eta_min = float(start_factor), float(eta_min)
        super().__init__(optimizer)

    def _lr(self, initial_lr):
        t = self.last_epoch
        if t < self.warmup_steps:
            return initial_lr * (self.start_factor
                                 + (1 - self.start_factor) * t / self.warmup_steps)
        progress = min((t - self.warmup_steps) / (self.total_steps - self.warmup_steps), 1.0)
        return self.eta_min + (initial_lr - self.eta_min) * (1 + math.cos(math.pi * progress)) / 2
