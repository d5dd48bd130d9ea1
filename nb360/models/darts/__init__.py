"""The DARTS cell search space: operations, supernet, genotypes and evaluation networks (1-D and 2-D)."""

from nb360.models.darts.genotype import Genotype
from nb360.models.darts.network import DartsNetwork
from nb360.models.darts.ops import PRIMITIVES
from nb360.models.darts.supernet import SearchNetwork

__all__ = ["Genotype", "DartsNetwork", "SearchNetwork", "PRIMITIVES"]
