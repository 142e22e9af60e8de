"""Method registry: how the CLI, examples and benchmarks build and train each method.

A later method plugs in with one `register_method` call next to its model.
"""

import dataclasses

from ssl_zoo.models.sla import DAModel, MTModel, SLAModel
from ssl_zoo.models.supcon import SimCLRModel, SupConModel
from ssl_zoo.models.supervised import SupervisedModel


@dataclasses.dataclass(frozen=True)
class MethodSpec:
    """How to build and feed one method.

    Attributes:
        model_class: the `keras.Model` subclass.
        description: one line for `ssl-zoo list`.
        view: training view of the data pipeline ('weak', 'supcon', ...).
        num_views: views per image in a training batch.
        evaluation: 'direct' (model.evaluate on labelled test data) or
            'linear_probe' (frozen features + linear classifier).
        defaults: constructor keyword arguments implied by the method name.
    """

    model_class: type
    description: str
    view: str = "weak"
    num_views: int = 1
    evaluation: str = "direct"
    defaults: dict = dataclasses.field(default_factory=dict)


METHODS = {}


def register_method(name, spec):
    """Adds (or replaces) a method under `name`."""
    METHODS[name] = spec
    return spec


def get_method(name):
    """Returns the `MethodSpec` of `name`; unknown names list the known ones."""
    if name not in METHODS:
        raise ValueError(f"Unknown method {name!r}. Known methods: "
                         f"{', '.join(sorted(METHODS))}.")
    return METHODS[name]


register_method("supervised", MethodSpec(
    SupervisedModel, "Plain cross-entropy classifier (the baseline)."))
register_method("sla", MethodSpec(
    SLAModel, "SLA: joint class x transformation labels with aggregation and "
              "self-distillation (Lee et al. 2020)."))
register_method("sla_no_sd", MethodSpec(
    SLAModel, "SLA without the self-distillation head (single/aggregated inference).",
    defaults={"self_distill": False}))
register_method("da", MethodSpec(
    DAModel, "DA baseline: transformations as label-preserving augmentation."))
register_method("mt", MethodSpec(
    MTModel, "MT baseline: separate class and transformation heads, summed losses."))
register_method("supcon", MethodSpec(
    SupConModel, "SupCon: supervised contrastive loss on two views, exact across "
                 "replicas; evaluated by linear probe (Khosla et al. 2020).",
    view="supcon", num_views=2, evaluation="linear_probe"))
register_method("simclr", MethodSpec(
    SimCLRModel, "SimCLR / NT-Xent: SupCon without labels; evaluated by linear probe.",
    view="supcon", num_views=2, evaluation="linear_probe"))
