"""Jigsaw++ pretext training, then knowledge transfer by cluster classification.

    python examples/jigsaw_transfer.py --smoke            # a minute, embedded digits
    python examples/jigsaw_transfer.py --model_dir runs/jigsaw_example   # Tiny-ImageNet

1. Jigsaw++: a small VGG tile encoder learns which of P far-apart permutations
   shuffled the 3x3 tiles of each image (0-2 tiles replaced by tiles of another image).
2. Its features of every training image are PCA-whitened, L2-normalised and clustered
   with k-means; each image's pseudo-label is its nearest centre.
3. A different architecture (a CIFAR ResNet-32) learns to classify the clusters.
Both networks are scored by a linear probe on the true classes. Each stage is
resumable with --model_dir (checkpoints and metrics.json per stage).
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402

from ssl_zoo.training import TrainConfig, format_metrics, train_and_evaluate  # noqa: E402

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
flags.DEFINE_string("data", os.path.join(_REPO, "..", "shared", "data",
                                         "tiny-imagenet-200-subset.zip"),
                    "Image folders / zip (train + val splits), or a tfds name.")
flags.DEFINE_bool("smoke", False, "A short run on the embedded digits.")
flags.DEFINE_integer("num_permutations", 100, "Jigsaw permutation set size P.")
flags.DEFINE_integer("num_clusters", 400, "k of k-means.")
flags.DEFINE_integer("pca_dim", 128, "PCA-whitening dimensions before k-means.")
flags.DEFINE_integer("pretext_steps", 3000, "Jigsaw training steps.")
flags.DEFINE_integer("transfer_steps", 2000, "Cluster-classification training steps.")
flags.DEFINE_integer("batch_size", 64, "Batch size.")
flags.DEFINE_string("model_dir", None, "Root of both stages' checkpoints (resumable).")
FLAGS = flags.FLAGS


def _stage_dir(name):
    return os.path.join(FLAGS.model_dir, name) if FLAGS.model_dir else None


def main(_):
    if FLAGS.smoke:
        data = dict(dataset="digits", max_train_examples=480, max_test_examples=200)
        pretext_steps, transfer_steps, batch = 30, 30, 32
        permutations, clusters, pca_dim, width = 24, 20, 16, 0.25
    else:
        data = dict(dataset=FLAGS.data, test_split="val")
        pretext_steps, transfer_steps = FLAGS.pretext_steps, FLAGS.transfer_steps
        batch, width = FLAGS.batch_size, 0.5
        permutations, clusters, pca_dim = (FLAGS.num_permutations, FLAGS.num_clusters,
                                           FLAGS.pca_dim)
    epochs = 3

    print("== 1. Jigsaw++ pretext")
    pretext_dir = _stage_dir("jigsaw") or "/tmp/ssl_zoo_jigsaw_example"
    pretext = train_and_evaluate(TrainConfig(
        method="jigsaw", backbone="vgg_tile", width=width, batch_size=batch,
        epochs=epochs, steps_per_epoch=max(1, pretext_steps // epochs),
        model_dir=pretext_dir, verbose=2,
        method_kwargs={"num_permutations": permutations}, **data))
    print(format_metrics(pretext["metrics"]))

    print("== 2-3. k-means on its features, a ResNet-32 classifies the clusters")
    transfer = train_and_evaluate(TrainConfig(
        method="cluster_classification", backbone="resnet32_cifar", width=width,
        batch_size=batch, epochs=epochs, steps_per_epoch=max(1, transfer_steps // epochs),
        model_dir=_stage_dir("cluster_classification"), verbose=2,
        method_kwargs={"teacher": os.path.join(pretext_dir, "model.keras"),
                       "num_clusters": clusters, "clustering": {"pca_dim": pca_dim}},
        **data))
    print(format_metrics(transfer["metrics"]))
    clustering = transfer["details"]["clustering"]
    print(f"clusters: NMI vs true classes {clustering['nmi']:.4f}, sizes "
          f"{clustering['cluster_size_min']}..{clustering['cluster_size_max']}")
    print(f"linear probe (true classes): Jigsaw++ tile encoder "
          f"{pretext['metrics']['linear_probe_accuracy']:.4f}, transferred ResNet-32 "
          f"{transfer['metrics']['linear_probe_accuracy']:.4f}")


if __name__ == "__main__":
    app.run(main)
