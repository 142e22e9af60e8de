"""k-means (Lloyd and mini-batch, greedy k-means++) and PCA whitening of features in
TensorFlow: the clustering step of knowledge transfer by cluster pseudo-labels."""

import math

import numpy as np
import tensorflow as tf

# Chunks of a pass that may run at once: 2 lets one chunk's argmin overlap the next
# chunk's matmul while memory stays at a few (chunk_size x k) distance blocks.
_PARALLEL_CHUNKS = 2
_COMPILED = {}
# Philox named explicitly: "auto_select" lets the device (CPU, GPU, XLA) pick the
# algorithm, and the same seed would then draw other numbers there. Only integer
# draws are used (see `_uniform`).
_RNG = "philox"


def _compiled(fn, jit_compile=False):
    """One `tf.function` per (fn, jit_compile), shared by every instance, so a second
    fit with the same shapes and settings reuses the trace."""
    key = (fn.__name__, bool(jit_compile))
    if key not in _COMPILED:
        _COMPILED[key] = tf.function(fn, jit_compile=bool(jit_compile))
    return _COMPILED[key]


def _as_features(features, what="features"):
    """A float32 (N, D) tensor; ValueError when not rank 2 or not finite."""
    x = tf.convert_to_tensor(features)
    if x.shape.rank != 2:
        raise ValueError(f"{what} must be a rank-2 (N, D) array of N points, got shape "
                         f"{tuple(x.shape)}; reshape or flatten the features first.")
    if not (x.dtype.is_floating or x.dtype.is_integer):
        raise ValueError(f"{what} must be numbers, got dtype {x.dtype.name}.")
    if x.shape[1] == 0:
        raise ValueError(f"{what} have no columns (shape {tuple(x.shape)}).")
    x = tf.cast(x, tf.float32)  # a float64 value beyond the float32 range becomes Inf
    finite = tf.reduce_all(tf.math.is_finite(x), axis=1)
    if not bool(tf.reduce_all(finite)):
        rows = tf.where(tf.logical_not(finite))[:, 0]
        raise ValueError(f"{what} contain NaN/Inf at row {int(rows[0])} ({len(rows)} "
                         f"row(s) in all, in float32); drop or impute those rows "
                         f"first.")
    return x


def _check_int(value, name, minimum=1, allow_none=False):
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) \
            or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}"
                         f"{' or None' if allow_none else ''}, got {value!r}.")
    return int(value)


def _map_chunks(fn, rows, chunk_size, accumulators=()):
    """Runs `fn` over consecutive blocks of `chunk_size` rows of `rows`.

    `fn(blocks) -> (row_outputs, increments)`: `blocks` holds the same rows of every
    tensor in `rows` (static first dimension N); the row outputs of all blocks are
    concatenated (N, ...) and the increments are added to `accumulators`. Blocks have
    static shapes (full blocks in a `tf.while_loop`, then the remainder), so the pass
    also compiles with XLA, and only a few blocks are alive at once.
    """
    n = rows[0].shape[0]
    num_full, tail = divmod(n, chunk_size)
    accumulators = list(accumulators)

    def block(start, size):
        return fn([tf.slice(r, [start] + [0] * (r.shape.rank - 1),
                            [size] + r.shape.as_list()[1:]) for r in rows])

    parts = []
    if num_full:
        outputs, increments = block(0, chunk_size)
        arrays = [tf.TensorArray(o.dtype, size=num_full, element_shape=o.shape)
                  .write(0, o) for o in outputs]
        accumulators = [a + d for a, d in zip(accumulators, increments)]
        if num_full > 1:
            def body(i, arrays, accumulators):
                outputs, increments = block(i * chunk_size, chunk_size)
                return (i + 1, [a.write(i, o) for a, o in zip(arrays, outputs)],
                        [a + d for a, d in zip(accumulators, increments)])

            _, arrays, accumulators = tf.while_loop(
                lambda i, *_: i < num_full, body,
                (tf.constant(1), arrays, accumulators),
                parallel_iterations=_PARALLEL_CHUNKS)
        parts.append([tf.reshape(a.stack(),
                                 [num_full * chunk_size] + a.element_shape[1:])
                      for a in arrays])
    if tail:
        outputs, increments = block(num_full * chunk_size, tail)
        accumulators = [a + d for a, d in zip(accumulators, increments)]
        parts.append(list(outputs))
    outputs = [p[0] if len(p) == 1 else tf.concat(p, 0) for p in zip(*parts)]
    return outputs, accumulators


def _segment_sum(data, segment_ids, num_segments):
    """`tf.math.unsorted_segment_sum(data, segment_ids, num_segments)` as a
    scatter-add: the same sums, 4-5x faster on CPU (TF 2.21, 2 cores: 20000 x 128
    rows into 200 segments in 2-3 ms instead of 10)."""
    zeros = tf.zeros([num_segments] + data.shape.as_list()[1:], data.dtype)
    return tf.tensor_scatter_nd_add(zeros, segment_ids[:, None], data)


def _nearest(xb, xb_sq, centres_m2, centres_sq):
    """Nearest centre (B,) int32 and its squared distance (B,), clamped at 0.

    ||x - c||^2 = ||x||^2 - 2 x.c + ||c||^2: one matmul per block; ||x||^2 does not
    change the argmin and is added to the winner only. `centres_m2` = -2 centres.
    """
    partial = tf.matmul(xb, centres_m2, transpose_b=True) + centres_sq
    labels = tf.argmin(partial, axis=1, output_type=tf.int32)
    best = tf.gather(partial, labels, batch_dims=1)
    return labels, tf.maximum(best + xb_sq, 0.0)


def _assign(x, x_sq, centres, chunk_size):
    """Labels (N,), squared distances to them (N,), per-cluster sums (k, D) and
    counts (k,)."""
    k = centres.shape[0]
    centres_m2, centres_sq = -2.0 * centres, tf.reduce_sum(tf.square(centres), 1)

    def fn(blocks):
        xb, xb_sq = blocks
        labels, dist = _nearest(xb, xb_sq, centres_m2, centres_sq)
        return (labels, dist), (_segment_sum(xb, labels, k),
                                _segment_sum(tf.ones_like(labels), labels, k))

    (labels, dist), (sums, counts) = _map_chunks(
        fn, (x, x_sq), chunk_size, (tf.zeros_like(centres), tf.zeros([k], tf.int32)))
    return labels, dist, sums, counts


def _final_pass(x, centres, chunk_size):
    """Labels (N,) int32, exact inertia sum ||x - c[label]||^2 (float64), sizes (k,)."""
    k = centres.shape[0]
    x_sq = tf.reduce_sum(tf.square(x), 1)
    centres_m2, centres_sq = -2.0 * centres, tf.reduce_sum(tf.square(centres), 1)

    def fn(blocks):
        xb, xb_sq = blocks
        labels, _ = _nearest(xb, xb_sq, centres_m2, centres_sq)
        # The inertia from differences, not from the expansion: no cancellation.
        residual = tf.reduce_sum(tf.square(xb - tf.gather(centres, labels)))
        sizes = _segment_sum(tf.ones_like(labels), labels, k)
        return (labels,), (tf.cast(residual, tf.float64), sizes)

    (labels,), (inertia, sizes) = _map_chunks(
        fn, (x, x_sq), chunk_size,
        (tf.constant(0.0, tf.float64), tf.zeros([k], tf.int32)))
    return labels, inertia, sizes


def _distances(x, centres, chunk_size):
    """Squared distances (N, k), clamped at 0."""
    x_sq = tf.reduce_sum(tf.square(x), 1)
    centres_m2, centres_sq = -2.0 * centres, tf.reduce_sum(tf.square(centres), 1)

    def fn(blocks):
        xb, xb_sq = blocks
        partial = tf.matmul(xb, centres_m2, transpose_b=True) + centres_sq
        return (tf.maximum(partial + xb_sq[:, None], 0.0),), ()

    (dist,), _ = _map_chunks(fn, (x, x_sq), chunk_size)
    return dist


def _kmeans_plusplus(x, key, num_clusters, n_local_trials):
    """Indices (k,) int32 of the greedy k-means++ centres (Arthur & Vassilvitskii 2007;
    sklearn's greedy variant): each step draws `n_local_trials` candidates with
    probability proportional to D(x)^2 and keeps the one that lowers the potential
    most. Distances are computed against all points at once: (trials, N) floats."""
    n = x.shape[0]
    x_sq = tf.reduce_sum(tf.square(x), 1)

    def distances_to(points):
        dist = (x_sq[None, :] - 2.0 * tf.matmul(points, x, transpose_b=True)
                + tf.reduce_sum(tf.square(points), 1)[:, None])
        return tf.maximum(dist, 0.0)

    first = tf.random.stateless_uniform([], _fold(key, 0), 0, n, tf.int32, alg=_RNG)
    # A chosen point's own distance is set to exactly 0 (the expansion leaves a
    # rounding residue), so with distinct points the centres are distinct.
    closest = tf.tensor_scatter_nd_update(distances_to(tf.gather(x, [first]))[0],
                                          [[first]], [0.0])
    indices = tf.tensor_scatter_nd_update(tf.zeros([num_clusters], tf.int32), [[0]],
                                          [first])
    trials = tf.range(n_local_trials)

    def body(c, closest, indices):
        cumulative = tf.cumsum(tf.cast(closest, tf.float64))  # float64: N can be large
        draws = cumulative[-1] * _uniform(n_local_trials, _fold(key, c))
        # side="right": the first point whose cumulative sum exceeds the draw, so a
        # point at distance 0 (a centre already) is never drawn.
        candidates = tf.minimum(tf.searchsorted(cumulative, draws, side="right"), n - 1)
        dist = tf.minimum(distances_to(tf.gather(x, candidates)), closest[None, :])
        dist = tf.tensor_scatter_nd_update(dist, tf.stack([trials, candidates], 1),
                                           tf.zeros([n_local_trials]))
        best = tf.argmin(tf.reduce_sum(dist, 1), output_type=tf.int32)
        # tf.gather, not dist[best]: XLA takes a tensor index of a slice for a
        # compile-time constant and recompiled for every seed.
        indices = tf.tensor_scatter_nd_update(indices, [[c]],
                                              [tf.gather(candidates, best)])
        return c + 1, tf.gather(dist, best), indices

    _, _, indices = tf.while_loop(lambda c, *_: c < num_clusters, body,
                                  (tf.constant(1), closest, indices))
    return indices


def _reseed_empty(x, labels, dist, sums, counts):
    """Moves the farthest points into the empty clusters (sklearn's rule).

    Empty clusters, in increasing index, take the points farthest from their
    current centre, farthest first; each point leaves its old cluster's sum and
    count and becomes the whole of its new cluster. Returns (sums, counts, number
    of clusters re-seeded).
    """
    k = counts.shape[0]
    empty = tf.equal(counts, 0)
    num_empty = tf.reduce_sum(tf.cast(empty, tf.int32))

    def reseed():
        _, farthest = tf.math.top_k(dist, k=k)  # k <= N, distinct points
        rank = tf.maximum(tf.cumsum(tf.cast(empty, tf.int32)) - 1, 0)
        points = tf.gather(farthest, rank)
        moved = tf.gather(x, points) * tf.cast(empty, tf.float32)[:, None]
        old = tf.gather(labels, points)
        left = tf.math.unsorted_segment_sum(moved, old, k)
        left_counts = tf.math.unsorted_segment_sum(tf.cast(empty, tf.int32), old, k)
        return (tf.where(empty[:, None], moved, sums - left),
                tf.where(empty, 1, counts - left_counts))

    sums, counts = tf.cond(num_empty > 0, reseed, lambda: (sums, counts))
    return sums, counts, num_empty


def _lloyd(x, centres, tol_abs, max_iter, chunk_size, reseed_empty, verbose):
    """Full-batch Lloyd iterations with sklearn's stopping rule, then a final pass."""
    x_sq = tf.reduce_sum(tf.square(x), 1)

    def body(i, centres, old_labels, done, reseeded, history):
        labels, dist, sums, counts = _assign(x, x_sq, centres, chunk_size)
        inertia = tf.reduce_sum(tf.cast(dist, tf.float64))
        history = tf.tensor_scatter_nd_update(history, [[i]], [inertia])
        num_empty = tf.constant(0)
        if reseed_empty:
            sums, counts, num_empty = _reseed_empty(x, labels, dist, sums, counts)
        # A cluster left empty (reseed_empty=False) keeps its centre.
        means = sums / tf.cast(tf.maximum(counts, 1), tf.float32)[:, None]
        new = tf.where(counts[:, None] > 0, means, centres)
        shift = tf.reduce_sum(tf.square(new - centres))
        done = tf.reduce_all(tf.equal(labels, old_labels)) | (shift <= tol_abs)
        if verbose:
            tf.print("k-means iteration", i + 1, "inertia", inertia, "centre shift",
                     shift, "empty clusters", num_empty)
        return i + 1, new, labels, done, reseeded + num_empty, history

    n_iter, centres, _, _, reseeded, history = tf.while_loop(
        lambda i, _c, _l, done, *_: tf.logical_and(i < max_iter, tf.logical_not(done)),
        body, (tf.constant(0), centres, tf.fill([x.shape[0]], -1), tf.constant(False),
               tf.constant(0), tf.zeros([max_iter], tf.float64)))
    labels, inertia, sizes = _final_pass(x, centres, chunk_size)
    return centres, labels, inertia, sizes, n_iter, reseeded, history


def _minibatch(x, centres, key, tol_abs, tol, max_iter, batch_size, chunk_size,
               reseed_empty, verbose):
    """Mini-batch k-means (Sculley 2010), epoch by epoch, then a final full pass."""
    n, k = x.shape[0], centres.shape[0]
    steps = -(-n // batch_size)
    x_sq = tf.reduce_sum(tf.square(x), 1)
    num_reseedable = min(k, batch_size)

    def step(s, centres, weights, epoch_counts, epoch_inertia, batch, batch_dist):
        batch = tf.random.stateless_uniform(
            [batch_size], _fold(key, s), 0, n, tf.int32, alg=_RNG)
        _, batch_dist, sums, counts = _assign(
            tf.gather(x, batch), tf.gather(x_sq, batch), centres, chunk_size)
        # Per-centre learning rate 1/v (v = points the centre has seen) applied point
        # by point is the running mean: c <- (v c + batch sum) / (v + batch count).
        weights = weights + counts
        rate = tf.cast(counts, tf.float32) / tf.cast(tf.maximum(weights, 1), tf.float32)
        batch_means = sums / tf.cast(tf.maximum(counts, 1), tf.float32)[:, None]
        centres = centres + rate[:, None] * (batch_means - centres)
        return (s + 1, centres, weights, epoch_counts + counts,
                epoch_inertia + tf.reduce_sum(tf.cast(batch_dist, tf.float64)), batch,
                batch_dist)

    def epoch(e, centres, weights, done, reseeded, history, best):
        start = centres
        _, centres, weights, epoch_counts, epoch_inertia, batch, batch_dist = \
            tf.while_loop(lambda s, *_: s < (e + 1) * steps, step,
                          (e * steps, centres, weights, tf.zeros([k], tf.int32),
                           tf.constant(0.0, tf.float64),
                           tf.zeros([batch_size], tf.int32), tf.zeros([batch_size])))
        num_empty = tf.constant(0)
        if reseed_empty:
            # A centre that no point chose during a whole epoch moves to the points of
            # the last batch farthest from their centres (at most min(k, batch_size)).
            rank = tf.cumsum(tf.cast(epoch_counts == 0, tf.int32)) - 1
            empty = (epoch_counts == 0) & (rank < num_reseedable)
            _, farthest = tf.math.top_k(batch_dist, k=num_reseedable)
            points = tf.gather(batch, tf.gather(farthest, tf.clip_by_value(
                rank, 0, num_reseedable - 1)))
            centres = tf.where(empty[:, None], tf.gather(x, points), centres)
            weights = tf.where(empty, 1, weights)
            num_empty = tf.reduce_sum(tf.cast(empty, tf.int32))
        shift = tf.reduce_sum(tf.square(centres - start))
        estimate = epoch_inertia * (n / (steps * batch_size))
        history = tf.tensor_scatter_nd_update(history, [[e]], [estimate])
        if verbose:
            tf.print("mini-batch k-means epoch", e + 1, "inertia estimate", estimate,
                     "centre shift", shift, "empty clusters", num_empty)
        # Converged: the centres hardly moved, or the epoch's inertia estimate is not
        # lower than the best so far by a fraction tol (it then only fluctuates with
        # the sampling of the batches).
        done = (shift <= tol_abs) | (estimate > best * (1.0 - tol))
        return (e + 1, centres, weights, done, reseeded + num_empty, history,
                tf.minimum(best, estimate))

    n_iter, centres, _, _, reseeded, history, _ = tf.while_loop(
        lambda e, _c, _w, done, *_: tf.logical_and(e < max_iter, tf.logical_not(done)),
        epoch, (tf.constant(0), centres, tf.zeros([k], tf.int32), tf.constant(False),
                tf.constant(0), tf.zeros([max_iter], tf.float64),
                tf.constant(np.inf, tf.float64)))
    labels, inertia, sizes = _final_pass(x, centres, chunk_size)
    return centres, labels, inertia, sizes, n_iter, reseeded, history


def _predict(x, centres, chunk_size):
    return _final_pass(x, centres, chunk_size)[0]


def _uniform(size, key):
    """(size,) float64 uniform in [0, 1), the same numbers on every device.

    Built from Philox integers: stateless float draws differ under XLA (another
    bits-to-float mapping), integer draws do not."""
    bits = tf.random.stateless_uniform([size], key, 0, 2 ** 53, tf.int64, alg=_RNG)
    return tf.cast(bits, tf.float64) * 2.0 ** -53


def _fold(key, data):
    return tf.random.experimental.stateless_fold_in(key, data, alg=_RNG)


def _seed_key(seed, stream):
    return _fold(tf.constant([int(seed), 0], tf.int64), stream)


def l2_normalize(features, eps=1e-12):
    """Rows scaled to unit Euclidean norm (rows of norm below `eps` divided by `eps`).

    Plain TensorFlow: works eagerly, inside `tf.function` and on any device.

    Args:
        features: (N, D) array or tensor (any float; the last axis is normalised).
        eps: floor of the norm, so zero rows stay zero instead of NaN.

    Returns:
        float32 `tf.Tensor` of the same shape.

    Raises:
        ValueError: if `eps` is not positive.

    Example:
    >>> np.round(l2_normalize([[3.0, 4.0], [0.0, 0.0]]).numpy().astype(float), 4)
    array([[0.6, 0.8],
           [0. , 0. ]])
    """
    if not eps > 0:
        raise ValueError(f"l2_normalize needs eps > 0, got {eps}.")
    x = tf.cast(features, tf.float32)
    return x / tf.maximum(tf.norm(x, axis=-1, keepdims=True), eps)


def kmeans_plusplus(features, num_clusters, n_local_trials=None, seed=0):
    """Greedy k-means++ seeding in TensorFlow, deterministic for a seed.

    The first centre is a uniformly drawn point; each next one is the best of
    `n_local_trials` candidates drawn with probability proportional to the squared
    distance to the nearest centre so far, "best" meaning the one that leaves the
    smallest sum of squared distances (Arthur & Vassilvitskii 2007; the greedy
    variant of scikit-learn). Random draws are stateless ops (Philox integers)
    seeded from `seed`, the same on CPU, GPU and under XLA. Cost: about
    n_local_trials Lloyd iterations (k steps, each the distances of
    n_local_trials candidates to all N points).

    Args:
        features: (N, D) array.
        num_clusters: k, 1 <= k <= N.
        n_local_trials: candidates per step; None = 2 + int(log k) (sklearn's
            default), 1 = plain k-means++.
        seed: integer seed.

    Returns:
        (centres (k, D) float32 numpy, indices (k,) int64 numpy of the chosen points);
        with distinct points the indices are distinct.

    Raises:
        ValueError: bad features (rank, NaN/Inf), k < 1, k > N or n_local_trials < 1.

    Example:
    >>> x = np.array([[0.0, 0.0], [0.1, 0.0], [5.0, 5.0], [5.1, 5.0]])
    >>> centres, indices = kmeans_plusplus(x, 2, seed=1)
    >>> sorted(int(i) // 2 for i in indices)  # one centre in each pair
    [0, 1]
    """
    num_clusters = _check_int(num_clusters, "num_clusters")
    trials = _check_int(n_local_trials, "n_local_trials", allow_none=True)
    x = _as_features(features)
    if num_clusters > x.shape[0]:
        raise ValueError(f"k={num_clusters} is larger than the number of points "
                         f"n={x.shape[0]}; ask for fewer clusters or give more points.")
    if trials is None:
        trials = 2 + int(math.log(num_clusters))
    centred = x - tf.reduce_mean(x, 0)  # smaller norms, less cancellation
    indices = _compiled(_kmeans_plusplus)(centred, _seed_key(seed, 1), num_clusters,
                                          trials)
    return tf.gather(x, indices).numpy(), indices.numpy().astype(np.int64)


class KMeans:
    """k-means clustering in TensorFlow: greedy k-means++, Lloyd or mini-batch.

    Full batch (`batch_size=None`) is Lloyd's algorithm: assign every point to the
    nearest centre (squared Euclidean distance from one matmul per chunk of
    `chunk_size` points, so memory is O(chunk_size x k) beyond the data), then move
    each centre to the mean of its points. The iterations stop, as in scikit-learn,
    when no label changed or when the summed squared centre moves fall to
    `tol` x the mean per-feature variance of the data (sklearn's tolerance), or
    after `max_iter`; a last pass gives the labels of the final centres and the
    inertia (sum of squared distances to the nearest centre). An empty cluster is
    re-seeded (`reseed_empty`, sklearn's rule): empty clusters in increasing
    index take the points currently farthest from their centres, farthest first,
    and each such point leaves its old cluster; `empty_reseeded_` counts them
    (with fewer distinct points than k, a cluster can still end empty).

    With `batch_size=b` it is mini-batch k-means (Sculley 2010): each step
    assigns b points drawn at random (with replacement) and moves each centre
    towards their mean with its own learning rate 1/(points it has seen); an
    epoch is ceil(N / b) steps, `max_iter` counts epochs, and the fit stops early
    after an epoch in which the centres moved less than the tolerance above, or
    whose inertia estimate (the batches' squared distances, scaled to N points)
    is not below the best earlier epoch's by a fraction `tol`. A centre no
    point chose during an epoch is re-seeded to a point of the last batch far
    from its centre. `history_` then holds per-epoch estimates of the inertia
    from the batches; labels and inertia come from a full pass at the end (a
    final cluster can be empty).

    The loops run as one `tf.function` of plain TensorFlow ops (float32): the same
    code runs on CPU or GPU and inside a `tf.distribute` strategy scope (it uses
    the default device and no variables). Data are centred on their mean first
    (as sklearn does) for accurate distances. Random draws are stateless ops
    seeded from `seed`, so a fit is deterministic for a seed (on GPU, bit-exact
    repeats also need `tf.config.experimental.enable_op_determinism()`, since
    the segment sums add in parallel there). `KMeans(k, seed=s)` starts from
    `kmeans_plusplus(features, k, seed=s)`, which costs about n_local_trials
    Lloyd iterations (k steps, each n_local_trials distances to every point;
    memory n_local_trials x N floats). Each new N, D, k or setting traces the
    loops once (1-3 s on CPU); later fits of the same shapes reuse the trace.

    Args:
        num_clusters: k >= 1.
        init: "k-means++" (greedy, see `kmeans_plusplus`) or an array (k, D) of
            initial centres.
        max_iter: Lloyd iterations (full batch) or epochs (mini-batch), >= 1.
        tol: relative tolerance >= 0 (see above): of the centre moves, and in
            mini-batch mode also of the inertia estimate; with 0 full-batch Lloyd
            stops only when no label changes (or at `max_iter`).
        batch_size: None for full-batch Lloyd, or the mini-batch size.
        chunk_size: points per distance block, >= 1; the results do not depend on
            it beyond float rounding.
        n_local_trials: k-means++ candidates per step, None = 2 + int(log k).
        seed: integer seed of the k-means++ draws and of the mini-batches.
        reseed_empty: re-seed empty clusters; False leaves an empty cluster's
            centre where it was.
        verbose: print the inertia and centre shift of every iteration (with
            `tf.print` while the loop runs; after the fit with `jit_compile`).
        jit_compile: compile the loops with XLA.

    Attributes (after `fit`):
        cluster_centers_: (k, D) float32 numpy.
        labels_: (N,) int64 numpy, index of each point's nearest final centre.
        inertia_: float, sum of squared distances of the points to those centres.
        n_iter_: iterations (full batch) or epochs (mini-batch) run.
        cluster_sizes_: (k,) int64 numpy, points per cluster.
        empty_reseeded_: how many times an empty cluster was re-seeded, in total.
        history_: (n_iter_,) float64 numpy, the inertia of the assignment at every
            iteration (mini-batch: per-epoch estimates).

    Raises:
        ValueError: on construction for num_clusters < 1, chunk_size < 1,
            max_iter < 1, batch_size < 1, n_local_trials < 1, tol < 0, an unknown
            init string or an init array that is not (k, D) or not finite.

    Example:
    >>> x = np.array([[0.0, 0.0], [0.0, 1.0], [10.0, 10.0], [10.0, 11.0]])
    >>> km = KMeans(2, seed=0).fit(x)
    >>> km.cluster_sizes_.tolist(), km.inertia_, km.n_iter_
    ([2, 2], 1.0, 2)
    >>> bool(km.labels_[0] == km.labels_[1] != km.labels_[2] == km.labels_[3])
    True
    >>> bool(km.predict([[9.0, 9.0]])[0] == km.labels_[2])
    True
    """

    def __init__(self, num_clusters, init="k-means++", max_iter=100, tol=1e-4,
                 batch_size=None, chunk_size=4096, n_local_trials=None, seed=0,
                 reseed_empty=True, verbose=False, jit_compile=False):
        self.num_clusters = _check_int(num_clusters, "num_clusters")
        self.max_iter = _check_int(max_iter, "max_iter")
        self.batch_size = _check_int(batch_size, "batch_size", allow_none=True)
        self.chunk_size = _check_int(chunk_size, "chunk_size")
        self.n_local_trials = _check_int(n_local_trials, "n_local_trials",
                                         allow_none=True)
        self.seed = _check_int(seed, "seed", minimum=-2 ** 63)
        if not (isinstance(tol, (int, float, np.floating)) and tol >= 0):
            raise ValueError(f"tol must be a number >= 0, got {tol!r}.")
        self.tol = float(tol)
        if isinstance(init, str):
            if init != "k-means++":
                raise ValueError(f"init must be 'k-means++' or an array of initial "
                                 f"centres (k, D), got {init!r}.")
        else:
            init = np.asarray(init, np.float32)
            if init.ndim != 2 or init.shape[0] != self.num_clusters:
                raise ValueError(f"init has shape {init.shape}, expected (k, D) with "
                                 f"k=num_clusters={self.num_clusters} rows.")
            if not np.all(np.isfinite(init)):
                raise ValueError("init contains NaN/Inf centres.")
        self.init = init
        self.reseed_empty = bool(reseed_empty)
        self.verbose = bool(verbose)
        self.jit_compile = bool(jit_compile)
        self.cluster_centers_ = None

    def get_config(self):
        """The constructor arguments (an init array as nested lists), JSON-ready.

        Returns:
            dict; `KMeans.from_config(config)` builds an equal, unfitted KMeans.

        Example:
        >>> KMeans.from_config(KMeans(3, tol=0.0).get_config()).tol
        0.0
        """
        return {"num_clusters": self.num_clusters,
                "init": self.init if isinstance(self.init, str) else self.init.tolist(),
                "max_iter": self.max_iter, "tol": self.tol,
                "batch_size": self.batch_size,
                "chunk_size": self.chunk_size, "n_local_trials": self.n_local_trials,
                "seed": self.seed, "reseed_empty": self.reseed_empty,
                "verbose": self.verbose, "jit_compile": self.jit_compile}

    @classmethod
    def from_config(cls, config):
        """A KMeans built from `get_config()` output.

        Args:
            config: dict of constructor arguments.

        Returns:
            An unfitted `KMeans`.

        Example:
        >>> KMeans.from_config({"num_clusters": 4}).num_clusters
        4
        """
        return cls(**config)

    def to_dict(self):
        """Config plus the fitted centres and summary, JSON-ready (no labels).

        Returns:
            dict with "config", "cluster_centers", "inertia", "n_iter",
            "cluster_sizes", "empty_reseeded", "history".

        Raises:
            ValueError: if the model is not fitted.

        Example:
        >>> km = KMeans(1).fit([[0.0], [2.0]])
        >>> KMeans.from_dict(km.to_dict()).predict([[5.0]]).tolist()
        [0]
        """
        self._centres()
        return {"config": self.get_config(),
                "cluster_centers": self.cluster_centers_.tolist(),
                "inertia": self.inertia_, "n_iter": self.n_iter_,
                "cluster_sizes": self.cluster_sizes_.tolist(),
                "empty_reseeded": self.empty_reseeded_,
                "history": self.history_.tolist()}

    @classmethod
    def from_dict(cls, state):
        """A fitted KMeans (without `labels_`) from `to_dict()` output.

        Args:
            state: dict from `to_dict`.

        Returns:
            `KMeans` whose `predict` and `transform` work.

        Example:
        >>> KMeans.from_dict(KMeans(2).fit([[0.0], [1.0]]).to_dict()).inertia_
        0.0
        """
        model = cls.from_config(state["config"])
        model.cluster_centers_ = np.asarray(state["cluster_centers"], np.float32)
        model.labels_ = None
        model.inertia_ = float(state["inertia"])
        model.n_iter_ = int(state["n_iter"])
        model.cluster_sizes_ = np.asarray(state["cluster_sizes"], np.int64)
        model.empty_reseeded_ = int(state["empty_reseeded"])
        model.history_ = np.asarray(state["history"], np.float64)
        return model

    def fit(self, features):
        """Clusters `features`; sets the fitted attributes.

        Args:
            features: (N, D) array, N >= k, finite.

        Returns:
            self.

        Raises:
            ValueError: features not rank 2 or with NaN/Inf, k larger than N, or an
                init array with another D than the features.

        Example:
        >>> KMeans(2, init=[[0.0], [1.0]]).fit([[0.0], [0.2], [3.0]]).labels_.tolist()
        [0, 0, 1]
        """
        x = _as_features(features)
        n, dim = x.shape
        k = self.num_clusters
        if k > n:
            raise ValueError(f"k={k} is larger than the number of points n={n}; ask "
                             f"for fewer clusters or give more points.")
        mean = tf.reduce_mean(x, 0)
        x = x - mean
        tol_abs = self.tol * tf.reduce_mean(tf.square(x))  # tol x mean variance
        if isinstance(self.init, str):
            trials = self.n_local_trials or 2 + int(math.log(k))
            indices = _compiled(_kmeans_plusplus, self.jit_compile)(
                x, _seed_key(self.seed, 1), k, trials)
            centres = tf.gather(x, indices)
        else:
            if self.init.shape[1] != dim:
                raise ValueError(f"init has shape {self.init.shape}, expected (k, D) = "
                                 f"({k}, {dim}) for features with D={dim}.")
            centres = tf.constant(self.init) - mean
        live = self.verbose and not self.jit_compile
        if self.batch_size is None:
            outputs = _compiled(_lloyd, self.jit_compile)(
                x, centres, tol_abs, self.max_iter, self.chunk_size, self.reseed_empty,
                live)
        else:
            outputs = _compiled(_minibatch, self.jit_compile)(
                x, centres, _seed_key(self.seed, 2), tol_abs,
                tf.constant(self.tol, tf.float64), self.max_iter,
                self.batch_size, self.chunk_size, self.reseed_empty, live)
        centres, labels, inertia, sizes, n_iter, reseeded, history = outputs
        self.cluster_centers_ = (centres + mean).numpy()
        self.labels_ = labels.numpy().astype(np.int64)
        self.inertia_ = float(inertia)
        self.n_iter_ = int(n_iter)
        self.cluster_sizes_ = sizes.numpy().astype(np.int64)
        self.empty_reseeded_ = int(reseeded)
        self.history_ = history.numpy()[:self.n_iter_]
        if self.verbose and not live:
            for i, value in enumerate(self.history_):
                print(f"k-means iteration {i + 1} inertia {value:.6g}")
        if self.verbose:
            print(f"k-means: {self.n_iter_} iterations, inertia {self.inertia_:.6g}, "
                  f"{self.empty_reseeded_} empty clusters re-seeded, cluster sizes "
                  f"{self.cluster_sizes_.min()}..{self.cluster_sizes_.max()}")
        return self

    def _centres(self):
        if self.cluster_centers_ is None:
            raise ValueError("This KMeans is not fitted yet: call fit(features) first.")
        return self.cluster_centers_

    def _centred(self, features):
        """Features and centres shifted by the centres' mean (distances unchanged,
        less cancellation), checked against the fitted D."""
        centres = tf.constant(self._centres())
        x = _as_features(features)
        if x.shape[1] != centres.shape[1]:
            raise ValueError(f"features have D={x.shape[1]} dimensions, the fitted "
                             f"centres {centres.shape[1]}.")
        offset = tf.reduce_mean(centres, 0)
        return x - offset, centres - offset

    def predict(self, features):
        """Index of the nearest fitted centre of every point (chunked).

        Args:
            features: (N, D) array.

        Returns:
            int64 numpy array (N,).

        Raises:
            ValueError: not fitted, bad features or another D than the centres.

        Example:
        >>> km = KMeans(2, init=[[0.0], [4.0]]).fit([[0.0], [1.0], [4.0]])
        >>> km.predict([[3.0], [-1.0]]).tolist()
        [1, 0]
        """
        x, centres = self._centred(features)
        labels = _compiled(_predict, self.jit_compile)(x, centres, self.chunk_size)
        return labels.numpy().astype(np.int64)

    def transform(self, features, squared=False):
        """Distances (N, k) of every point to every fitted centre (chunked).

        Args:
            features: (N, D) array.
            squared: return squared Euclidean distances instead of distances.

        Returns:
            float32 numpy array (N, k).

        Raises:
            ValueError: not fitted, bad features or another D than the centres.

        Example:
        >>> km = KMeans(2, init=[[0.0], [4.0]]).fit([[0.0], [1.0], [4.0]])
        >>> km.transform([[3.0]], squared=True).tolist()
        [[6.25, 1.0]]
        """
        x, centres = self._centred(features)
        dist = _compiled(_distances, self.jit_compile)(x, centres, self.chunk_size)
        return (dist if squared else tf.sqrt(dist)).numpy()

    def fit_predict(self, features):
        """`fit(features)` and return `labels_`.

        Args:
            features: (N, D) array.

        Returns:
            int64 numpy array (N,).

        Raises:
            ValueError: as `fit`.

        Example:
        >>> KMeans(2, init=[[0.0], [1.0]]).fit_predict([[3.0], [0.0]]).tolist()
        [1, 0]
        """
        return self.fit(features).labels_


def kmeans(features, num_clusters, **kwargs):
    """`KMeans(num_clusters, **kwargs).fit(features)`: the fitted model.

    Args:
        features: (N, D) array.
        num_clusters: k.
        **kwargs: other `KMeans` arguments.

    Returns:
        The fitted `KMeans`.

    Raises:
        ValueError: as `KMeans` and `KMeans.fit`.

    Example:
    >>> kmeans([[0.0], [0.5], [9.0], [9.5]], 2).cluster_sizes_.tolist()
    [2, 2]
    """
    return KMeans(num_clusters, **kwargs).fit(features)


def _covariance(x, mean, chunk_size):
    dim = x.shape[1]

    def fn(blocks):
        centred = blocks[0] - mean
        return (), (tf.matmul(centred, centred, transpose_a=True),)

    _, (scatter,) = _map_chunks(fn, (x,), chunk_size, (tf.zeros([dim, dim]),))
    return scatter / (x.shape[0] - 1)


def _whiten(x, mean, projection, chunk_size, normalize):
    def fn(blocks):
        y = tf.matmul(blocks[0] - mean, projection)
        return ((l2_normalize(y) if normalize else y),), ()

    return _map_chunks(fn, (x,), chunk_size)[0][0]


class PCAWhitening:
    """PCA to `dim` components, whitened, then (optionally) L2-normalised rows.

    The preprocessing of DeepCluster (Caron et al. 2018) and ClusterFit (Yan et al.
    2020) before k-means. `fit` computes the mean and the covariance (ddof=1, summed
    over chunks of `chunk_size` rows, so memory stays O(D^2 + chunk_size x D)),
    and its eigenvectors by `tf.linalg.eigh` (in float64; D x D only). `transform`
    centres, projects on the `dim` leading eigenvectors and divides component i by
    sqrt(explained_variance_[i] + eps), so the transformed fitting data have
    covariance ~ identity; then each row is divided by its norm. Each component's
    sign is fixed so that its largest-magnitude entry is positive.

    `dim` must not exceed D nor N - 1 (the rank of the covariance: beyond it the
    eigenvalues are rounding noise that whitening would blow up): a larger `dim`
    raises ValueError rather than being clamped quietly; `dim=None` takes
    min(D, N - 1).

    Args:
        dim: components kept, or None.
        eps: added to the eigenvalues before the square root (> 0).
        l2_normalize: L2-normalise the whitened rows.
        chunk_size: rows per block of the covariance and of `transform`.

    Attributes (after `fit`):
        mean_: (D,) float32 numpy.
        components_: (D, dim) float32 numpy, orthonormal columns, leading first.
        explained_variance_: (dim,) float32 numpy, eigenvalues, decreasing.

    Raises:
        ValueError: on construction for dim < 1, eps <= 0 or chunk_size < 1.

    Example:
    >>> x = np.array([[0.0, 0.0], [2.0, 0.1], [4.0, 0.0], [6.0, -0.1]])
    >>> pca = PCAWhitening(dim=1, l2_normalize=False).fit(x)
    >>> np.round(pca.components_.astype(float), 2).tolist()
    [[1.0], [-0.02]]
    >>> np.round(pca.explained_variance_.astype(float), 2).tolist()
    [6.67]
    >>> np.round(PCAWhitening(dim=1).fit_transform(x), 3).ravel().tolist()
    [-1.0, -1.0, 1.0, 1.0]
    """

    def __init__(self, dim=256, eps=1e-5, l2_normalize=True, chunk_size=4096):
        self.dim = _check_int(dim, "dim", allow_none=True)
        if not (isinstance(eps, (int, float, np.floating)) and eps > 0):
            raise ValueError(f"eps must be a number > 0, got {eps!r}.")
        self.eps = float(eps)
        self.l2_normalize = bool(l2_normalize)
        self.chunk_size = _check_int(chunk_size, "chunk_size")
        self.mean_ = self.components_ = self.explained_variance_ = None

    def get_config(self):
        """The constructor arguments.

        Returns:
            dict; `PCAWhitening.from_config(config)` builds an unfitted equal one.

        Example:
        >>> PCAWhitening.from_config(PCAWhitening(dim=8).get_config()).dim
        8
        """
        return {"dim": self.dim, "eps": self.eps, "l2_normalize": self.l2_normalize,
                "chunk_size": self.chunk_size}

    @classmethod
    def from_config(cls, config):
        """A PCAWhitening built from `get_config()` output.

        Args:
            config: dict of constructor arguments.

        Returns:
            An unfitted `PCAWhitening`.

        Example:
        >>> PCAWhitening.from_config({"dim": 2, "eps": 1.0}).eps
        1.0
        """
        return cls(**config)

    def to_dict(self):
        """Config plus the fitted arrays as lists, JSON-ready.

        Returns:
            dict with "config", "mean", "components", "explained_variance".

        Raises:
            ValueError: if not fitted.

        Example:
        >>> x = np.array([[0.0, 1.0], [1.0, 0.0], [2.0, 2.0]])
        >>> pca = PCAWhitening(dim=2).fit(x)
        >>> bool(np.allclose(PCAWhitening.from_dict(pca.to_dict()).transform(x),
        ...                  pca.transform(x)))
        True
        """
        self._fitted()
        return {"config": self.get_config(), "mean": self.mean_.tolist(),
                "components": self.components_.tolist(),
                "explained_variance": self.explained_variance_.tolist()}

    @classmethod
    def from_dict(cls, state):
        """A fitted PCAWhitening from `to_dict()` output.

        Args:
            state: dict from `to_dict`.

        Returns:
            `PCAWhitening` ready to `transform`.

        Example:
        >>> state = {"config": {"dim": 1, "l2_normalize": False}, "mean": [1.0],
        ...          "components": [[1.0]], "explained_variance": [3.99999]}
        >>> PCAWhitening.from_dict(state).transform([[5.0]]).round(3).tolist()
        [[2.0]]
        """
        model = cls.from_config(state["config"])
        model.mean_ = np.asarray(state["mean"], np.float32)
        model.components_ = np.asarray(state["components"], np.float32)
        model.explained_variance_ = np.asarray(state["explained_variance"], np.float32)
        return model

    def fit(self, features):
        """Fits the mean and the leading eigenvectors of the covariance.

        Args:
            features: (N, D) array, N >= 2.

        Returns:
            self.

        Raises:
            ValueError: bad features, N < 2, or dim larger than D or N - 1.

        Example:
        >>> PCAWhitening(dim=None).fit(np.eye(3)).components_.shape
        (3, 2)
        """
        x = _as_features(features)
        n, d = x.shape
        if n < 2:
            raise ValueError(f"PCAWhitening needs at least 2 points, got n={n}.")
        dim = min(d, n - 1) if self.dim is None else self.dim
        if dim > d:
            raise ValueError(f"dim={dim} is larger than the feature dimension D={d}; "
                             f"pass dim <= {d} or dim=None.")
        if dim > n - 1:
            raise ValueError(f"dim={dim} is larger than n - 1={n - 1}, the largest "
                             f"rank of the covariance of n={n} points; pass dim <= "
                             f"{n - 1}, dim=None or more points.")
        mean = tf.reduce_mean(x, 0)
        covariance = _compiled(_covariance)(x, mean, self.chunk_size)
        values, vectors = tf.linalg.eigh(tf.cast(covariance, tf.float64))
        values, vectors = values[::-1][:dim], vectors[:, ::-1][:, :dim]
        largest = tf.gather(vectors, tf.argmax(tf.abs(vectors), 0), batch_dims=0)
        signs = tf.sign(tf.linalg.diag_part(largest))  # never 0 for a unit vector
        self.mean_ = mean.numpy()
        self.components_ = tf.cast(vectors * signs, tf.float32).numpy()
        # Eigenvalues of a PSD matrix below 0 are rounding; whitening needs >= 0.
        self.explained_variance_ = tf.cast(tf.maximum(values, 0.0), tf.float32).numpy()
        return self

    def _fitted(self):
        if self.components_ is None:
            raise ValueError("This PCAWhitening is not fitted yet: call fit(features) "
                             "first.")

    def transform(self, features):
        """Whitened (and optionally L2-normalised) features.

        Args:
            features: (N, D) array with the fitted D.

        Returns:
            float32 numpy array (N, dim).

        Raises:
            ValueError: not fitted, bad features or another D.

        Example:
        >>> pca = PCAWhitening(dim=1, eps=1e-9, l2_normalize=False).fit([[0.0], [2.0]])
        >>> pca.transform([[3.0]]).astype(float).round(3).tolist()
        [[1.414]]
        """
        self._fitted()
        x = _as_features(features)
        if x.shape[1] != self.components_.shape[0]:
            raise ValueError(f"features have D={x.shape[1]} dimensions, the fitted "
                             f"PCA {self.components_.shape[0]}.")
        projection = self.components_ / np.sqrt(self.explained_variance_ + self.eps)
        return _compiled(_whiten)(x, tf.constant(self.mean_), tf.constant(projection),
                                  self.chunk_size, self.l2_normalize).numpy()

    def fit_transform(self, features):
        """`fit(features)` then `transform(features)`.

        Args:
            features: (N, D) array.

        Returns:
            float32 numpy array (N, dim).

        Raises:
            ValueError: as `fit`.

        Example:
        >>> PCAWhitening(dim=1).fit_transform([[0.0, 0.0], [1.0, 1.0]]).shape
        (2, 1)
        """
        return self.fit(features).transform(features)


def pca_whiten(features, dim=256, eps=1e-5, l2_normalize=True):
    """`PCAWhitening(dim, eps, l2_normalize).fit_transform(features)`.

    To apply the same whitening to other data, keep a fitted `PCAWhitening`.

    Args:
        features: (N, D) array.
        dim: components kept (<= min(D, N - 1)), or None for min(D, N - 1).
        eps: added to the eigenvalues before the square root.
        l2_normalize: L2-normalise the whitened rows.

    Returns:
        float32 numpy array (N, dim).

    Raises:
        ValueError: as `PCAWhitening` and its `fit`.

    Example:
    >>> y = pca_whiten(np.random.default_rng(0).normal(size=(50, 6)), dim=3)
    >>> y.shape, bool(np.allclose(np.linalg.norm(y, axis=1), 1.0))
    ((50, 3), True)
    """
    return PCAWhitening(dim, eps, l2_normalize).fit_transform(features)
