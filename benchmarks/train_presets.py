"""Trains the shipped presets on the real CIFAR-10 and writes them to pretrained/.

    python benchmarks/train_presets.py --methods=sla --epochs=100 --train_examples=50000 \
        --model_dir=runs/presets        # resumable: rerun the same command after a kill
    python benchmarks/train_presets.py --recipe=milestone1 --arch=resnet32_cifar \
        --width=0.5 --epochs=8 --train_examples=10000    # the milestone-1 presets
    python benchmarks/train_presets.py --methods=supcon --batch_size=512 \
        --learning_rate=0.25 --warmup_epochs=10 --schedule=cosine ...  # SupCon's protocol

Presets are named `<arch>.<tag>` (`resnet32_cifar_a.sla_rotation_cifar10`). With
`--recipe=authors` (the default) each method trains with its registry recipe, which is
its authors' (SLA/supervised: SGD 0.1 without Nesterov, coupled L2 1e-4, x0.1 at 50/75
%, option-A ResNet-32, zero-padded crop); `--recipe=milestone1` is the recipe of the
first presets (Nesterov, decoupled weight decay, cosine, the reflect-padded weak view for
every method, SupCon's two views included).

Each preset records the command, the budget and the accuracy this script measured on
the whole CIFAR-10 test split and on the fixed slice that tests/test_presets.py checks
(every 20th test image: 500 images over all classes).
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, _REPO)

flags.DEFINE_string("data", os.path.join(_REPO, "..", "shared", "data", "cifar10-jpeg.zip"),
                    "CIFAR-10 archive.")
flags.DEFINE_list("methods", ["supervised", "sla", "supcon"], "Methods to train.")
flags.DEFINE_string("arch", None, "Backbone (default: the method's, resnet32_cifar_a for "
                    "supervised/SLA).")
flags.DEFINE_enum("recipe", "authors", ["authors", "milestone1"], "Optimizer recipe.")
flags.DEFINE_float("width", 1.0, "ResNet-32 width multiplier.")
flags.DEFINE_integer("epochs", 8, "Epochs.")
flags.DEFINE_integer("batch_size", 128, "Batch size (authors of SLA: 128).")
flags.DEFINE_integer("train_examples", 50000, "Training subset (random, seed 0).")
flags.DEFINE_float("learning_rate", None, "Peak learning rate (default: the recipe's; "
                   "the SupCon authors' is 0.5 at batch 1024, scaled linearly).")
flags.DEFINE_integer("warmup_epochs", None, "Linear warm-up epochs (default: the recipe's).")
flags.DEFINE_enum("schedule", None, ["step", "cosine"], "Learning-rate schedule (default: "
                  "the recipe's).")
flags.DEFINE_string("precision", "float32", "float32 | bfloat16.")
flags.DEFINE_string("model_dir", None, "Run directory root (resumable, step backups).")
flags.DEFINE_integer("backup_every", 200, "Steps between backups (with --model_dir).")
flags.DEFINE_integer("eval_epochs", 4, "Test accuracy every this many epochs (the "
                     "learning curve in the metadata; supcon: its features' kNN top-1).")
flags.DEFINE_string("out", os.path.join(_REPO, "pretrained"), "Presets directory.")
FLAGS = flags.FLAGS

SLICE_STEP = 20  # the fixed evaluation slice: test images 0, 20, 40, ...
TAGS = {"supervised": "supervised_cifar10", "sla": "sla_rotation_cifar10",
        "supcon": "supcon_cifar10"}
MILESTONE1 = {"learning_rate": 0.1, "nesterov": True, "weight_decay_mode": "decoupled",
              "schedule": "cosine"}
PAPERS = {
    "supervised": "He et al., Deep Residual Learning, CVPR 2016 (arXiv 1512.03385)",
    "sla": "Lee, Hwang & Shin, Self-supervised Label Augmentation via Input "
           "Transformations, ICML 2020 (arXiv 1910.05872)",
    "supcon": "Khosla et al., Supervised Contrastive Learning, NeurIPS 2020 "
              "(arXiv 2004.11362)",
}


def evaluation_slice(test):
    return test.subset(np.arange(0, len(test.labels), SLICE_STEP))


def accuracies(model, data, num_classes, modes=(None,)):
    """Top-1 of the model's own predictions, per inference mode (None: its default)."""
    from ssl_zoo.evaluation import direct_evaluate
    return {mode or "top1": float(direct_evaluate(
        model, None, data, num_classes, batch_size=500,
        **({} if mode is None else {"inference": mode}))["accuracy"]) for mode in modes}


def learning_curve(out):
    """Per-epoch training metrics and the periodic test accuracies of a run."""
    train = {k: [round(float(v), 5) for v in values]
             for k, values in out["history"].items() if k.endswith(("loss", "accuracy"))}
    test = [{"step": int(e["step"]), **{k: round(float(e[k]), 5) for k in (
             "accuracy", "knn_accuracy") if k in e}}
            for e in out["details"].get("periodic_evaluations", [])]
    return {"train_per_epoch": train, "test": test}


def steps_per_epoch():
    """Training steps per epoch of the trainer at these flags."""
    from ssl_zoo.training import steps_per_epoch as trainer_steps
    return trainer_steps(FLAGS.train_examples, FLAGS.batch_size)


def optimizer_overrides():
    """The TrainConfig fields the optimizer flags set (unset flags: the recipe's)."""
    out = {"learning_rate": FLAGS.learning_rate, "schedule": FLAGS.schedule,
           "warmup_steps": None if FLAGS.warmup_epochs is None
           else FLAGS.warmup_epochs * steps_per_epoch()}
    return {k: v for k, v in out.items() if v is not None}


def main(_):
    from ssl_zoo.models import get_method
    from ssl_zoo.presets import as_float32, save_preset
    from ssl_zoo.training import (TrainConfig, load_data, resolve_backbone, resolve_recipe,
                                  train_and_evaluate)
    for method in FLAGS.methods:
        extra = dict(MILESTONE1, data_kwargs={"pad_mode": "reflect"}) \
            if FLAGS.recipe == "milestone1" and method != "supcon" else {}
        if FLAGS.recipe == "milestone1" and method == "supcon":
            extra = {"learning_rate": 0.1}
        extra.update(optimizer_overrides())
        cfg = TrainConfig(
            method=method, dataset=FLAGS.data, backbone=FLAGS.arch, width=FLAGS.width,
            epochs=FLAGS.epochs, batch_size=FLAGS.batch_size,
            augment="weak" if FLAGS.recipe == "milestone1" else "auto",
            max_train_examples=FLAGS.train_examples, verbose=2, seed=0,
            mixed_precision=FLAGS.precision, backup_every=FLAGS.backup_every,
            # the learning curve: SupCon's by the kNN monitor of its features
            eval_every=None if not FLAGS.eval_epochs else
            FLAGS.eval_epochs * steps_per_epoch(),
            eval_keep=1, eval_protocol="knn" if method == "supcon" else None,
            model_dir=FLAGS.model_dir and os.path.join(FLAGS.model_dir, method), **extra)
        spec = get_method(method)
        arch, recipe = resolve_backbone(cfg, spec), resolve_recipe(cfg, spec)
        name = f"{arch}.{TAGS[method]}"
        out = train_and_evaluate(cfg, log=lambda s: print("  " + s, flush=True))
        model, info = out["model"], out["info"]
        _, test = load_data(TrainConfig(dataset=FLAGS.data, seed=0))
        sl = evaluation_slice(test)
        # Scored as users load it: a preset computes in float32 (save_preset makes a
        # model trained under mixed precision a float32 copy).
        model = as_float32(out["probe"] if method == "supcon" else model, (32, 32, 3))
        if method == "supcon":
            full, on_slice = (accuracies(model, d, info.num_classes) for d in (test, sl))
            description = ("SupCon ResNet-32 encoder + linear probe, CIFAR-10 "
                           f"(top-1 {100 * full['top1']:.1f}% at a CPU budget)")
        elif method == "sla":
            modes = ("self_distill", "aggregated", "single")
            full, on_slice = (accuracies(model, d, info.num_classes, modes)
                              for d in (test, sl))
            description = ("SLA+SD rotation ResNet-32, CIFAR-10 (SD "
                           f"{100 * full['self_distill']:.1f}% / AG "
                           f"{100 * full['aggregated']:.1f}% at a CPU budget)")
        else:
            full, on_slice = (accuracies(model, d, info.num_classes) for d in (test, sl))
            description = (f"Supervised ResNet-32, CIFAR-10 (top-1 "
                           f"{100 * full['top1']:.1f}% at a CPU budget)")
        flags_txt = " ".join(f"--{k}={FLAGS[k].value}" for k in (
            "recipe", "width", "epochs", "batch_size", "train_examples", "precision",
            "eval_epochs", "learning_rate", "warmup_epochs", "schedule")
            if FLAGS[k].value is not None)
        # The trainer's time: every epoch of the run, over all its resumptions (this
        # process may have trained only the last few); None for a run finished before
        # the trainer recorded it.
        train_seconds = out["train_seconds"]
        took = ("training time not recorded" if train_seconds is None else
                f"{round(train_seconds)} s of training on 2 CPU cores")
        flags_txt = f"--methods={method} --arch={arch} " + flags_txt
        budget = (f"{arch} width {FLAGS.width}, {FLAGS.train_examples} random CIFAR-10 "
                  f"training images (seed 0), {FLAGS.epochs} epochs, batch "
                  f"{FLAGS.batch_size}, {FLAGS.precision}, recipe {recipe}, "
                  + took)
        meta = {
            "description": description,
            "class_name": type(model).__name__,
            "method": method,
            "backbone": arch, "width": FLAGS.width,
            "weight_decay": {"mode": recipe["weight_decay_mode"],
                             "value": recipe["weight_decay"]},
            "recipe": recipe,
            "dataset": "CIFAR-10 (JPEG re-encoding, ../shared/data/cifar10-jpeg.zip)",
            "train_split": f"train, random subset of {FLAGS.train_examples}",
            "test_split": "test (10,000 images)",
            "num_classes": info.num_classes, "class_names": info.class_names,
            "input_shape": [32, 32, 3],
            "preprocessing": {"input": "uint8 or float RGB on the 0..255 scale, 32x32",
                              "channel_order": "RGB", "mean": list(info.mean),
                              "std": list(info.std), "normalisation": "inside the model"},
            "training_command": f"python benchmarks/train_presets.py {flags_txt}",
            "budget": budget,
            "train_seconds": None if train_seconds is None else round(train_seconds, 1),
            "metrics_test": full,
            "metrics_slice": on_slice,
            "slice": f"every {SLICE_STEP}th CIFAR-10 test image in loader order "
                     f"({len(sl.labels)} images)",
            "paper": PAPERS[method],
            "learning_curve": learning_curve(out),
        }
        path = save_preset(model, name, meta, root=FLAGS.out)
        print(f"{name}: test {full}, slice {on_slice} -> {path}", flush=True)


if __name__ == "__main__":
    app.run(main)
