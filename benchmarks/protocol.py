"""What makes two benchmark runs comparable: the settings of their protocol."""


def protocol_differences(recorded, protocol):
    """The settings of `protocol` that a results file's `recorded` config has otherwise,
    as "name recorded, here new" (empty when the runs are comparable).

    >>> protocol_differences({"epochs": 150, "width": 0.5}, {"epochs": 300, "width": 0.5})
    ['epochs 150, here 300']
    """
    return [f"{key} {recorded.get(key)}, here {value}" for key, value in protocol.items()
            if recorded.get(key) != value]
