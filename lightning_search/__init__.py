"""lightning-search: fine-tune and search diffusion models through one Lightning module.

Layers (one folder each): ``backbones`` (networks and schedules), ``sampling`` (ODE solvers, NFE counts),
``verifiers`` (score samples), ``search`` (spend NFEs on noises), ``objectives`` (training losses),
``data`` (DataModules), ``metrics`` (FID, IS, precision/recall), ``callbacks`` + ``reporting`` (outputs).
"""

from lightning_search.errors import LightningSearchError
from lightning_search.module import DiffusionModule

__version__ = "0.2.0"
__all__ = ["DiffusionModule", "LightningSearchError", "__version__"]
