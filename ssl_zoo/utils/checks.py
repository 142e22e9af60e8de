"""Argument checks shared by layers, losses and models: one named `ValueError` for a
number or an integer outside its range, and for a choice outside its set."""

import numbers


def check_int(value, what, minimum=1):
    """`int(value)` if it is an integer >= `minimum` (bools are not), else ValueError.

    Example:
    >>> check_int(3, "queue_size")
    3
    >>> check_int(0, "queue_size")
    Traceback (most recent call last):
    ...
    ValueError: queue_size must be >= 1 (an integer), got 0.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) \
            or value < minimum:
        raise ValueError(f"{what} must be >= {minimum} (an integer), got {value!r}.")
    return int(value)


def check_number(value, what, low=None, high=None, low_open=False, high_open=False):
    """`float(value)` if it is a real number in the given range, else ValueError.

    Example:
    >>> check_number(0.95, "threshold", 0, 1, low_open=True)
    0.95
    >>> check_number(0.0, "threshold", 0, 1, low_open=True)
    Traceback (most recent call last):
    ...
    ValueError: threshold must be a number in (0, 1], got 0.0.
    """
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        if high is None:
            bound = f"{'>' if low_open else '>='} {low}"
            raise ValueError(f"{what} must be a number {bound}, got {value!r}.")
        if low is None:
            bound = f"{'<' if high_open else '<='} {high}"
            raise ValueError(f"{what} must be a number {bound}, got {value!r}.")
        bound = f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
        raise ValueError(f"{what} must be a number in {bound}, got {value!r}.")
    return float(value)


def check_choice(value, what, choices):
    """`value` if it is one of `choices`, else ValueError listing them.

    Example:
    >>> check_choice("ema", "inference", ("ema", "student"))
    'ema'
    """
    if value not in choices:
        raise ValueError(f"{what} must be one of {tuple(choices)}, got {value!r}.")
    return value
