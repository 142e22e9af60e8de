"""The one matplotlib entry of the plot scripts: a headless pyplot, or a named exit."""

import sys


def pyplot():
    """`matplotlib.pyplot` on the Agg backend (files only, no display).

    Exits with the install command when matplotlib is missing (the `docs` extra).
    """
    try:
        import matplotlib
    except ImportError:
        sys.exit("matplotlib is needed for the plots: pip install 'ssl_zoo[docs]'")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt
