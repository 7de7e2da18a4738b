"""Lava (lava-nc) backend: NIR graphs on Lava's floating-point and bit-accurate CPU models."""

from __future__ import annotations

import multiprocessing


def _import_lava_runtime() -> None:
    """Import lava-nc's runtime even when the multiprocessing start method is already fixed.

    lava-nc 0.10 calls ``multiprocessing.set_start_method('fork')`` when its runtime module
    is imported.  That raises RuntimeError once anything in the process has fixed the
    start method, which tqdm does by creating a multiprocessing lock for its progress
    bars.  When the method is already 'fork' the call would change nothing, so it is
    skipped for the duration of the import; any other method is an error Lava cannot run
    under.
    """
    current = multiprocessing.get_start_method(allow_none=True)
    if current not in (None, "fork"):
        raise RuntimeError(
            f"Lava needs the 'fork' multiprocessing start method, but this process already uses {current!r}; "
            "import neuro.backends.lava before choosing another start method"
        )
    original = multiprocessing.set_start_method
    if current == "fork":
        multiprocessing.set_start_method = lambda method, force=False: None
    try:
        import lava.magma.runtime.message_infrastructure.multiprocessing  # noqa: F401
    finally:
        multiprocessing.set_start_method = original


_import_lava_runtime()

from neuro.backends.lava.backend import LavaBackend, LavaRun  # noqa: E402
from neuro.backends.lava.fixed_point import LayerQuantisation  # noqa: E402
from neuro.backends.lava.neurons import LavaMappingError  # noqa: E402

__all__ = ["LavaBackend", "LavaMappingError", "LavaRun", "LayerQuantisation"]
