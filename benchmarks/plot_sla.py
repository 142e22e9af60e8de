"""Plots of the SLA protocol (benchmarks/results/sla.json) for docs/sla.md (needs
matplotlib: pip install "ssl_zoo[docs]").

    python benchmarks/plot_sla.py          # writes docs/images/sla_{curves,bars,gain}.png
    python benchmarks/plot_sla.py runs/sla_protocol150.json /tmp/plots   # [results [out_dir]]

and prints the accuracy table of docs/sla.md (`accuracy_table`, which needs no
matplotlib; tests/test_benchmark_results.py holds the docs to it). Run without
arguments (the shipped JSON into docs/images), it also writes that table into
docs/sla.md in place of the one there (`update_doc_table`); the prose is yours.

Curves: test accuracy every few epochs (the model's default inference: SLA's
self-distilled head) and training accuracy per epoch (SLA: single inference and the
40-way joint accuracy, dashed). Bars: final test top-1 per method, mean over seeds with
the spread. Gain: SLA's gain over the supervised baseline against the training-set size
(only once a gain is measured at two or more sizes).
"""

import json
import os
import sys

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, _REPO)   # ssl_zoo (update_doc_table's atomic write), uninstalled too
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from plotting import pyplot, run_script, save_figure  # noqa: E402
from sla_rows import ROWS, summarise  # noqa: E402
COLORS = {"supervised": "tab:gray", "da": "tab:red", "mt": "tab:orange", "sla": "tab:blue"}
TABLE_HEADER = ("| n | method | test top-1 (%) mean ± std | seeds | gain vs supervised "
                "(points) | joint / class train acc. at the end (%) | train time (s) |")


def spread(row_summary):
    """The std over seeds of one `summarise` row, or None when the row has one seed
    (a std of 0 there is not a measured spread). The table and the bars both use it.

    >>> spread({"mean": 70.0, "std": 0.5, "values": [69.5, 70.5]})
    0.5
    >>> spread({"mean": 70.0, "std": 0.0, "values": [70.0]}) is None
    True
    """
    return row_summary["std"] if len(row_summary["values"]) > 1 else None


def accuracy_table(result):
    """The markdown rows of docs/sla.md's accuracy table, from the protocol's JSON.

    Per (n, method): the test top-1 mean ± std over seeds (the mean alone for a row
    measured on one seed: it has no spread yet), the seed count, the gain
    over the supervised run of the same seed averaged over the seeds that have both
    (`sla_rows.summarise`), the last epoch's training accuracy (SLA: the 40-way joint
    / the class head's single inference; "–" where a method has no joint task) and the
    training wall time, each averaged over the seeds.
    """
    lines = [TABLE_HEADER, "|---|---|---|---|---|---|---|"]
    for size, rows in summarise(result["runs"]).items():
        for row, v in rows.items():
            method = ROWS[row][0]
            runs = [r[method] for r in result["runs"][size].values() if method in r]
            curves = [r["train_curve"] for r in runs]

            def last(key):
                return sum(100 * c[key][-1] for c in curves) / len(curves)
            train = (f"{last('joint_accuracy'):.1f} / {last('single_accuracy'):.1f}"
                     if "joint_accuracy" in curves[0] else f"– / {last('accuracy'):.1f}")
            seconds = sum(r["seconds"] for r in runs) / len(runs)
            gain = v.get("gain_over_supervised")
            std = spread(v)
            lines.append(f"| {size} | {row} | {v['mean']:.2f}"
                         f"{'' if std is None else f' ± {std:.2f}'} | "
                         f"{len(v['values'])} | {'' if gain is None else f'{gain:+.2f}'} | "
                         f"{train} | {seconds:.0f} |")
    return lines


RESULTS = os.path.join(_REPO, "benchmarks", "results", "sla.json")
IMAGES = os.path.join(_REPO, "docs", "images")
DOC = os.path.join(_REPO, "docs", "sla.md")


def update_doc_table(result, doc=DOC):
    r"""Replaces the accuracy table in `doc` (from its `TABLE_HEADER` line to the next
    blank line) with `accuracy_table(result)`; returns True if the text changed.

    >>> import tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "sla.md")
    >>> with open(path, "w") as f:
    ...     _ = f.write("Intro.\n\n" + TABLE_HEADER + "\n|---|\n| old |\n\nAfter.\n")
    >>> fake = {"runs": {"500": {"0": {"supervised": {"metrics": {"accuracy": 0.5},
    ...     "seconds": 10.0, "train_curve": {"accuracy": [0.4, 0.6]}}}}}}
    >>> update_doc_table(fake, path)
    True
    >>> text = open(path).read()
    >>> "| old |" in text, text.startswith("Intro.\n\n| n |"), text.endswith("\n\nAfter.\n")
    (False, True, True)
    """
    with open(doc, encoding="utf-8") as f:
        text = f.read()
    if TABLE_HEADER not in text:
        raise ValueError(f"{doc} has no accuracy table to replace (no line "
                         f"{TABLE_HEADER!r}).")
    start = text.index(TABLE_HEADER)
    end = text.find("\n\n", start)
    end = len(text) if end < 0 else end
    new = text[:start] + "\n".join(accuracy_table(result)) + text[end:]
    if new != text:
        from ssl_zoo.utils.io import atomic_write   # whole or not at all
        with atomic_write(doc, "w") as f:
            f.write(new)
    return new != text


def main(results=RESULTS, out_dir=IMAGES):
    import numpy as np
    plt = pyplot()

    with open(results, encoding="utf-8") as f:
        result = json.load(f)
    runs = result["runs"]
    summary = summarise(runs)   # the JSON's copy is the same (a test holds it so)
    os.makedirs(out_dir, exist_ok=True)
    sizes = sorted(runs, key=int)

    fig, axes = plt.subplots(len(sizes), 2, figsize=(11, 3.6 * len(sizes)), squeeze=False)
    for (ax_test, ax_train), size in zip(axes, sizes):
        first_seed = min(runs[size], key=int)
        for seed, by_method in sorted(runs[size].items()):
            # Seeds share a method's colour; the later ones are drawn fainter.
            alpha = 1.0 if seed == first_seed else 0.45
            for method, run in by_method.items():
                spe = run["steps_per_epoch"]
                label = f"{method} (seed {seed})"
                test = run["test_curve"]
                ax_test.plot([e["step"] / spe for e in test],
                             [100 * e["accuracy"] for e in test],
                             color=COLORS.get(method), marker="o", ms=3, alpha=alpha,
                             label=label)
                curve = run["train_curve"]
                key = "single_accuracy" if method == "sla" else "accuracy"
                if key in curve:
                    ax_train.plot(np.arange(1, len(curve[key]) + 1),
                                  [100 * v for v in curve[key]], color=COLORS.get(method),
                                  alpha=alpha, label=label)
                if "joint_accuracy" in curve:
                    ax_train.plot(np.arange(1, len(curve["joint_accuracy"]) + 1),
                                  [100 * v for v in curve["joint_accuracy"]],
                                  color=COLORS.get(method), ls="--", alpha=alpha,
                                  label=f"{method} joint (40-way, seed {seed})")
        ax_test.set_title(f"test top-1, CIFAR-10 n={size}")
        ax_train.set_title(f"training accuracy (augmented batches), n={size}")
        for ax in (ax_test, ax_train):
            ax.set_xlabel("epoch")
            ax.set_ylabel("%")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
    save_figure(fig, out_dir, "sla_curves.png")

    fig, ax = plt.subplots(figsize=(max(4.5, 1.2 + 2.2 * len(sizes)), 3.6))
    width = 0.8 / len(ROWS)
    for i, row in enumerate(ROWS):
        means = [summary[s].get(row, {}).get("mean", np.nan) for s in sizes]
        stds = [spread(summary[s][row]) if row in summary[s] else None for s in sizes]
        stds = [np.nan if std is None else std for std in stds]   # no error bar
        ax.bar(np.arange(len(sizes)) + (i - len(ROWS) / 2 + 0.5) * width, means, width,
               yerr=stds, label=row, capsize=2)
    ax.set_xticks(np.arange(len(sizes)), [f"n={s}" for s in sizes])
    ax.set_ylabel("test top-1 (%)")
    ax.set_title("CIFAR-10 subsets, ResNet-32 (option A) x0.5,\nthe authors' recipe",
                 fontsize=9)
    ax.legend(fontsize=7, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.1))
    ax.grid(axis="y", alpha=0.3)
    save_figure(fig, out_dir, "sla_bars.png")

    # SLA's gain against the training-set size: the mean of the paired gains as a
    # line, each seed's own gain as a dot, so a size measured on one seed shows as one.
    gains = {row: [(int(s), summary[s][row]) for s in sizes
                   if "gain_over_supervised" in summary[s].get(row, {})]
             for row in ("SLA+AG", "SLA+SD", "DA")}
    if any(len(pts) > 1 for pts in gains.values()):   # a gain measured at two sizes
        fig, ax = plt.subplots(figsize=(5, 3.4))
        for row, pts in gains.items():
            if not pts:
                continue
            line, = ax.plot([n for n, _ in pts], [v["gain_over_supervised"] for _, v in pts],
                            marker="o", label=row)
            dots = [(n, g) for n, v in pts for g in v["seed_gains"].values()]
            ax.scatter(*zip(*dots), color=line.get_color(), alpha=0.4, s=14, zorder=3)
        sizes_drawn = sorted({n for pts in gains.values() for n, _ in pts})
        for n in sizes_drawn:
            seeds = max(len(v["seed_gains"]) for pts in gains.values()
                        for m, v in pts if m == n)
            ax.annotate(f"{seeds} seed{'s' if seeds > 1 else ''}", (n, 0.03),
                        xycoords=("data", "axes fraction"), ha="center", fontsize=7)
        ax.axhline(0, color="k", lw=0.8)
        ax.set_xscale("log")
        ax.set_xticks(sizes_drawn, [f"{n:,}" for n in sizes_drawn])
        ax.minorticks_off()
        ax.set_xlim(sizes_drawn[0] / 1.25, sizes_drawn[-1] * 1.25)
        ax.set_xlabel("training images")
        ax.set_ylabel("gain over supervised (points)")
        ax.set_title("line: mean over seeds; dots: each seed (paired)", fontsize=8)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
        save_figure(fig, out_dir, "sla_gain.png")
    print("\n".join(accuracy_table(result)))
    if (os.path.abspath(results), os.path.abspath(out_dir)) == (RESULTS, IMAGES):
        changed = update_doc_table(result)
        print(f"{DOC}: table {'updated' if changed else 'already current'}")


if __name__ == "__main__":
    run_script(main, __doc__)
