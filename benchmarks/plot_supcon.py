"""Plots of the SupCon protocol (benchmarks/results/supcon.json) for docs/supcon.md
(needs matplotlib: pip install "ssl_zoo[docs]").

    python benchmarks/plot_supcon.py        # writes docs/images/supcon_{curves,bars}.png
    python benchmarks/plot_supcon.py runs/quick/supcon.json /tmp/plots   # [results [out_dir]]

and prints the accuracy table of docs/supcon.md (`accuracy_table`, which needs no
matplotlib).

Curves: the weighted-kNN monitor (k 200, T 0.07) of each method's frozen features on
the test set every few epochs -- the same measure for cross-entropy, SupCon and SimCLR
-- and each method's training loss per epoch divided by its first epoch's (three
different losses: compare their shapes, not their levels). Bars: the final linear-probe top-1.
"""

import json
import os
import sys

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from plotting import pyplot, run_script, save_figure  # noqa: E402

NAMES = {"ce": "Cross-entropy", "supcon": "SupCon", "simclr": "SimCLR"}
COLORS = {"ce": "tab:gray", "supcon": "tab:blue", "simclr": "tab:green"}
TABLE_HEADER = ("| method | linear-probe top-1 (%) | kNN top-1 (%) at the end | "
                "end-to-end top-1 (%) | final training loss | train time (s) |")


def accuracy_table(result):
    """The markdown rows of docs/supcon.md's accuracy table, from the protocol's JSON:
    per method the linear-probe top-1, the last kNN-monitor score, cross-entropy's own
    top-1, the last epoch's training loss and the training wall time.

    Example:
    >>> accuracy_table({"accuracy": {"supcon": {
    ...     "probe_top1": 0.5, "test_curve": [{"epoch": 10.0, "knn_accuracy": 0.4}],
    ...     "final_train_loss": 5.25, "seconds": 100.0}}})[2]
    '| SupCon | 50.00 | 40.00 | – | 5.250 | 100 |'
    """
    lines = [TABLE_HEADER, "|---|---|---|---|---|---|"]
    for method, row in result["accuracy"].items():
        curve = row.get("test_curve") or []
        knn = f"{100 * curve[-1]['knn_accuracy']:.2f}" if curve else "–"
        e2e = f"{100 * row['end_to_end_top1']:.2f}" if "end_to_end_top1" in row else "–"
        lines.append(f"| {NAMES.get(method, method)} | {100 * row['probe_top1']:.2f} | "
                     f"{knn} | {e2e} | {row['final_train_loss']:.3f} | "
                     f"{row['seconds']:.0f} |")
    return lines


def main(results=os.path.join(_REPO, "benchmarks", "results", "supcon.json"),
         out_dir=os.path.join(_REPO, "docs", "images")):
    import numpy as np
    with open(results, encoding="utf-8") as f:
        result = json.load(f)
    rows = result.get("accuracy")
    if not rows:
        sys.exit(f"{results} holds no accuracy runs: run benchmarks/supcon.py first.")
    plt = pyplot()
    os.makedirs(out_dir, exist_ok=True)
    config = result.get("config", {})
    setting = (f"CIFAR-10 n={config.get('train_examples')}, {config.get('backbone')} "
               f"x{config.get('width')}, batch {config.get('batch_size')}")

    fig, (ax_knn, ax_loss) = plt.subplots(1, 2, figsize=(11, 3.8))
    for method, row in rows.items():
        color, label = COLORS.get(method), NAMES.get(method, method)
        curve = row.get("test_curve") or []
        if curve:
            ax_knn.plot([e["epoch"] for e in curve],
                        [100 * e["knn_accuracy"] for e in curve], color=color,
                        marker="o", ms=3, label=label)
        loss = np.asarray(row["train_curve"]["loss"])
        ax_loss.plot(np.arange(1, len(loss) + 1), loss / loss[0], color=color,
                     label=f"{label} (epoch 1: {loss[0]:.2f})")
    ax_knn.set_title(f"test kNN top-1 of the features\n{setting}", fontsize=9)
    ax_knn.set_ylabel("%")
    ax_loss.set_title("training loss / its first epoch's (three different losses)",
                      fontsize=9)
    for ax in (ax_knn, ax_loss):
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    save_figure(fig, out_dir, "supcon_curves.png")

    fig, ax = plt.subplots(figsize=(4.8, 3.4))
    methods = list(rows)
    ax.bar(range(len(methods)), [100 * rows[m]["probe_top1"] for m in methods],
           color=[COLORS.get(m) for m in methods])
    for i, m in enumerate(methods):
        ax.text(i, 100 * rows[m]["probe_top1"], f"{100 * rows[m]['probe_top1']:.1f}",
                ha="center", va="bottom", fontsize=8)
    ax.set_xticks(range(len(methods)), [NAMES.get(m, m) for m in methods])
    ax.set_ylabel("linear-probe top-1 (%)")
    ax.set_title(setting, fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    save_figure(fig, out_dir, "supcon_bars.png")
    print("\n".join(accuracy_table(result)))


if __name__ == "__main__":
    run_script(main, __doc__)
