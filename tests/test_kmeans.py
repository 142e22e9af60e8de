"""ssl_zoo.evaluation.kmeans: k-means against a numpy Lloyd and scikit-learn, separated
blobs recovered, k-means++, chunking, empty clusters, mini-batch, PCA whitening against
numpy eigh, determinism, strategy scope / eager / XLA, and the named errors."""

import numpy as np
import pytest
import tensorflow as tf

from ssl_zoo.evaluation.kmeans import (KMeans, PCAWhitening, kmeans, kmeans_plusplus,
                                       l2_normalize, pca_whiten)


def _blobs(num_blobs=5, per_blob=60, dim=5, distance=20.0, std=1.0, seed=0):
    """Points around `distance` x the first unit vectors, shuffled; (x, true labels)."""
    rng = np.random.default_rng(seed)
    truth = rng.permutation(np.repeat(np.arange(num_blobs), per_blob))
    centres = distance * np.eye(num_blobs, dim)
    x = centres[truth] + std * rng.normal(size=(len(truth), dim))
    return x.astype(np.float32), truth


def _same_partition(a, b):
    """True when labels a and b are the same partition up to a renaming."""
    table = np.zeros((a.max() + 1, b.max() + 1), np.int64)
    np.add.at(table, (a, b), 1)
    return bool(np.all((table > 0).sum(0) == 1) and np.all((table > 0).sum(1) == 1))


def _reference_lloyd(x, centres, max_iter, tol):
    """Lloyd in float64 numpy with sklearn's stopping rule, then a last assignment."""
    x, c = x.astype(np.float64), centres.astype(np.float64)
    tol_abs = tol * np.mean(np.var(x, axis=0))
    old = None
    for i in range(max_iter):
        labels = ((x[:, None] - c[None]) ** 2).sum(-1).argmin(1)
        assert len(np.unique(labels)) == len(c), "reference assumes no empty cluster"
        new = np.stack([x[labels == j].mean(0) for j in range(len(c))])
        shift, c = ((new - c) ** 2).sum(), new
        if (old is not None and np.array_equal(labels, old)) or shift <= tol_abs:
            break
        old = labels
    dist = ((x[:, None] - c[None]) ** 2).sum(-1)
    return c, dist.argmin(1), dist.min(1).sum(), i + 1


# ------------------------------------------------------------------ Lloyd / k-means++
def test_separated_blobs_are_recovered_exactly():
    x, truth = _blobs()
    model = KMeans(5, seed=0).fit(x)
    assert _same_partition(truth, model.labels_)
    np.testing.assert_array_equal(model.cluster_sizes_, np.bincount(model.labels_))
    # a Lloyd fixed point: every centre is the mean of its points, inertia matches
    means = np.stack([x[model.labels_ == j].mean(0) for j in range(5)])
    np.testing.assert_allclose(model.cluster_centers_, means, atol=1e-4)
    inertia = ((x - model.cluster_centers_[model.labels_]) ** 2).sum()
    assert model.inertia_ == pytest.approx(inertia, rel=1e-5)
    assert model.cluster_centers_.dtype == np.float32
    assert model.labels_.dtype == np.int64
    assert model.empty_reseeded_ == 0
    # Lloyd never increases the inertia; history_ has one value per iteration
    assert len(model.history_) == model.n_iter_ >= 1
    assert np.all(np.diff(model.history_) <= 1e-3 * model.history_[0])
    assert model.history_[-1] >= model.inertia_ * (1 - 1e-5)
    # the fit starts from kmeans_plusplus with the same seed: history_[0] is the
    # inertia of those centres
    start, _ = kmeans_plusplus(x, 5, seed=0)
    first = ((x[:, None].astype(np.float64) - start[None]) ** 2).sum(-1).min(1).sum()
    assert model.history_[0] == pytest.approx(first, rel=1e-4)


def test_lloyd_matches_numpy_reference_and_sklearn():
    # Overlapping blobs and a poor start (the first 5 points): several iterations.
    x, _ = _blobs(num_blobs=5, per_blob=60, dim=4, distance=3.0, std=1.0, seed=1)
    init = x[:5].copy()
    tol = 1e-4
    centres, labels, inertia, n_iter = _reference_lloyd(x, init, 100, tol)
    assert n_iter >= 4  # the update and the stopping rule are exercised
    model = KMeans(5, init=init, max_iter=100, tol=tol).fit(x)
    assert model.n_iter_ == n_iter
    np.testing.assert_array_equal(model.labels_, labels)
    np.testing.assert_allclose(model.cluster_centers_, centres, rtol=1e-4, atol=1e-4)
    assert model.inertia_ == pytest.approx(inertia, rel=1e-4)
    # stopping after 2 iterations gives the reference's state after 2 iterations
    centres_2, _, inertia_2, _ = _reference_lloyd(x, init, 2, tol)
    early = KMeans(5, init=init, max_iter=2, tol=tol).fit(x)
    assert early.n_iter_ == 2
    np.testing.assert_allclose(early.cluster_centers_, centres_2, rtol=1e-4, atol=1e-4)
    assert early.inertia_ == pytest.approx(inertia_2, rel=1e-4)

    sklearn_cluster = pytest.importorskip("sklearn.cluster")
    theirs = sklearn_cluster.KMeans(5, init=init.astype(np.float64), n_init=1,
                                    algorithm="lloyd", tol=tol, max_iter=100).fit(
                                        x.astype(np.float64))
    assert model.inertia_ == pytest.approx(theirs.inertia_, rel=1e-4)
    assert model.n_iter_ == theirs.n_iter_
    np.testing.assert_array_equal(model.labels_, theirs.labels_)


def test_kmeans_plusplus_distinct_data_points_deterministic_per_seed():
    x, truth = _blobs()
    chosen = {}
    for seed in (0, 1, 2):
        centres, indices = kmeans_plusplus(x, 5, seed=seed)
        assert len(set(indices.tolist())) == 5
        np.testing.assert_array_equal(centres, x[indices])
        # D^2 sampling spreads the centres: one per blob (uniform draws put two
        # centres in one blob 96% of the time)
        assert sorted(truth[indices]) == [0, 1, 2, 3, 4]
        again, indices_again = kmeans_plusplus(x, 5, seed=seed)
        np.testing.assert_array_equal(indices, indices_again)
        chosen[seed] = tuple(indices)
    assert len(set(chosen.values())) == 3
    # plain k-means++ (one trial) and k = N: every point once
    _, all_points = kmeans_plusplus(x[:12], 12, n_local_trials=1, seed=3)
    assert sorted(all_points) == list(range(12))


def test_fit_is_deterministic_for_a_seed():
    x, _ = _blobs(num_blobs=5, distance=3.0, seed=2)
    a, b = KMeans(8, seed=5).fit(x), KMeans(8, seed=5).fit(x)
    np.testing.assert_array_equal(a.cluster_centers_, b.cluster_centers_)
    np.testing.assert_array_equal(a.labels_, b.labels_)
    assert a.inertia_ == b.inertia_
    other = KMeans(8, seed=6).fit(x)
    assert not np.array_equal(a.cluster_centers_, other.cluster_centers_)


@pytest.mark.parametrize("chunk_size", [7, 100])  # a remainder chunk / none
def test_chunking_does_not_change_the_result(chunk_size):
    x, _ = _blobs(num_blobs=5, dim=4, distance=3.0, seed=1)
    whole = KMeans(5, init=x[:5], chunk_size=10000).fit(x)
    chunked = KMeans(5, init=x[:5], chunk_size=chunk_size).fit(x)
    np.testing.assert_array_equal(chunked.labels_, whole.labels_)
    assert chunked.n_iter_ == whole.n_iter_
    assert chunked.inertia_ == pytest.approx(whole.inertia_, rel=1e-6)
    np.testing.assert_allclose(chunked.cluster_centers_, whole.cluster_centers_,
                               atol=1e-5)
    np.testing.assert_array_equal(chunked.predict(x), whole.predict(x))
    np.testing.assert_allclose(chunked.transform(x), whole.transform(x), rtol=1e-5,
                               atol=1e-4)


def test_empty_cluster_is_reseeded():
    x, truth = _blobs()
    # four centres on four blobs, the fifth far from every point: it gets no point
    init = np.stack([x[truth == j][0] for j in range(4)] + [np.full(5, 1000.0)])
    model = KMeans(5, init=init).fit(x)
    assert model.empty_reseeded_ >= 1
    assert np.all(model.cluster_sizes_ > 0)
    assert _same_partition(truth, model.labels_)  # re-seeded into the uncovered blob

    kept = KMeans(5, init=init, reseed_empty=False).fit(x)
    assert kept.empty_reseeded_ == 0 and kept.cluster_sizes_[4] == 0
    np.testing.assert_allclose(kept.cluster_centers_[4], init[4])


def test_empty_clusters_reseeded_like_sklearn():
    sklearn_cluster = pytest.importorskip("sklearn.cluster")
    x, truth = _blobs()
    # two far centres: both empty, each takes one of the two farthest points, which
    # leave their old clusters (sklearn's _relocate_empty_clusters)
    init = np.stack([x[truth == j][0] for j in range(3)]
                    + [np.full(5, 1000.0), np.full(5, -1000.0)])
    for max_iter in (1, 100):
        ours = KMeans(5, init=init, max_iter=max_iter).fit(x)
        theirs = sklearn_cluster.KMeans(5, init=init, n_init=1, algorithm="lloyd",
                                        max_iter=max_iter).fit(x.astype(np.float64))
        np.testing.assert_allclose(ours.cluster_centers_, theirs.cluster_centers_,
                                   rtol=1e-5, atol=1e-4)
        np.testing.assert_array_equal(ours.labels_, theirs.labels_)
        assert ours.inertia_ == pytest.approx(theirs.inertia_, rel=1e-4)
        assert ours.empty_reseeded_ == 2 and np.all(ours.cluster_sizes_ > 0)


def test_minibatch_close_to_lloyd_and_deterministic():
    x, _ = _blobs(num_blobs=8, per_blob=250, dim=8, distance=6.0, std=1.5, seed=3)
    full = KMeans(8, seed=0).fit(x)
    mini = KMeans(8, batch_size=100, max_iter=30, seed=0).fit(x)
    assert mini.inertia_ <= 1.1 * full.inertia_
    assert mini.n_iter_ < 30  # stopped once the epoch inertia stopped improving
    assert len(mini.history_) == mini.n_iter_
    assert mini.inertia_ == pytest.approx(
        ((x - mini.cluster_centers_[mini.labels_]) ** 2).sum(), rel=1e-5)
    again = KMeans(8, batch_size=100, max_iter=30, seed=0).fit(x)
    np.testing.assert_array_equal(mini.cluster_centers_, again.cluster_centers_)


def test_minibatch_centre_is_the_running_mean():
    # Per-centre learning rate 1/(points seen): with one cluster the centre after an
    # epoch of 200 batches of 10 is the mean of the 2000 drawn points (error about
    # 1/sqrt(2000) = 0.02 per coordinate), not the last batch's mean (about 0.3).
    x = np.random.default_rng(5).normal(size=(2000, 2)).astype(np.float32)
    model = KMeans(1, batch_size=10, max_iter=1, seed=0).fit(x)
    assert model.n_iter_ == 1
    np.testing.assert_allclose(model.cluster_centers_[0], x.mean(0), atol=0.08)


def test_predict_transform_and_serialisation():
    x, _ = _blobs(dim=3, distance=10.0)
    model = kmeans(x, 5, seed=1)
    np.testing.assert_array_equal(model.predict(x), model.labels_)
    squared = ((x[:, None].astype(np.float64) - model.cluster_centers_[None]) ** 2
               ).sum(-1)
    np.testing.assert_allclose(model.transform(x, squared=True), squared, rtol=1e-4,
                               atol=1e-3)
    np.testing.assert_allclose(model.transform(x), np.sqrt(squared), rtol=1e-4,
                               atol=1e-3)
    np.testing.assert_array_equal(KMeans(5, seed=1).fit_predict(x), model.labels_)
    restored = KMeans.from_dict(model.to_dict())
    np.testing.assert_array_equal(restored.predict(x), model.labels_)
    assert KMeans.from_config(model.get_config()).get_config() == model.get_config()


def _small_blobs():
    return _blobs(num_blobs=3, per_blob=15, dim=3, distance=4.0, seed=4)[0]


def test_same_result_in_a_strategy_scope(two_replica_strategy):
    x = _small_blobs()
    reference = KMeans(3, seed=0, max_iter=20).fit(x)
    with two_replica_strategy.scope():
        scoped = KMeans(3, seed=0, max_iter=20).fit(x)
    np.testing.assert_array_equal(scoped.cluster_centers_, reference.cluster_centers_)


def test_same_result_with_xla():
    # unstructured data and few iterations: the result depends on the seeding, so
    # XLA must draw the same random numbers (Philox integers) as the plain graph
    x = np.random.default_rng(6).normal(size=(60, 3)).astype(np.float32)
    for options in ({"max_iter": 2}, {"batch_size": 8, "max_iter": 2}):
        reference = KMeans(6, seed=0, **options).fit(x)
        xla = KMeans(6, seed=0, jit_compile=True, **options).fit(x)
        np.testing.assert_array_equal(xla.labels_, reference.labels_)
        np.testing.assert_allclose(xla.cluster_centers_, reference.cluster_centers_,
                                   atol=1e-5)
        np.testing.assert_allclose(xla.history_, reference.history_, rtol=1e-5)


def test_same_result_eagerly():
    x = _small_blobs()
    reference = KMeans(3, seed=0, max_iter=20).fit(x)
    tf.config.run_functions_eagerly(True)
    try:
        eager = KMeans(3, seed=0, max_iter=20).fit(x)
        eager_mini = KMeans(3, seed=0, batch_size=16, max_iter=3).fit(x)
    finally:
        tf.config.run_functions_eagerly(False)
    np.testing.assert_array_equal(eager.labels_, reference.labels_)
    np.testing.assert_allclose(eager.cluster_centers_, reference.cluster_centers_,
                               atol=1e-5)
    graph_mini = KMeans(3, seed=0, batch_size=16, max_iter=3).fit(x)
    np.testing.assert_allclose(eager_mini.cluster_centers_, graph_mini.cluster_centers_,
                               atol=1e-5)


# ------------------------------------------------------------------- PCA whitening
def _correlated(n=500, dim=6, seed=0):
    rng = np.random.default_rng(seed)
    mixing = rng.normal(size=(dim, dim)) + 2 * np.eye(dim)
    return (rng.normal(size=(n, dim)) @ mixing + 5.0).astype(np.float32)


def test_pca_whitening_matches_numpy_eigh_and_whitens():
    x = _correlated()
    pca = PCAWhitening(dim=4, l2_normalize=False, chunk_size=64)
    y = pca.fit_transform(x)
    assert y.shape == (500, 4) and y.dtype == np.float32
    np.testing.assert_allclose(np.cov(y, rowvar=False), np.eye(4), atol=1e-3)

    covariance = np.cov(x.astype(np.float64), rowvar=False)
    values, vectors = np.linalg.eigh(covariance)
    values, vectors = values[::-1][:4], vectors[:, ::-1][:, :4]
    np.testing.assert_allclose(pca.explained_variance_, values, rtol=1e-4)
    np.testing.assert_allclose(pca.mean_, x.astype(np.float64).mean(0), rtol=1e-5)
    reference = (x - x.mean(0)) @ vectors / np.sqrt(values + pca.eps)
    signs = np.sign((reference * y).sum(0))  # eigenvectors are defined up to sign
    np.testing.assert_allclose(y, reference * signs, atol=1e-3)
    np.testing.assert_allclose(np.abs(pca.components_), np.abs(vectors), atol=1e-4)
    # the sign convention: each component's largest-magnitude entry is positive
    largest = pca.components_[np.abs(pca.components_).argmax(0), range(4)]
    assert np.all(largest > 0)

    whole = PCAWhitening(dim=4, l2_normalize=False, chunk_size=4096).fit(x)
    np.testing.assert_allclose(whole.transform(x), y, atol=1e-4)
    restored = PCAWhitening.from_dict(pca.to_dict())
    np.testing.assert_allclose(restored.transform(x[:10]), y[:10], atol=1e-6)


def test_pca_whitening_l2_normalised_rows():
    x = _correlated(seed=1)
    y = pca_whiten(x, dim=3)
    np.testing.assert_allclose(np.linalg.norm(y, axis=1), 1.0, atol=1e-5)
    unnormalised = PCAWhitening(dim=3, l2_normalize=False).fit_transform(x)
    norms = np.linalg.norm(unnormalised, axis=1, keepdims=True)
    np.testing.assert_allclose(y, unnormalised / norms, atol=1e-5)
    np.testing.assert_allclose(l2_normalize(unnormalised).numpy(), y, atol=1e-5)
    assert PCAWhitening(dim=None).fit(x[:4]).components_.shape == (6, 3)  # n - 1


# ------------------------------------------------------------------- named errors
# (one test per group, cases in a loop: each test pays the conftest's clear_session)
def test_fit_named_errors():
    nan_row_7 = np.where(np.arange(20).reshape(10, 2) == 15, np.nan, 1.0)
    inf_row_2 = np.where(np.arange(20).reshape(10, 2) == 4, np.inf, 1.0)
    cases = [
        (KMeans(10), np.zeros((5, 2)), "k=10 is larger than the number of points n=5"),
        (KMeans(2), np.zeros((3, 4, 5)), "must be a rank-2"),
        (KMeans(2), np.zeros(6), "must be a rank-2"),
        (KMeans(2), nan_row_7, "features contain NaN/Inf at row 7"),
        (KMeans(2), inf_row_2, "features contain NaN/Inf at row 2"),
        (KMeans(2, init=np.zeros((2, 3))), np.zeros((5, 2)),
         r"init has shape \(2, 3\), expected \(k, D\) = \(2, 2\)"),
    ]
    for model, features, message in cases:
        with pytest.raises(ValueError, match=message):
            model.fit(features)
    with pytest.raises(ValueError, match="k=3 is larger than the number of points n=2"):
        kmeans_plusplus(np.zeros((2, 2)), 3)


def test_constructor_named_errors():
    cases = [
        ({"num_clusters": 0}, "num_clusters must be an integer >= 1"),
        ({"num_clusters": 2, "chunk_size": 0}, "chunk_size must be an integer >= 1"),
        ({"num_clusters": 2, "init": np.zeros((3, 2))}, r"init has shape \(3, 2\)"),
        ({"num_clusters": 2, "init": [[0.0, np.nan], [1.0, 1.0]]}, "init contains NaN"),
        ({"num_clusters": 2, "init": "random"}, "init must be 'k-means\\+\\+'"),
        ({"num_clusters": 2, "tol": -1.0}, "tol must be"),
        ({"num_clusters": 2, "batch_size": 0}, "batch_size must be"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ValueError, match=message):
            KMeans(**kwargs)
    for kwargs, message in [({"dim": 0}, "dim must be"), ({"eps": 0.0}, "eps must be"),
                            ({"chunk_size": 0}, "chunk_size must be")]:
        with pytest.raises(ValueError, match=message):
            PCAWhitening(**kwargs)


def test_pca_whitening_dim_too_large_raises():
    x = _correlated()
    with pytest.raises(ValueError,
                       match="dim=7 is larger than the feature dimension D=6"):
        PCAWhitening(dim=7).fit(x[:50])
    with pytest.raises(ValueError, match=r"dim=5 is larger than n - 1=3"):
        PCAWhitening(dim=5).fit(x[:4])
    with pytest.raises(ValueError, match="at least 2 points"):
        PCAWhitening(dim=None).fit(x[:1])


def test_predict_errors():
    with pytest.raises(ValueError, match="not fitted"):
        KMeans(2).predict(np.zeros((3, 2)))
    with pytest.raises(ValueError, match="not fitted"):
        PCAWhitening(2).transform(np.zeros((3, 2)))
    model = KMeans(1, init=[[0.0, 0.0]]).fit(np.zeros((3, 2)))
    with pytest.raises(ValueError, match="D=3 dimensions, the fitted centres 2"):
        model.predict(np.zeros((3, 3)))
    with pytest.raises(ValueError, match="NaN/Inf at row 0"):
        model.predict([[np.nan, 0.0]])
