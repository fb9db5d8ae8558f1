"""Constants and the load error shared by the model server's modules. Its settings (one source: environment,
flags, defaults) are :class:`medsearch.contracts.settings.ModelServerSettings`."""

from __future__ import annotations

EMBEDDING_DIM = 1024
IMAGENET_FILE = "densenet121-a639ec97.pth"  # torchvision's DenseNet121 ImageNet checkpoint


class WeightsError(RuntimeError):
    """The weights cannot be loaded; the message says which file/spec and why, and what to do."""
