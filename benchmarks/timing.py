"""Timing helper shared by the benchmark scripts: interleaved rounds, fastest counts."""

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
