"""Optimizer recipes: SGD with PyTorch's coupled L2 weight decay, and the one
`make_optimizer` (schedules, decay mode) the CLI, examples and benchmarks share."""

import keras
from keras import ops

WEIGHT_DECAY_MODES = ("coupled", "decoupled")
SCHEDULES = ("cosine", "step", "constant")


@keras.saving.register_keras_serializable(package="ssl_zoo")
class CoupledSGD(keras.optimizers.SGD):
    """SGD whose weight decay is PyTorch's: `g <- g + l2 * w` before momentum.

    The authors of SLA, FixMatch and DASO train with `torch.optim.SGD(weight_decay=wd)`,
    which adds wd*w to every parameter's gradient (coupled L2). Keras'
    `SGD(weight_decay=wd)` is decoupled (`w -= lr * wd * w` outside the momentum): at
    lr 0.1 and momentum 0.9 it decays about 10x less per step. Keras' SGD momentum
    (`v = m v - lr g; w += v`, Nesterov `w += m v - lr g`) equals PyTorch's at a
    constant learning rate.

    Args:
        learning_rate, momentum, nesterov: as `keras.optimizers.SGD`.
        l2: the coupled decay wd >= 0, applied to every trainable variable (as the
            authors' code does, biases and batch-norm parameters included).
        **kwargs: other `keras.optimizers.Optimizer` arguments (not `weight_decay`).

    Example:
    >>> w = keras.Variable([1.0])
    >>> opt = CoupledSGD(learning_rate=0.1, l2=0.5)
    >>> _ = opt.apply_gradients([(ops.zeros((1,)), w)])
    >>> round(float(w[0]), 4)   # 1 - 0.1 * 0.5 * 1
    0.95
    """

    def __init__(self, learning_rate=0.01, momentum=0.0, nesterov=False, l2=0.0,
                 **kwargs):
        if kwargs.get("weight_decay"):
            raise ValueError("CoupledSGD takes l2= (coupled); use keras.optimizers.SGD "
                             "for decoupled weight_decay.")
        kwargs.pop("weight_decay", None)
        super().__init__(learning_rate=learning_rate, momentum=momentum,
                         nesterov=nesterov, **kwargs)
        if not float(l2) >= 0:
            raise ValueError(f"l2 must be >= 0, got {l2!r}.")
        self.l2 = float(l2)

    def update_step(self, gradient, variable, learning_rate):
        if self.l2:
            gradient = gradient + ops.cast(self.l2, gradient.dtype) * ops.cast(
                variable, gradient.dtype)
        return super().update_step(gradient, variable, learning_rate)

    def get_config(self):
        return {**super().get_config(), "l2": self.l2}


def learning_rate_schedule(learning_rate, total_steps, schedule="cosine", warmup_steps=0):
    """A Keras schedule: 'cosine' (to 0 over `total_steps`, after an optional linear
    warm-up of `warmup_steps` from 0, SupCon's recipe), 'step' (x0.1 at 50% and 75%,
    the SLA recipe) or 'constant' (DASO's recipe).

    Example:
    >>> round(float(learning_rate_schedule(0.1, 100, "step")(60)), 6)
    0.01
    >>> round(float(learning_rate_schedule(0.1, 100, "cosine", warmup_steps=10)(5)), 4)
    0.05
    """
    if warmup_steps and schedule != "cosine":
        raise ValueError("warmup_steps is available with the cosine schedule only.")
    if schedule == "cosine":
        if warmup_steps:
            return keras.optimizers.schedules.CosineDecay(
                0.0, max(1, total_steps - warmup_steps), warmup_target=learning_rate,
                warmup_steps=warmup_steps)
        return keras.optimizers.schedules.CosineDecay(learning_rate, max(1, total_steps))
    if schedule == "step":
        return keras.optimizers.schedules.PiecewiseConstantDecay(
            [int(total_steps * 0.5), int(total_steps * 0.75)],
            [learning_rate, learning_rate * 0.1, learning_rate * 0.01])
    if schedule == "constant":
        return learning_rate
    raise ValueError(f"Unknown schedule {schedule!r}; choose one of {SCHEDULES}.")


def make_optimizer(learning_rate, total_steps, schedule="cosine", momentum=0.9,
                   nesterov=True, weight_decay=0.0, weight_decay_mode="coupled",
                   warmup_steps=0):
    """SGD with momentum, a learning-rate schedule and weight decay.

    Args:
        learning_rate: peak learning rate.
        total_steps: training steps (for the schedule).
        schedule: 'cosine', 'step' or 'constant' (see `learning_rate_schedule`).
        warmup_steps: linear warm-up steps (cosine schedule).
        momentum, nesterov: SGD momentum.
        weight_decay: decay strength.
        weight_decay_mode: 'coupled' (PyTorch's L2 in the gradient, the authors'
            recipes; `CoupledSGD`) or 'decoupled' (Keras' `SGD(weight_decay=...)`).

    Returns:
        A Keras optimizer.

    Example:
    >>> type(make_optimizer(0.1, 1000, weight_decay=5e-4)).__name__
    'CoupledSGD'
    """
    if weight_decay_mode not in WEIGHT_DECAY_MODES:
        raise ValueError(f"weight_decay_mode must be one of {WEIGHT_DECAY_MODES}, got "
                         f"{weight_decay_mode!r}.")
    lr = learning_rate_schedule(learning_rate, total_steps, schedule, warmup_steps)
    if weight_decay_mode == "coupled":
        return CoupledSGD(lr, momentum=momentum, nesterov=nesterov, l2=weight_decay or 0.0)
    return keras.optimizers.SGD(lr, momentum=momentum, nesterov=nesterov,
                                weight_decay=weight_decay or None)
