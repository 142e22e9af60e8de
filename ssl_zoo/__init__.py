"""ssl_zoo: self- and semi-supervised image classification as Keras 3 layers and models.

Example:
>>> from ssl_zoo import SLAModel
>>> model = SLAModel("resnet32_cifar", num_classes=10, transforms="rotation")
"""

# optimizers: registers CoupledSGD, so a .keras file trained with it loads after `import ssl_zoo`
from ssl_zoo import backbones, evaluation, layers, losses, models, optimizers
from ssl_zoo.backbones import get_backbone, list_backbones
from ssl_zoo.evaluation import linear_probe
from ssl_zoo.models import (ClusterClassificationModel, DAModel, DASOModel,
                            FixMatchModel, JigsawModel, LinearProbe, MTModel, SimCLRModel,
                            SLAModel, SupConModel, SupervisedModel)
from ssl_zoo.presets import list_presets
from ssl_zoo.version import __version__

__all__ = ["ClusterClassificationModel", "DAModel", "DASOModel", "FixMatchModel",
           "JigsawModel", "LinearProbe", "MTModel", "SLAModel", "SimCLRModel", "SupConModel",
           "SupervisedModel", "__version__", "backbones", "evaluation", "get_backbone",
           "layers", "linear_probe", "list_backbones", "list_presets", "losses", "models",
           "optimizers"]
