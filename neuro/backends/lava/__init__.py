"""Lava (lava-nc) backend: NIR graphs on Lava's floating-point and bit-accurate CPU models."""

from __future__ import annotations

from neuro.backends.lava.backend import LavaBackend, LavaRun
from neuro.backends.lava.fixed_point import LayerQuantisation
from neuro.backends.lava.neurons import LavaMappingError

__all__ = ["LavaBackend", "LavaMappingError", "LavaRun", "LayerQuantisation"]
