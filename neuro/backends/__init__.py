"""Simulators that run a NIR graph; ``create_backend`` builds one by name."""

from __future__ import annotations

from neuro.backends.base import Backend, BackendMappingError, BackendRun, UnsupportedNodeError

BACKEND_NAMES = ("reference", "snntorch", "norse", "lava-float", "lava-fixed")


def create_backend(name: str) -> Backend:
    """Return a new backend; raise ValueError listing the valid names for an unknown one.

    Imports happen here so that a run without Lava does not pay for importing it.
    """
    if name == "reference":
        from neuro.backends.reference import ReferenceBackend
        return ReferenceBackend()
    if name == "snntorch":
        from neuro.backends.snntorch_backend import SnnTorchBackend
        return SnnTorchBackend()
    if name == "norse":
        from neuro.backends.norse_backend import NorseBackend
        return NorseBackend()
    if name in ("lava-float", "lava-fixed"):
        from neuro.backends.lava import LavaBackend
        return LavaBackend(fixed_point=name == "lava-fixed")
    raise ValueError(f"unknown backend {name!r}; choose from {', '.join(BACKEND_NAMES)}")


__all__ = ["BACKEND_NAMES", "Backend", "BackendMappingError", "BackendRun", "UnsupportedNodeError", "create_backend"]
