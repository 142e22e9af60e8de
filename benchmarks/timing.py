"""Helpers shared by the benchmark scripts: interleaved timing (fastest round counts)
and one batch of a method's own training stream."""

import time


def time_interleaved(fns, steps, rounds=3):
    """Seconds per call of each fn: rounds alternate between the fns (so load from
    other processes hits all of them alike) and the fastest round counts.

    Args:
        fns: dict name -> zero-argument callable (one training/inference step).
        steps: calls per timed round.
        rounds: timed rounds per fn.

    Returns:
        dict name -> seconds per call.
    """
    for fn in fns.values():  # trace / compile, then one warm call
        fn()
        fn()
    best = {name: float("inf") for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            start = time.perf_counter()
            for _ in range(steps):
                fn()
            best[name] = min(best[name], (time.perf_counter() - start) / steps)
    return best


def stream_batch(spec, data, batch_size, mu, model=None):
    """One (x, y) batch of the training stream `spec` declares, as numpy.

    Args:
        spec: the method's `MethodSpec`.
        data: an `ArrayDataset` to draw from.
        batch_size: (labeled) batch size.
        mu: unlabeled images per labeled image (semi-supervised streams only).
        model: the model, for streams it makes (Jigsaw puzzles).
    """
    import keras
    import numpy as np

    from ssl_zoo.training import make_train_stream
    kwargs = {"mu": mu} if spec.stream == "semi_supervised" else {}
    ds = make_train_stream(spec, data, batch_size, seed=0, model=model, **kwargs)
    return keras.tree.map_structure(np.asarray, next(iter(ds)))
