"""k-means speed: ssl_zoo's TensorFlow `KMeans` against scikit-learn's `KMeans` on the
same float32 features, at equal settings (greedy k-means++, Lloyd, max_iter, tol).

For each repeat r (seed + r) all fit the same features, interleaved (the order flips
every repeat, so load from other processes hits all alike): ours full-batch Lloyd as
a plain graph and with XLA, ours in mini-batch mode, sklearn
`KMeans(n_init=1, algorithm="lloyd", init="k-means++")` on the float32 features and on
a float64 copy. Ours is fitted once first so tracing is excluded from the timings
(reported separately as `warmup_seconds`). Figures are medians over the repeats; a
second comparison starts from the same k-means++ centres (sklearn's
`kmeans_plusplus`), so all run the same Lloyd iterations and only the iteration speed
differs. The 1-minute load average is recorded: sklearn's OpenMP loops slow down far
more than ours when other processes share the cores. Writes
benchmarks/results/kmeans_speed.json atomically.

    python benchmarks/kmeans_speed.py                              # about 3 minutes
    python benchmarks/kmeans_speed.py --n 5000 --k 50 --repeats 2  # quick look
"""

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _REPO not in sys.path:
    sys.path.insert(0, _REPO)


def gaussian_mixture(n, dim, num_components, noise=1.5, seed=0):
    """Float32 features (n, dim): component centres ~ N(0, I), points = a uniformly
    chosen centre + N(0, noise^2 I)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(num_components, dim))
    points = centres[rng.integers(0, num_components, n)]
    return (points + noise * rng.normal(size=(n, dim))).astype(np.float32)


def _timed(fn):
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def compare_with_sklearn(features, num_clusters, max_iter=100, tol=1e-4, seed=0,
                         repeats=3, minibatch_size=None, chunk_size=4096,
                         jit_compile=False, compare_jit=True, same_init=True,
                         sklearn_float64=True):
    """Seconds and inertia of our KMeans and sklearn's on the same features.

    Args:
        features: (N, D) array (used as float32 by both).
        num_clusters: k.
        max_iter, tol: Lloyd settings shared by both (tol in sklearn's convention).
        seed: seed of repeat 0; repeat r uses seed + r for both.
        repeats: timed fits of each.
        minibatch_size: also time ours in mini-batch mode with this batch size.
        chunk_size: our KMeans option.
        jit_compile: the XLA setting of ours for the top-level figures.
        compare_jit: also time ours with the other XLA setting (both appear under
            "modes": "graph" and "xla").
        same_init: also compare Lloyd alone from the same initial centres.
        sklearn_float64: also time sklearn on a float64 copy of the features (its
            k-means++ upcasts float32 data chunk by chunk and is slower on float32
            than on float64).

    Returns:
        dict with ours_seconds, sklearn_seconds (medians), speed_ratio
        (sklearn / ours), ours_inertia, sklearn_inertia (means), inertia_ratio
        (ours / sklearn), n, dim, k, warmup_seconds (first fit of ours, tracing
        included), the iteration counts, "modes" (graph / XLA), the per-repeat
        lists, and the optional "minibatch", "sklearn_float64" and "same_init"
        blocks.
    """
    import sklearn
    from sklearn.cluster import KMeans as SklearnKMeans
    from sklearn.cluster import kmeans_plusplus

    from ssl_zoo.evaluation.kmeans import KMeans

    x = np.ascontiguousarray(features, np.float32)
    n, dim = x.shape
    k = int(num_clusters)
    main_mode = "xla" if jit_compile else "graph"
    modes = [main_mode] + ([{"graph": "xla", "xla": "graph"}[main_mode]]
                           if compare_jit else [])

    def ours(s, mode=main_mode, init="k-means++", batch_size=None):
        return KMeans(k, init=init, max_iter=max_iter, tol=tol, batch_size=batch_size,
                      chunk_size=chunk_size, seed=s,
                      jit_compile=mode == "xla").fit(x)

    def theirs(s, init="k-means++", data=x):
        return SklearnKMeans(k, init=init, n_init=1, algorithm="lloyd",
                             max_iter=max_iter, tol=tol, random_state=s).fit(data)

    contestants = {mode: (lambda s, mode=mode: ours(s, mode)) for mode in modes}
    if minibatch_size:
        contestants["minibatch"] = lambda s: ours(s, batch_size=minibatch_size)
    contestants["sklearn"] = theirs
    if sklearn_float64:
        x64 = x.astype(np.float64)
        contestants["sklearn_float64"] = lambda s: theirs(s, data=x64)

    # First fits trace (and with XLA compile) k-means++, the loop and the last pass.
    warmups = {name: _timed(lambda fn=fn: fn(seed))[0]
               for name, fn in contestants.items() if not name.startswith("sklearn")}
    runs = _interleaved(contestants, repeats, lambda r: seed + r)

    def summary(name):
        rows = runs[name]
        return {"seconds": statistics.median(r["seconds"] for r in rows),
                "inertia": float(np.mean([r["inertia"] for r in rows])),
                "n_iter": float(np.mean([r["n_iter"] for r in rows]))}

    mine, sk = summary(main_mode), summary("sklearn")
    result = {
        "ours_seconds": mine["seconds"], "sklearn_seconds": sk["seconds"],
        "speed_ratio": sk["seconds"] / mine["seconds"],
        "ours_inertia": mine["inertia"], "sklearn_inertia": sk["inertia"],
        "inertia_ratio": mine["inertia"] / sk["inertia"],
        "ours_n_iter": mine["n_iter"], "sklearn_n_iter": sk["n_iter"],
        "n": n, "dim": dim, "k": k, "max_iter": max_iter, "tol": tol,
        "repeats": repeats, "seed": seed, "chunk_size": chunk_size,
        "jit_compile": bool(jit_compile), "warmup_seconds": warmups[main_mode],
        "sklearn_version": sklearn.__version__,
    }

    def block(name):
        row = summary(name)
        return {**row, "speed_ratio": sk["seconds"] / row["seconds"],
                "inertia_ratio": row["inertia"] / sk["inertia"],
                **({"warmup_seconds": warmups[name]} if name in warmups else {})}

    result["modes"] = {mode: block(mode) for mode in modes}
    if minibatch_size:
        result["minibatch"] = {"batch_size": minibatch_size, **block("minibatch")}
    if sklearn_float64:
        sk64 = summary("sklearn_float64")
        result["sklearn_float64"] = {
            **sk64, "ours_speed_ratio": sk64["seconds"] / mine["seconds"],
            "ours_inertia_ratio": mine["inertia"] / sk64["inertia"]}
    result["runs"] = runs
    if same_init:
        # Same start, same algorithm: the iterations (and the inertia) agree up to
        # float rounding, so the ratio is the speed of the Lloyd iterations alone.
        centres, _ = kmeans_plusplus(x, k, random_state=seed)
        same = {mode: (lambda s, mode=mode: ours(s, mode, init=centres))
                for mode in modes}
        same["sklearn"] = lambda s: theirs(s, init=centres)
        for mode in modes:
            same[mode](seed)  # warm
        same_runs = _interleaved(same, repeats, lambda r: seed)
        med = {name: statistics.median(r["seconds"] for r in rows)
               for name, rows in same_runs.items()}
        result["same_init"] = {
            "sklearn_seconds": med["sklearn"],
            "sklearn_n_iter": same_runs["sklearn"][0]["n_iter"],
            "sklearn_inertia": same_runs["sklearn"][0]["inertia"],
            "sklearn_seconds_per_iteration":
                med["sklearn"] / same_runs["sklearn"][0]["n_iter"],
            "modes": {mode: {
                "seconds": med[mode], "speed_ratio": med["sklearn"] / med[mode],
                "n_iter": same_runs[mode][0]["n_iter"],
                "inertia": same_runs[mode][0]["inertia"],
                "inertia_ratio": (same_runs[mode][0]["inertia"]
                                  / same_runs["sklearn"][0]["inertia"]),
                "seconds_per_iteration": med[mode] / same_runs[mode][0]["n_iter"]}
                for mode in modes},
            "runs": same_runs}
    return result


def _interleaved(contestants, repeats, seed_of):
    """Per-repeat seconds, inertia and iterations of every contestant; the order of
    the contestants flips every repeat."""
    runs = {name: [] for name in contestants}
    order = list(contestants)
    for r in range(repeats):
        for name in (order if r % 2 == 0 else order[::-1]):
            seconds, model = _timed(lambda: contestants[name](seed_of(r)))
            runs[name].append({"seconds": seconds, "inertia": float(model.inertia_),
                               "n_iter": int(model.n_iter_)})
    return runs


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=20000, help="points")
    parser.add_argument("--dim", type=int, default=128, help="feature dimension")
    parser.add_argument("--k", type=int, default=200, help="clusters")
    parser.add_argument("--components", type=int, default=None,
                        help="Gaussian components of the data (default: k)")
    parser.add_argument("--noise", type=float, default=1.5,
                        help="std of the points around their component centre")
    parser.add_argument("--max_iter", type=int, default=100)
    parser.add_argument("--tol", type=float, default=1e-4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--chunk_size", type=int, default=4096)
    parser.add_argument("--minibatch_size", type=int, default=2048,
                        help="also time mini-batch mode (0: skip)")
    parser.add_argument("--jit_compile", action="store_true",
                        help="top-level figures of ours with XLA (both are timed)")
    parser.add_argument("--out", default=os.path.join(_REPO, "benchmarks", "results",
                                                      "kmeans_speed.json"))
    args = parser.parse_args(argv)

    from ssl_zoo.utils.io import atomic_write_json

    features = gaussian_mixture(args.n, args.dim, args.components or args.k, args.noise,
                                args.seed)
    load_before = os.getloadavg()[0]
    result = compare_with_sklearn(features, args.k, max_iter=args.max_iter,
                                  tol=args.tol, seed=args.seed, repeats=args.repeats,
                                  minibatch_size=args.minibatch_size or None,
                                  chunk_size=args.chunk_size,
                                  jit_compile=args.jit_compile)
    result["data"] = {"kind": "gaussian_mixture",
                      "components": args.components or args.k,
                      "noise": args.noise, "seed": args.seed}
    result["command"] = "python benchmarks/kmeans_speed.py " + " ".join(
        sys.argv[1:] if argv is None else argv)
    result["cpu_count"] = os.cpu_count()
    # Other processes on the machine slow sklearn's OpenMP loops far more than ours.
    result["load_average_1min"] = {"before": load_before, "after": os.getloadavg()[0]}
    atomic_write_json(args.out, result)
    print(f"n={result['n']} dim={result['dim']} k={result['k']}, median of "
          f"{result['repeats']} fits (first fit, with tracing: "
          f"{result['warmup_seconds']:.2f} s)")
    print("| fit | seconds | sklearn / ours | inertia | ours / sklearn | iterations |")
    print("|---|---|---|---|---|---|")
    rows = [(f"ours ({mode}), k-means++ + Lloyd", row)
            for mode, row in result["modes"].items()]
    if "minibatch" in result:
        rows.append((f"ours, mini-batch {result['minibatch']['batch_size']}",
                     result["minibatch"]))
    for name, row in rows:
        print(f"| {name} | {row['seconds']:.3f} | {row['speed_ratio']:.2f} | "
              f"{row['inertia']:.6g} | {row['inertia_ratio']:.4f} | "
              f"{row['n_iter']:.1f} |")
    print(f"| sklearn float32, k-means++ + Lloyd | {result['sklearn_seconds']:.3f} | "
          f"1 | {result['sklearn_inertia']:.6g} | 1 | {result['sklearn_n_iter']:.1f} |")
    if "sklearn_float64" in result:
        sk64 = result["sklearn_float64"]
        print(f"| sklearn float64, k-means++ + Lloyd | {sk64['seconds']:.3f} | | "
              f"{sk64['inertia']:.6g} | | {sk64['n_iter']:.1f} |")
    if "same_init" in result:
        same = result["same_init"]
        print(f"Lloyd alone from the same k-means++ centres: sklearn "
              f"{same['sklearn_seconds']:.3f} s ({same['sklearn_n_iter']} it)")
        for mode, row in same["modes"].items():
            print(f"  ours ({mode}) {row['seconds']:.3f} s ({row['n_iter']} it), "
                  f"sklearn / ours {row['speed_ratio']:.2f}, inertia ratio "
                  f"{row['inertia_ratio']:.6f}")
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
