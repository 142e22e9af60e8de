"""Jigsaw++ generator speed: puzzles/s of `ssl_zoo.data.jigsaw` inside tf.data, and the
time and Hamming distances of the greedy permutation sets.

The generator runs as a model's training stream would: uint8 images gathered by batch
index, the puzzle view mapped on whole batches with a per-batch stateless seed
(AUTOTUNE, prefetch), timed for a fixed wall time after a warm-up (tracing excluded).
Images are synthetic uint8 noise by default, or real ones (e.g. the Tiny-ImageNet
subset, resized). The permutation sets are `hamming_permutations(P)` for
P = 100, 701, 1000 (max_min and max_avg, seed 0), the enumeration of the 9! candidates
timed separately. Writes benchmarks/results/jigsaw_generator.json atomically.

    python benchmarks/jigsaw_generator.py                       # about 2 minutes
    python benchmarks/jigsaw_generator.py --seconds 5 --sizes 64   # quick look
    python benchmarks/jigsaw_generator.py \\
        --data ../shared/data/tiny-imagenet-200-subset.zip         # + real images
"""

import argparse
import os
import platform
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _REPO not in sys.path:
    sys.path.insert(0, _REPO)


def generator_throughput(image_size=64, batch_size=64, num_permutations=1000, seconds=20.0,
                         images=None, warmup_batches=5, seed=0, pool_size=None, **options):
    """Puzzles per second of the Jigsaw++ view in a tf.data pipeline.

    Args:
        image_size: side of the synthetic images (ignored when `images` is given).
        batch_size: images per batch (puzzles per map call).
        num_permutations: size of the max_min permutation set (the label count).
        seconds: wall time of the timed part (after the warm-up).
        images: optional uint8 array (N, H, W, 3) of real images to cut puzzles from.
        warmup_batches: batches drawn before timing (tracing, autotune ramp-up).
        seed: seed of the images, the permutation set and the puzzle stream.
        pool_size: number of synthetic images cycled through (default: as many as fit
            in 50 MB, at most 1024).
        **options: `jigsaw_puzzles` options (defaults otherwise).

    Returns:
        dict: puzzles_per_s, batches_per_s, timed batches and seconds, warm-up
        seconds, the image shape and the tile shape.
    """
    import tensorflow as tf

    from ssl_zoo.data.jigsaw import hamming_permutations, make_puzzle_view

    if images is None:
        if pool_size is None:
            pool_size = int(min(1024, max(batch_size, 50e6 // (3 * image_size**2))))
        rng = np.random.default_rng(seed)
        images = rng.integers(0, 256, (pool_size, image_size, image_size, 3), np.uint8)
        source = "synthetic uint8 noise"
    else:
        images = np.asarray(images)
        source = "real images"
    view = make_puzzle_view(hamming_permutations(num_permutations, seed=seed).permutations,
                            **options)
    pool = tf.constant(images)
    indices = tf.data.Dataset.range(len(images)).shuffle(len(images), seed=seed).repeat()
    batches = indices.batch(batch_size, drop_remainder=True)
    seeds = tf.data.Dataset.random(seed=seed).map(
        lambda r: tf.stack([tf.constant(seed, tf.int64), r]))
    ds = tf.data.Dataset.zip(batches, seeds).map(
        lambda i, s: view(tf.gather(pool, i), s), num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True).prefetch(tf.data.AUTOTUNE)
    it = iter(ds)
    start = time.perf_counter()
    for _ in range(warmup_batches):
        tiles, _ = next(it)
    warmup = time.perf_counter() - start
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        tiles, labels = next(it)
        count += 1
    labels.numpy()
    elapsed = time.perf_counter() - start
    return {"source": source, "image_shape": list(images.shape[1:]),
            "batch_size": batch_size, "num_permutations": num_permutations,
            "tile_shape": list(tiles.shape[1:]), "options": options,
            "warmup_batches": warmup_batches, "warmup_s": warmup,
            "timed_batches": count, "timed_s": elapsed,
            "batches_per_s": count / elapsed, "puzzles_per_s": count * batch_size / elapsed}


def permutation_sets(sizes=(100, 701, 1000), criteria=("max_min", "max_avg"), seed=0):
    """Time and Hamming distances of `hamming_permutations` for each size and criterion.

    Returns:
        dict: "enumerate_9!_s" (first enumeration of the candidates) and a row per
        (criterion, size) with seconds, min and mean distance.
    """
    from ssl_zoo.data import jigsaw

    start = time.perf_counter()
    jigsaw._all_permutations(9)  # pylint: disable=protected-access
    result = {"enumerate_9!_s": time.perf_counter() - start, "seed": seed, "sets": []}
    for criterion in criteria:
        for size in sizes:
            start = time.perf_counter()
            s = jigsaw.hamming_permutations(size, criterion=criterion, seed=seed)
            result["sets"].append({"criterion": criterion, "num_permutations": size,
                                   "seconds": time.perf_counter() - start,
                                   "min_distance": s.min_distance,
                                   "mean_distance": s.mean_distance})
    return result


def _real_images(path, size, limit):
    """Up to `limit` real images (at most 50 MB) of the val split, resized to `size`."""
    import tensorflow as tf

    from ssl_zoo.data import load_arrays
    images = load_arrays(path, "val").images
    images = images[:int(min(limit, max(64, 50e6 // (3 * size**2))))]
    if images.shape[1:3] != (size, size):
        images = tf.image.resize(images, (size, size), antialias=True)
        images = tf.cast(tf.clip_by_value(tf.round(images), 0, 255), tf.uint8).numpy()
    return images


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="64,255",
                        help="comma-separated image sides to time the generator at")
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--num_permutations", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=20.0,
                        help="timed wall seconds per generator run")
    parser.add_argument("--data", default=None,
                        help="optional folder/archive of real images (its val split), "
                             "resized to each size, as a further run")
    parser.add_argument("--limit", type=int, default=2048, help="real images to use")
    parser.add_argument("--out", default=os.path.join(_REPO, "benchmarks", "results",
                                                      "jigsaw_generator.json"))
    args = parser.parse_args(argv)

    import keras
    import tensorflow as tf

    from ssl_zoo.utils.io import atomic_write_json

    perms = permutation_sets()
    print(f"enumerating the 9! candidates: {perms['enumerate_9!_s']:.2f} s")
    print("| criterion | P | seconds | min Hamming | mean Hamming |\n|---|---|---|---|---|")
    for row in perms["sets"]:
        print(f"| {row['criterion']} | {row['num_permutations']} | {row['seconds']:.2f} | "
              f"{row['min_distance']} | {row['mean_distance']:.3f} |", flush=True)

    runs = []
    sizes = [int(s) for s in args.sizes.split(",") if s]
    for size in sizes:
        runs.append(generator_throughput(size, args.batch_size, args.num_permutations,
                                         args.seconds))
        if args.data:
            runs.append(generator_throughput(
                size, args.batch_size, args.num_permutations, args.seconds,
                images=_real_images(args.data, size, args.limit)))
    print("\n| images | image | tiles | batch | puzzles/s | batches/s |\n"
          "|---|---|---|---|---|---|")
    for r in runs:
        print(f"| {r['source']} | {'x'.join(map(str, r['image_shape']))} | "
              f"{r['tile_shape'][0]} x {'x'.join(map(str, r['tile_shape'][1:]))} | "
              f"{r['batch_size']} | {r['puzzles_per_s']:.0f} | {r['batches_per_s']:.1f} |")

    result = {
        "benchmark": "jigsaw_generator",
        "machine": {"platform": platform.platform(), "processor": platform.processor(),
                    "cpu_count": os.cpu_count(),
                    "gpus": len(tf.config.list_physical_devices("GPU"))},
        "versions": {"tensorflow": tf.__version__, "keras": keras.__version__,
                     "numpy": np.__version__},
        "permutation_sets": perms,
        "generator": runs,
    }
    atomic_write_json(args.out, result)
    print(f"\nwrote {args.out}")
    return result


if __name__ == "__main__":
    main()
