"""The one matplotlib entry of the plot scripts: a headless pyplot, or a named exit."""

import os
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


def save_figure(fig, out_dir, name):
    """Lays `fig` out, writes it as `out_dir/name` (110 dpi), says so; its path."""
    fig.tight_layout()
    path = os.path.join(out_dir, name)
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")
    return path


def run_script(main, doc):
    """A plot script's entry: `main([results [out_dir]])`, or its usage for -h/--help
    or too many arguments (instead of opening a file named --help)."""
    if not set(sys.argv[1:]).isdisjoint({"-h", "--help"}) or len(sys.argv) > 3:
        sys.exit(doc)
    main(*sys.argv[1:])
