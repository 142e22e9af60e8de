"""Every registered method gets the battery of `tests/battery.py`, with no edit here.

A toy method registered inside a test gets it too, and `ssl-zoo list` / the training
plumbing pick it up from the registry.
"""

import keras
import pytest
from keras import ops

import battery
from ssl_zoo.models import (METHODS, BackboneModel, MethodSpec, get_method,
                            register_method, unregister_method)

# Snapshot at collection: the registry as `import ssl_zoo` leaves it.
REGISTERED = sorted(METHODS)


def test_the_registry_holds_the_shipped_methods():
    assert {"supervised", "sla", "sla_no_sd", "da", "mt", "supcon", "simclr"} <= set(
        REGISTERED)


# Every method gets the one-step 1-vs-2-replica parity by default (4-11 s each). The
# costlier checks (XLA compiles, mixed precision) run by default on one method per batch
# structure: labeled images (sla), views (supcon), labeled + unlabeled streams (daso);
# the other methods get them under `-m slow`.
FULL_BATTERY = {"sla", "supcon", "daso"}
COSTLY_CHECKS = {"xla", "mixed_precision"}


def _battery_params():
    for name in REGISTERED:
        for check in battery.checks_for(name):
            slow = check in COSTLY_CHECKS and name not in FULL_BATTERY
            yield pytest.param(name, check, marks=[pytest.mark.slow] if slow else [],
                               id=f"{name}-{check}")


@pytest.mark.parametrize("name, check", list(_battery_params()))
def test_battery(name, check, tmp_path):
    battery.run_battery(name, tmp_path, checks=[check])


@keras.saving.register_keras_serializable(package="ssl_zoo_tests")
class ToyCenterModel(BackboneModel):
    """A method written only as forward / compute_losses: class centres on features."""

    def __init__(self, margin=1.0, **kwargs):
        super().__init__(**kwargs)
        self.margin = float(margin)
        self.head = keras.layers.Dense(self.num_classes, name="head")
        self.ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    def build_heads(self, feature_shape):
        self.build_layers(feature_shape, self.head)

    def call(self, images, training=False):
        return ops.cast(self.head(self.features(self.check_images(images), training)),
                        "float32")

    def forward(self, batch, training):
        images, labels = batch
        return {"logits": ops.cast(self.head(self.features(images, training)), "float32")
                * self.margin}

    def compute_losses(self, batch, outputs):
        return {"ce": self.ce(batch[1], outputs["logits"])}

    def get_config(self):
        return {**super().get_config(), "margin": self.margin}


@pytest.fixture
def toy_method():
    register_method("toy_center", MethodSpec(ToyCenterModel, "toy", view="weak",
                                             test_kwargs={"margin": 2.0}))
    yield "toy_center"
    unregister_method("toy_center")


def test_a_toy_method_gets_the_battery_from_its_registration(toy_method, tmp_path):
    assert get_method(toy_method).model_class is ToyCenterModel
    assert battery.checks_for(toy_method) == tuple(battery.CHECKS)
    # The costly checks exercise Keras' XLA / loss scaling on test code, as they do
    # under `-m slow` for the shipped methods outside FULL_BATTERY.
    battery.run_battery(toy_method, tmp_path, checks=[
        c for c in battery.checks_for(toy_method) if c not in COSTLY_CHECKS])


@pytest.mark.slow
def test_a_toy_method_passes_the_costly_checks(toy_method, tmp_path):
    battery.run_battery(toy_method, tmp_path, checks=sorted(COSTLY_CHECKS))


def test_a_toy_method_trains_from_the_cli_plumbing(toy_method, tmp_path):
    from ssl_zoo.training import TrainConfig, train_and_evaluate
    out = train_and_evaluate(TrainConfig(
        method=toy_method, dataset="digits", backbone="vgg_tile", width=0.0625,
        epochs=1, steps_per_epoch=2, batch_size=16, max_train_examples=64,
        max_test_examples=32, method_kwargs={"margin": 3.0}, verbose=0),
        log=lambda *_: None)
    assert out["model"].margin == 3.0
    assert 0.0 <= out["metrics"]["balanced_accuracy"] <= 1.0
