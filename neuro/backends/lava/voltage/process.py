"""``LIFResetWithVoltage``: Lava's LIFReset plus an OutPort ``v_out`` carrying ``v``.

Lava reads a Var (``Var.get``, ``Monitor.get_data``) one element per message in
lava-nc 0.10 (``PyLoihiProcessModel._get_var``), which takes minutes for a few
million values.  Sending ``v`` on a port lets an ``Extractor`` stream whole arrays
instead.  The models reuse Lava's LIFReset models unchanged and only add the send
after each step, so ``v_out`` carries the voltage after that step's reset.
"""

from __future__ import annotations

import logging

import numpy as np
from lava.magma.core.decorator import implements, requires, tag
from lava.magma.core.model.py.ports import PyOutPort
from lava.magma.core.model.py.type import LavaPyType
from lava.magma.core.process.ports.ports import OutPort
from lava.magma.core.resources import CPU
from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol
from lava.proc.lif.models import PyLifResetModelBitAcc, PyLifResetModelFloat
from lava.proc.lif.process import LIFReset

logger = logging.getLogger(__name__)


class LIFResetWithVoltage(LIFReset):
    """LIFReset whose ``v_out`` port sends the membrane voltage every step."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.v_out = OutPort(shape=kwargs["shape"])


@implements(proc=LIFResetWithVoltage, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt")
class PyLifResetWithVoltageModelFloat(PyLifResetModelFloat):
    """Lava's floating-point LIFReset model that also sends ``v``."""

    # Lava's @implements refuses to re-target a model class that inherits another
    # process; clearing the inherited value lets this subclass implement the new one.
    implements_process = None
    v_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, float)

    def run_spk(self) -> None:
        super().run_spk()
        self.v_out.send(self.v)


@implements(proc=LIFResetWithVoltage, protocol=LoihiProtocol)
@requires(CPU)
@tag("bit_accurate_loihi", "fixed_pt")
class PyLifResetWithVoltageModelBitAcc(PyLifResetModelBitAcc):
    """Lava's bit-accurate LIFReset model that also sends ``v``."""

    implements_process = None
    v_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int32, precision=24)

    def run_spk(self) -> None:
        super().run_spk()
        self.v_out.send(self.v)
