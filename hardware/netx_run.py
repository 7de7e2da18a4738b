"""Load a netx HDF5 network with lava-dl's own loader and run it on Lava's fixed-point CPU models.

This is how a user of lava-dl would run an exported file, used here to check the export
against the project's ``lava-fixed`` run.  Samples run back to back, each in a window of
``reset_interval`` steps (its input, then zeros), like ``LavaBackend`` does.
"""

from __future__ import annotations

import logging
import os
import types

import numpy as np

logger = logging.getLogger(__name__)


def import_netx() -> types.ModuleType:
    """Import ``lava.lib.dl.netx.hdf5`` even when torchvision is missing.

    lava-dl 0.6 imports ``torchvision.ops`` and ``torchvision.transforms`` for its object
    detection package, which netx never uses.
    """
    import neuro.backends.lava  # noqa: F401  (imports Lava's runtime under the 'fork' start method)
    from cnn.x3d import import_without_torchvision

    return import_without_torchvision("lava.lib.dl.netx.hdf5")


def run_netx(path: str | os.PathLike, spikes: np.ndarray, *, reset_interval: int,
             reset_offset: int) -> dict[str, np.ndarray]:
    """Run the netx network in ``path`` on binary ``spikes`` shaped ``(T, B, C, H, W)``.

    Returns each block's output spikes on Lava's own time base, ``(reset_interval, B,
    *NIR shape)`` (row ``i`` is Lava's step ``i + 1`` of the sample), keyed by the
    neuron name stored in the file (or ``block<i>``).
    """
    import h5py
    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi2SimCfg
    from lava.proc.io.extractor import Extractor, PyLoihiExtractorModel
    from lava.proc.io.source import RingBuffer

    from neuro.backends.lava.builder import _to_nir_layout
    from neuro.backends.lava.plan import to_lava_layout

    hdf5 = import_netx()
    data = np.asarray(spikes, dtype=np.float64)
    num_steps, batch = data.shape[:2]
    if num_steps > reset_interval:
        raise ValueError(f"{num_steps} input steps do not fit a reset interval of {reset_interval} steps")
    with h5py.File(path, "r") as handle:
        names = [handle["layer"][key].attrs.get("name", f"block{key}")
                 for key in sorted(handle["layer"], key=int) if "neuron" in handle["layer"][key]]

    timeline = np.zeros((reset_interval * batch, *data.shape[2:]))
    for index in range(batch):
        timeline[index * reset_interval:index * reset_interval + num_steps] = data[:, index]
    lava_input = np.moveaxis(np.stack([to_lava_layout(frame) for frame in timeline]), 0, -1)

    network = hdf5.Network(net_config=str(path), reset_interval=reset_interval, reset_offset=reset_offset)
    source = RingBuffer(data=lava_input)
    source.s_out.connect(network.inp)
    extractors = []
    for layer in network.layers:
        extractor = Extractor(shape=layer.out.shape, buffer_size=reset_interval)
        layer.out.connect(extractor.in_port)
        extractors.append(extractor)

    run_config = Loihi2SimCfg(select_tag="fixed_pt", exception_proc_model_map={Extractor: PyLoihiExtractorModel})
    frames: list[list[np.ndarray]] = [[] for _ in extractors]
    try:
        for _ in range(batch):
            network.run(condition=RunSteps(num_steps=reset_interval), run_cfg=run_config)
            for frame, extractor in zip(frames, extractors):
                frame.extend(extractor.receive() for _ in range(reset_interval))
    finally:
        network.stop()

    records = {}
    for name, frame in zip(names, frames):
        record = _to_nir_layout(frame)
        record = record.reshape(batch, reset_interval, *record.shape[1:]).swapaxes(0, 1)
        records[name] = (record != 0).astype(np.float64)
    return records
