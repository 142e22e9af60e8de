"""Plots of benchmarks/results/daso.json for docs/fixmatch_daso.md (needs matplotlib:
pip install "ssl_zoo[docs]").

    python benchmarks/plot_daso.py          # writes docs/images/daso_*.png
"""

import json
import os
import sys

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from plotting import pyplot  # noqa: E402


def main(results=os.path.join(_REPO, "benchmarks", "results", "daso.json"),
         out_dir=os.path.join(_REPO, "docs", "images")):
    import numpy as np
    plt = pyplot()

    with open(results, encoding="utf-8") as f:
        runs = json.load(f)["runs"]
    os.makedirs(out_dir, exist_ok=True)
    settings = sorted({key.split("_", 1)[1] for key in runs})
    methods = ["fixmatch", "daso"]
    classes = np.arange(10)

    # Per-class test recall (median of the last evaluations).
    fig, axes = plt.subplots(1, len(settings), figsize=(5.5 * len(settings), 3.6),
                             squeeze=False)
    for ax, setting in zip(axes[0], settings):
        for i, method in enumerate(methods):
            key = f"{method}_{setting}"
            if key in runs:
                ax.bar(classes + (i - 0.5) * 0.4, runs[key]["median_per_class_recall"],
                       width=0.4, label=method)
        ax.set_title(f"CIFAR-10-LT, unlabeled {setting}")
        ax.set_xlabel("class (0 = head, 9 = tail)")
        ax.set_ylabel("test recall")
        ax.set_xticks(classes)
        ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, "daso_per_class_recall.png"), dpi=110)
    plt.close(fig)

    # Pseudo-label precision and recall per class (last epoch of training).
    fig, axes = plt.subplots(2, len(settings), figsize=(5.5 * len(settings), 6.4),
                             squeeze=False)
    for col, setting in enumerate(settings):
        for row, what in enumerate(("precision", "recall")):
            ax = axes[row][col]
            series = [("fixmatch", "pseudo_labels", "FixMatch"),
                      ("daso", "linear_pseudo_labels", "DASO linear"),
                      ("daso", "semantic_pseudo_labels", "DASO semantic"),
                      ("daso", "pseudo_labels", "DASO blended")]
            for i, (method, field, label) in enumerate(series):
                stats = runs.get(f"{method}_{setting}", {}).get(field)
                if not stats:
                    continue
                values = [np.nan if v is None else v for v in stats[what]]
                ax.bar(classes + (i - 1.5) * 0.2, values, width=0.2, label=label)
            ax.set_title(f"pseudo-label {what}, unlabeled {setting}")
            ax.set_xticks(classes)
            ax.set_ylim(0, 1)
            if row == 1:
                ax.set_xlabel("class (0 = head, 9 = tail)")
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, "daso_pseudo_labels.png"), dpi=110)
    plt.close(fig)

    # Balanced accuracy of the EMA model during training.
    fig, axes = plt.subplots(1, len(settings), figsize=(5.5 * len(settings), 3.4),
                             squeeze=False)
    for ax, setting in zip(axes[0], settings):
        for method in methods:
            key = f"{method}_{setting}"
            if key in runs:
                curve = runs[key]["curve"]
                ax.plot([c["step"] for c in curve],
                        [c["balanced_accuracy"] for c in curve], label=method)
        ax.set_title(f"balanced accuracy, unlabeled {setting}")
        ax.set_xlabel("step")
        ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, "daso_curves.png"), dpi=110)
    plt.close(fig)
    print(f"wrote {out_dir}/daso_*.png")
    print(markdown_table(runs))


def markdown_table(runs, keep=None):
    """The docs table of benchmarks/results/daso.json (percentages)."""
    lines = ["| unlabeled | method | accuracy (median) | balanced acc. (median) | "
             "many / medium / few-shot (median) | tail recall, classes 7–9 (median) | "
             "accuracy (best) | balanced acc. (best) |",
             "|---|---|---|---|---|---|---|---|"]
    for setting in ("consistent", "uniform", "reversed"):
        for method in ("fixmatch", "daso"):
            r = runs.get(f"{method}_{setting}")
            if r is None:
                continue
            med = next(k for k in r if k.startswith("median") and k.endswith("_accuracy")
                       and k.count("_") == 1).split("_")[0]
            p = lambda k: f"{100 * r[k]:.1f}"  # noqa: E731
            lines.append(
                f"| {setting} | {method} | {p(med + '_accuracy')} | "
                f"{p(med + '_balanced_accuracy')} | {p(med + '_many_shot_accuracy')} / "
                f"{p(med + '_medium_shot_accuracy')} / {p(med + '_few_shot_accuracy')} | "
                f"{p('median_tail_recall')} | {p('best_accuracy')} | "
                f"{p('best_balanced_accuracy')} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
