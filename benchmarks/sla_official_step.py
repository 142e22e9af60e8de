"""The library's SLA step against the authors' official PyTorch step, on one CPU.

Times, interleaved in one process (the fastest of `--rounds` rounds counts):
  - the library's SLA+SD training step (`SLAModel`, option-A ResNet-32 x1.0, the
    authors' width: 16/32/64 channels) on B images, rotated inside the step to B x 4;
  - the library's CE step (`SupervisedModel`, same network) on the B x 4 rotated images;
  - the authors' SLA+SD step: `trainers.create_sla_sd_trainer`'s update function from
    hankook/SLA with their `cresnet32` (two heads: 40-way joint, 10-way single) and
    their optimizer (SGD 0.1, momentum 0.9, weight decay 1e-4);
  - the authors' baseline CE step (`trainers.create_baseline_trainer`) on the B x 4
    rotated images.
All float32 (the authors train in float32), both frameworks on the machine's cores.

The official code is not part of ssl_zoo and is not downloaded: pass the path of a
checkout of https://github.com/hankook/SLA, in a Python that has torch, torchvision and
pytorch-ignite (optional: nothing else in ssl_zoo needs them):

    python -m venv --system-site-packages /tmp/torch_env
    /tmp/torch_env/bin/pip install torch torchvision pytorch-ignite
    /tmp/torch_env/bin/python benchmarks/sla_official_step.py --official_repo=/path/to/SLA

Writes `benchmarks/results/sla_official_step.json`.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, _REPO)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from timing import time_interleaved  # noqa: E402

flags.DEFINE_string("official_repo", None, "Path of a checkout of hankook/SLA (the "
                    "authors' code: trainers.py, models/, augmentations.py).")
flags.DEFINE_integer("batch", 128, "Images per SLA step (x4 rotations; authors: 128).")
flags.DEFINE_integer("steps", 5, "Timed steps per round.")
flags.DEFINE_integer("rounds", 3, "Timed rounds per step function.")
flags.DEFINE_string("jit", "both", "The library's steps: graph | xla | both.")
flags.DEFINE_string("out", os.path.join(_REPO, "benchmarks", "results",
                                        "sla_official_step.json"), "JSON output.")
FLAGS = flags.FLAGS

OFFICIAL_FILES = ("trainers.py", "augmentations.py", os.path.join("models", "__init__.py"),
                  os.path.join("models", "cifar_resnet.py"))


def load_official(repo):
    """The authors' modules (trainers, augmentations, models) from a checkout at `repo`.

    Raises SystemExit naming what is missing: the checkout's files or the packages
    (torch, torchvision, pytorch-ignite) its code imports.
    """
    repo = os.path.abspath(repo)
    missing = [f for f in OFFICIAL_FILES if not os.path.isfile(os.path.join(repo, f))]
    if missing:
        sys.exit(f"--official_repo={repo} is not a checkout of hankook/SLA: missing "
                 f"{', '.join(missing)}.")
    absent = []
    for package, module in (("torch", "torch"), ("torchvision", "torchvision"),
                            ("pytorch-ignite", "ignite")):
        try:
            __import__(module)
        except ImportError:
            absent.append(package)
    if absent:
        sys.exit(f"The official step needs {', '.join(absent)} in this Python "
                 f"(pip install {' '.join(absent)}); ssl_zoo itself does not.")
    sys.path.insert(0, repo)
    try:
        import augmentations
        import models
        import trainers
    finally:
        sys.path.remove(repo)
    return trainers, augmentations, models


def official_steps(repo, x, y):
    """Zero-argument callables for the authors' SLA+SD step (on `x`, B images) and
    their baseline CE step (on the B x 4 rotated images), plus their model's size."""
    trainers, augmentations, models = load_official(repo)
    import torch
    torch.manual_seed(0)
    transform, m = augmentations.rotation()
    mean = np.array([0.4914, 0.4822, 0.4465], "float32")[:, None, None]
    std = np.array([0.2470, 0.2435, 0.2616], "float32")[:, None, None]
    images = torch.from_numpy((x.transpose(0, 3, 1, 2) / 255.0 - mean) / std).float()
    labels = torch.from_numpy(y.astype("int64"))

    def sgd(model):
        return torch.optim.SGD(model.parameters(), lr=0.1, weight_decay=1e-4,
                               momentum=0.9)

    sla = models.check_model("cresnet32", 10 * m, 10)
    sla_engine = trainers.create_sla_sd_trainer(sla, transform, optimizer=sgd(sla))
    base = models.check_model("cresnet32", 10)
    base_engine = trainers.create_baseline_trainer(base, optimizer=sgd(base))
    expanded = (transform(None, images).contiguous(),
                torch.stack([labels] * m, 1).view(-1))
    # the engines' own update functions: forward, losses, backward, optimizer step
    # (ignite's metric bookkeeping around them is left out)
    sla_update, base_update = sla_engine._process_function, base_engine._process_function
    parameters = sum(p.numel() for p in sla.parameters())
    return ({"official_sla": lambda: sla_update(sla_engine, (images, labels)),
             "official_ce": lambda: base_update(base_engine, expanded)},
            {"official_sla_parameters": int(parameters),
             "torch_threads": torch.get_num_threads(), "torch": torch.__version__})


def library_steps(jit, x, y):
    """The library's SLA+SD step on `x` and its CE step on the rotated batch, and a
    callable giving the SLA model's size once it is built."""
    import keras
    from ssl_zoo import SLAModel, SupervisedModel
    from ssl_zoo.optimizers import CoupledSGD
    keras.utils.set_random_seed(0)
    sla = SLAModel("resnet32_cifar_a", 10, width=1.0, self_distill=True)
    sla.compile(optimizer=CoupledSGD(0.1, momentum=0.9, l2=1e-4), jit_compile=jit)
    sup = SupervisedModel("resnet32_cifar_a", 10, width=1.0)
    sup.compile(optimizer=CoupledSGD(0.1, momentum=0.9, l2=1e-4), jit_compile=jit)
    m = sla.num_transforms
    x_exp = sla.transformations(x).numpy()
    y_exp = np.repeat(y, m)
    return ({"library_sla": lambda: sla.train_on_batch(x, y),
             "library_ce": lambda: sup.train_on_batch(x_exp, y_exp)},
            lambda: {"library_sla_parameters":   # once built (by its first step)
                     int(sum(np.prod(w.shape) for w in sla.trainable_weights))})


def main(_):
    if FLAGS.official_repo is None:
        sys.exit("Pass --official_repo=<checkout of hankook/SLA> (see this script's "
                 "docstring).")
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (FLAGS.batch, 32, 32, 3)).astype("float32")
    y = rng.integers(0, 10, FLAGS.batch)
    # PyTorch before TensorFlow: torchvision imported after TensorFlow crashes here
    # (segmentation fault in torchvision.models, TF 2.21 / torch 2.14)
    official, info = official_steps(FLAGS.official_repo, x, y)
    from ssl_zoo.utils.io import atomic_write_json
    results = []
    for jit in {"graph": [False], "xla": [True], "both": [False, True]}[FLAGS.jit]:
        library, lib_info = library_steps(jit, x, y)
        t = time_interleaved({**library, **official}, FLAGS.steps, FLAGS.rounds)
        row = {"jit_compile": jit, "seconds_per_step": t, **lib_info(),
               "library_sla_over_official_sla": t["library_sla"] / t["official_sla"],
               "library_ce_over_official_ce": t["library_ce"] / t["official_ce"],
               "library_sla_over_library_ce": t["library_sla"] / t["library_ce"],
               "official_sla_over_official_ce": t["official_sla"] / t["official_ce"]}
        results.append(row)
        print(f"jit_compile={jit}: " + ", ".join(f"{k} {v:.3f} s" for k, v in t.items()),
              flush=True)
        print("  library SLA / official SLA {library_sla_over_official_sla:.2f}; library "
              "CE / official CE {library_ce_over_official_ce:.2f}; SLA / CE: library "
              "{library_sla_over_library_ce:.2f}, official "
              "{official_sla_over_official_ce:.2f}".format(**row), flush=True)
    import tensorflow as tf
    atomic_write_json(FLAGS.out, {
        "batch": FLAGS.batch, "expanded_batch": 4 * FLAGS.batch, "steps": FLAGS.steps,
        "rounds": FLAGS.rounds, "precision": "float32", "tensorflow": tf.__version__,
        "official_code": "hankook/SLA trainers.create_sla_sd_trainer / "
                         "create_baseline_trainer, models cresnet32",
        **info, "results": results})
    print(f"wrote {FLAGS.out}")


if __name__ == "__main__":
    app.run(main)
