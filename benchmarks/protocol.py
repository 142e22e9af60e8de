"""What makes two benchmark runs comparable: the settings of their protocol."""


def protocol_differences(recorded, protocol):
    """The settings of `protocol` that a results file's `recorded` config has otherwise,
    as "name recorded, here new" (empty when the runs are comparable).

    >>> protocol_differences({"epochs": 150, "width": 0.5}, {"epochs": 300, "width": 0.5})
    ['epochs 150, here 300']
    """
    return [f"{key} {recorded.get(key)}, here {value}" for key, value in protocol.items()
            if recorded.get(key) != value]


def comparable(path, recorded, protocol, rerun, what="runs"):
    """Whether the `what` a results file `path` holds (made under its `recorded`
    config) can be kept beside runs of `protocol`: True when the settings agree, False
    when they differ and `rerun` replaces them; a named error otherwise.

    >>> comparable("r.json", {"epochs": 150}, {"epochs": 150}, rerun=False)
    True
    >>> comparable("r.json", {"epochs": 150}, {"epochs": 300}, rerun=True)
    False
    >>> comparable("r.json", {"epochs": 150}, {"epochs": 300}, rerun=False)
    Traceback (most recent call last):
    ...
    ValueError: r.json holds runs of another protocol (epochs 150, here 300): pass another --out, or --rerun to replace them
    """
    differ = protocol_differences(recorded, protocol)
    if differ and not rerun:
        raise ValueError(f"{path} holds {what} of another protocol ({'; '.join(differ)}): "
                         f"pass another --out, or --rerun to replace them")
    return not differ
