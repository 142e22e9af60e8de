"""Figures of docs/jigsaw_transfer.md: a real Tiny-ImageNet puzzle before and after
shuffling (occluding tiles marked), and the linear-probe table of the benchmark.

    python benchmarks/plot_jigsaw.py          # needs matplotlib (pip install ".[docs]")
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, _REPO)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from plotting import pyplot  # noqa: E402
_DATA = os.path.join(_REPO, "..", "shared", "data", "tiny-imagenet-200-subset.zip")
_IMAGES = os.path.join(_REPO, "docs", "images")
_RESULTS = os.path.join(_REPO, "benchmarks", "results", "jigsaw_transfer.json")


def puzzle_figure(path, data=_DATA, seed=3, num_permutations=100):
    """Two real images' puzzles: crop with the cells, source tiles with the occluders
    (red) and the shuffled puzzle the network sees."""
    plt = pyplot()
    import numpy as np
    import tensorflow as tf

    from ssl_zoo.data import hamming_permutations, jigsaw_puzzles, load_arrays

    images = load_arrays(data, split="val").random_subset(4, seed).images
    perms = hamming_permutations(num_permutations, seed=0).permutations
    # Colour and normalisation off so the tiles stay viewable; occlusion forced to 2.
    tiles, labels, details = jigsaw_puzzles(
        tf.constant(images), seed, perms, color_jitter=0.0, grayscale_prob=0.0,
        normalize=False, min_occluded=2, max_occluded=2, return_details=True)
    tiles, labels = tiles.numpy(), labels.numpy()
    crops = details["crops"].numpy()
    positions = details["tile_positions"].numpy()
    occluded = details["occluded"].numpy()
    partner = details["partner"].numpy()
    source = details["source_tiles"].numpy()
    occluders = details["occluder_tiles"].numpy()
    t = tiles.shape[2]
    rows = 2
    fig, axes = plt.subplots(rows, 4, figsize=(12, 3.2 * rows))
    for r in range(rows):
        ax = axes[r]
        ax[0].imshow(images[r])
        ax[0].set_title(f"image {r}")
        ax[1].imshow(crops[r].clip(0, 255).astype("uint8"))
        for k, (y, x) in enumerate(positions[r]):
            ax[1].add_patch(plt.Rectangle((x - .5, y - .5), t, t, fill=False,
                                          ec="red" if occluded[r, k] else "yellow", lw=1.2))
        ax[1].set_title("crop, cells and tiles (red: occluded)")
        grid = int(round(np.sqrt(tiles.shape[1])))
        before = np.where(occluded[r][:, None, None, None], occluders[r], source[r])
        for a, tiles_, title, marks in (
                (ax[2], before, f"source order (occluders from image {partner[r]})",
                 occluded[r]),
                (ax[3], tiles[r], f"shuffled: label {labels[r]}, perm "
                                  f"{perms[labels[r]].tolist()}",
                 occluded[r][perms[labels[r]]])):
            canvas = np.full((grid * (t + 2), grid * (t + 2), 3), 255, np.uint8)
            for k in range(grid * grid):
                y, x = divmod(k, grid)
                canvas[y * (t + 2) + 1:y * (t + 2) + 1 + t,
                       x * (t + 2) + 1:x * (t + 2) + 1 + t] = tiles_[k].clip(0, 255)
                if marks[k]:
                    a.add_patch(plt.Rectangle((x * (t + 2) + .5, y * (t + 2) + .5), t, t,
                                              fill=False, ec="red", lw=2))
            a.imshow(canvas)
            a.set_title(title, fontsize=8)
        for a in ax:
            a.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def probe_table(results_path=_RESULTS):
    """The linear-probe table of benchmarks/results/jigsaw_transfer.json as markdown."""
    with open(results_path, encoding="utf-8") as f:
        results = json.load(f)
    lines = ["| features | CIFAR-10 probe | Tiny-ImageNet val probe |", "|---|---|---|"]
    for name, row in results.get("linear_probe", {}).items():
        cells = [f"{100 * row[k]['accuracy']:.1f} %" if k in row else "–"
                 for k in ("cifar10", "tiny_imagenet_val")]
        lines.append(f"| {name} | {cells[0]} | {cells[1]} |")
    return "\n".join(lines)


def main():
    os.makedirs(_IMAGES, exist_ok=True)
    print(puzzle_figure(os.path.join(_IMAGES, "jigsaw_puzzle.png")))
    if os.path.exists(_RESULTS):
        print(probe_table())


if __name__ == "__main__":
    main()
