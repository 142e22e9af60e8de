"""Jigsaw++ and knowledge transfer by cluster classification on real data, at a CPU
budget of about an hour on 2 cores.

Stages (each resumable under --work_dir; rerun the same command to continue):
1. pretext: `JigsawModel` (vgg_tile tile encoder) on Tiny-ImageNet train (64 px);
2. transfer: its features of Tiny-ImageNet train -> PCA-whitening -> L2 -> k-means;
   a CIFAR ResNet-32 (a different architecture) learns to classify the clusters;
3. probes: linear probes on frozen features, on CIFAR-10 (subsets) and on
   Tiny-ImageNet val, of a random-init tile encoder, the Jigsaw++ tile encoder, a
   random-init ResNet-32 and the transferred ResNet-32;
4. speed: our k-means against scikit-learn's KMeans on the same projected features
   and k (time and inertia); the puzzle generator's throughput against the Jigsaw
   training step's.
Results are written to --out after each stage.

    python benchmarks/jigsaw_transfer.py                  # documented budget (~1 h)
    python benchmarks/jigsaw_transfer.py --quick          # a few minutes
"""

import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, _REPO)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

_DATA = os.path.join(_REPO, "..", "shared", "data")
flags.DEFINE_string("tiny", os.path.join(_DATA, "tiny-imagenet-200-subset.zip"),
                    "Tiny-ImageNet archive (train + val).")
flags.DEFINE_string("cifar", os.path.join(_DATA, "cifar10-jpeg.zip"), "CIFAR-10 archive.")
flags.DEFINE_integer("num_permutations", 100, "Permutation set size P (the paper: 701-1000).")
flags.DEFINE_integer("pretext_steps", 4000, "Jigsaw training steps.")
flags.DEFINE_integer("transfer_steps", 2500, "Cluster-classification training steps.")
flags.DEFINE_integer("batch_size", 64, "Batch size of both trainings.")
flags.DEFINE_float("tile_width", 0.25, "vgg_tile width multiplier.")
flags.DEFINE_float("resnet_width", 0.5, "ResNet-32 width multiplier.")
flags.DEFINE_integer("num_clusters", 400, "k (Tiny-ImageNet here has 202 classes).")
flags.DEFINE_integer("pca_dim", 128, "PCA-whitening dimensions.")
flags.DEFINE_integer("transfer_image_size", 32, "Images are resized to this for the "
                     "ResNet (CIFAR ResNets are built for 32 px).")
flags.DEFINE_integer("cifar_train", 10000, "CIFAR-10 probe training subset.")
flags.DEFINE_integer("cifar_test", 5000, "CIFAR-10 probe test subset.")
flags.DEFINE_integer("probe_epochs", 30, "Linear-probe epochs (on cached features).")
flags.DEFINE_bool("quick", False, "Tiny budget for a smoke run.")
flags.DEFINE_integer("seed", 0, "Seed.")
flags.DEFINE_string("work_dir", os.path.join(_REPO, "runs", "jigsaw_transfer"),
                    "Per-stage model_dir (resumable).")
flags.DEFINE_string("out", os.path.join(_REPO, "benchmarks", "results",
                                        "jigsaw_transfer.json"), "Results file.")
FLAGS = flags.FLAGS


def _write(results):
    from ssl_zoo.utils.io import atomic_write_json
    os.makedirs(os.path.dirname(FLAGS.out), exist_ok=True)
    atomic_write_json(FLAGS.out, results)


def _load(path, split, image_size=None, n=None, seed=0):
    from ssl_zoo.data import load_arrays
    data = load_arrays(path, split=split, image_size=image_size)
    return data.random_subset(n, seed) if n else data


def _probe(encoder, train, test, name):
    from ssl_zoo.evaluation import linear_probe_evaluate
    start = time.time()
    out = linear_probe_evaluate(encoder, train, test, train.info.num_classes,
                                epochs=FLAGS.probe_epochs, batch_size=256, seed=FLAGS.seed)
    row = {"accuracy": out["accuracy"], "balanced_accuracy": out["balanced_accuracy"],
           "train_accuracy": out["train_accuracy"], "seconds": time.time() - start}
    print(f"  probe {name}: accuracy {row['accuracy']:.4f} (train "
          f"{row['train_accuracy']:.4f}, {row['seconds']:.0f} s)", flush=True)
    return row


def main(_):
    import keras

    from ssl_zoo.models import ClusterClassificationModel, JigsawModel
    from ssl_zoo.training import TrainConfig, train_and_evaluate

    results = {}
    if os.path.exists(FLAGS.out) and not FLAGS.quick:
        with open(FLAGS.out, encoding="utf-8") as f:
            results = json.load(f)
    quick = FLAGS.quick
    pretext_steps = 20 if quick else FLAGS.pretext_steps
    transfer_steps = 20 if quick else FLAGS.transfer_steps
    clusters = 50 if quick else FLAGS.num_clusters
    tiny_train_n = 2000 if quick else None
    work = FLAGS.work_dir + ("_quick" if quick else "")
    epochs = 1 if quick else 10
    results["budget"] = {
        "pretext_steps": pretext_steps, "transfer_steps": transfer_steps,
        "batch_size": FLAGS.batch_size, "num_permutations": FLAGS.num_permutations,
        "num_clusters": clusters, "pca_dim": FLAGS.pca_dim,
        "tile_encoder": f"vgg_tile x{FLAGS.tile_width}",
        "transfer_backbone": f"resnet32_cifar x{FLAGS.resnet_width} at "
                             f"{FLAGS.transfer_image_size} px",
        "cifar_probe": [FLAGS.cifar_train, FLAGS.cifar_test],
        "probe_epochs": FLAGS.probe_epochs, "machine": "2 CPU cores"}
    common = dict(dataset=FLAGS.tiny, test_split="val", batch_size=FLAGS.batch_size,
                  max_train_examples=tiny_train_n, max_test_examples=500 if quick else None,
                  seed=FLAGS.seed, verbose=2)

    # 1. pretext
    pretext_dir = os.path.join(work, "jigsaw")
    start = time.time()
    pretext = train_and_evaluate(TrainConfig(
        method="jigsaw", backbone="vgg_tile", width=FLAGS.tile_width, epochs=epochs,
        steps_per_epoch=max(1, pretext_steps // epochs), model_dir=pretext_dir,
        method_kwargs={"num_permutations": FLAGS.num_permutations}, **common))
    history = pretext["history"]
    results["pretext"] = {
        "seconds": time.time() - start,
        "train_loss": history.get("loss"), "train_accuracy": history.get("accuracy"),
        "tiny_val_linear_probe_accuracy": pretext["metrics"]["linear_probe_accuracy"]}
    _write(results)
    jigsaw = pretext["model"]

    # 2. cluster classification into a ResNet-32 (images resized for the ResNet)
    start = time.time()
    transfer = train_and_evaluate(TrainConfig(
        method="cluster_classification", backbone="resnet32_cifar",
        width=FLAGS.resnet_width, epochs=epochs, image_size=FLAGS.transfer_image_size,
        steps_per_epoch=max(1, transfer_steps // epochs),
        model_dir=os.path.join(work, "cluster_classification"),
        method_kwargs={"teacher": os.path.join(pretext_dir, "model.keras"),
                       "num_clusters": clusters,
                       "clustering": {"pca_dim": FLAGS.pca_dim, "seed": FLAGS.seed}},
        **common))
    clustering = dict(transfer["details"].get("clustering", {}))
    clustering.pop("cluster_sizes", None)
    results["transfer"] = {
        "seconds": time.time() - start, "clustering": clustering,
        "train_loss": transfer["history"].get("loss"),
        "train_accuracy": transfer["history"].get("accuracy"),
        "tiny_val_linear_probe_accuracy": transfer["metrics"]["linear_probe_accuracy"]}
    _write(results)
    resnet = transfer["model"]

    # 3. linear probes side by side
    keras.utils.set_random_seed(FLAGS.seed)
    random_tile = JigsawModel("vgg_tile", width=FLAGS.tile_width,
                              permutations=jigsaw.permutations)
    random_resnet = ClusterClassificationModel("resnet32_cifar", width=FLAGS.resnet_width,
                                               num_clusters=clusters)
    encoders = {"random_vgg_tile": random_tile, "jigsaw_vgg_tile": jigsaw,
                "random_resnet32": random_resnet, "transferred_resnet32": resnet}
    cifar_train = _load(FLAGS.cifar, "train", n=1000 if quick else FLAGS.cifar_train,
                        seed=FLAGS.seed)
    cifar_test = _load(FLAGS.cifar, "test", n=500 if quick else FLAGS.cifar_test,
                       seed=FLAGS.seed + 1)
    tiny_sets = {}
    for name, size in (("vgg", None), ("resnet", FLAGS.transfer_image_size)):
        tiny_sets[name] = (
            _load(FLAGS.tiny, "train", size, tiny_train_n, FLAGS.seed),
            _load(FLAGS.tiny, "val", size, 500 if quick else None, FLAGS.seed + 1))
    probes = results.setdefault("linear_probe", {})
    for name, encoder in encoders.items():
        row = probes.setdefault(name, {})
        if "cifar10" not in row:
            row["cifar10"] = _probe(encoder, cifar_train, cifar_test, f"{name} cifar10")
            _write(results)
        if "tiny_imagenet_val" not in row:
            train, val = tiny_sets["vgg" if "vgg" in name else "resnet"]
            row["tiny_imagenet_val"] = _probe(encoder, train, val, f"{name} tiny val")
            _write(results)

    # 4. speed: k-means vs scikit-learn on the projected features; generator vs step
    from ssl_zoo.evaluation import ClusterPseudoLabeler
    from jigsaw_generator import generator_throughput
    from kmeans_speed import compare_with_sklearn
    labeler = ClusterPseudoLabeler(clusters, pca_dim=FLAGS.pca_dim, seed=FLAGS.seed)
    labeler.fit(jigsaw, tiny_sets["vgg"][0])
    projected = labeler.features(jigsaw, tiny_sets["vgg"][0])
    results["kmeans_speed"] = compare_with_sklearn(projected, clusters, seed=FLAGS.seed)
    _write(results)
    throughput = generator_throughput(
        image_size=64, batch_size=FLAGS.batch_size, num_permutations=FLAGS.num_permutations,
        seconds=5 if quick else 20, images=tiny_sets["vgg"][0].images)
    step_rate = _jigsaw_step_rate(jigsaw, tiny_sets["vgg"][0], quick)
    results["generator"] = {**throughput, "training_puzzles_per_second": step_rate,
                            "generator_over_training": throughput["puzzles_per_s"]
                            / step_rate}
    _write(results)
    print(json.dumps({k: v for k, v in results.items() if k != "budget"}, indent=1,
                     default=str))


def _jigsaw_step_rate(model, data, quick):
    """Puzzles per second of the Jigsaw training step alone (on batches made up front,
    so the generator is not timed), measured on a copy of the trained model."""
    import keras

    from ssl_zoo.models import get_method
    from ssl_zoo.training import make_train_stream
    ds = make_train_stream(get_method("jigsaw"), data, FLAGS.batch_size, model=model)
    batches = [(x.numpy(), y.numpy()) for (x, y), _ in zip(ds, range(4))]
    trainee = model.__class__.from_config(model.get_config())
    trainee.compile(optimizer=keras.optimizers.SGD(0.001))
    for x, y in batches[:2]:
        trainee.train_on_batch(x, y)
    n = 5 if quick else 30
    start = time.time()
    for i in range(n):
        trainee.train_on_batch(*batches[i % len(batches)])
    return n * FLAGS.batch_size / (time.time() - start)


if __name__ == "__main__":
    app.run(main)
