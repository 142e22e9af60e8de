"""Evaluator registry: every protocol is `fn(model, train, test, num_classes, **kwargs)
-> dict of metrics`, registered by name next to its definition (big_vision style)."""

EVALUATORS = {}


def register_evaluator(name):
    """Decorator: registers `fn(model, train, test, num_classes, **kwargs) -> dict`.

    Args:
        name: the protocol's name, e.g. "knn".

    Returns:
        The decorator; it returns the function unchanged.

    Example:
    >>> @register_evaluator("always_one")
    ... def always_one(model, train, test, num_classes):
    ...     return {"accuracy": 1.0}
    >>> evaluate("always_one", None, None, None, 2)
    {'accuracy': 1.0}
    >>> del EVALUATORS["always_one"]
    """
    def register(fn):
        old = EVALUATORS.get(name)
        if old is not None and (old.__module__, old.__qualname__) != (
                fn.__module__, fn.__qualname__):
            raise ValueError(f"An evaluator named {name!r} is already registered "
                             f"({old.__module__}.{old.__qualname__}).")
        EVALUATORS[name] = fn
        return fn
    return register


def get_evaluator(name):
    """The evaluator registered under `name`.

    Args:
        name: a key of `EVALUATORS` ("direct", "linear_probe", "knn", ...).

    Returns:
        The function `fn(model, train, test, num_classes, **kwargs) -> dict`.

    Example:
    >>> get_evaluator("knn").__name__
    'knn_evaluate'
    """
    if name not in EVALUATORS:
        raise ValueError(f"Unknown evaluator {name!r}; known evaluators: "
                         f"{', '.join(sorted(EVALUATORS))}.")
    return EVALUATORS[name]


def evaluate(protocol, model, train, test, num_classes, **kwargs):
    """Evaluates `model` with the protocol named `protocol`.

    Args:
        protocol: an evaluator name (see `EVALUATORS`).
        model: the model to evaluate (an encoder for "linear_probe" / "knn", a
            classifier for "direct").
        train, test: (images, labels) arrays, objects with `.images`/`.labels`
            (`ssl_zoo.data.ArrayDataset`), or batched `tf.data.Dataset`s.
        num_classes: C.
        **kwargs: the evaluator's options.

    Returns:
        dict of metrics (floats, and lists for per-class values).

    Example:
    >>> import numpy as np, keras
    >>> model = keras.Sequential([keras.layers.GlobalAveragePooling2D()])
    >>> labels = np.repeat([0, 1], 4)
    >>> images = np.eye(3)[labels][:, None, None, :] * np.ones((8, 2, 2, 3))
    >>> evaluate("knn", model, (images, labels), (images, labels), 2, k=3)["accuracy"]
    1.0
    """
    return get_evaluator(protocol)(model, train, test, num_classes, **kwargs)
