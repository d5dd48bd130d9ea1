"""Auto-DeepLab (Liu et al. 2019) for NB360's dense tasks: hierarchical search space, decoders, derived network."""

from nb360.models.autodeeplab.architecture import Architecture, decode_cell, decode_path, transition_weights
from nb360.models.autodeeplab.network import AutoDeepLabNetwork
from nb360.models.autodeeplab.search import AutoDeepLabSearchNetwork

__all__ = ["Architecture", "AutoDeepLabNetwork", "AutoDeepLabSearchNetwork", "decode_cell", "decode_path", "transition_weights"]
