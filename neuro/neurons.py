"""Leaky integrate-and-fire neurons in NIR's meaning, discretised once for the whole project.

NIR's LIF is ``tau * dv/dt = (v_leak - v) + r * I`` with a spike when ``v > v_threshold``
and ``v = v_reset`` after it.  One forward-Euler step of length ``dt`` (seconds) is::

    v = v + (dt / tau) * (v_leak - v + r * I)
    z = heaviside(v - v_threshold)
    v = v_reset where z else v

The reset happens in the same step as the spike (no reset delay).  ``IF`` is the same
without leak: ``v = v + r * I``.  Units: ``tau`` and ``dt`` in seconds; ``v`` and the
parameters in the same arbitrary voltage unit; ``I`` in that unit divided by ``r``.

Training needs a gradient through the Heaviside step; ``spike_fn`` uses the fast-sigmoid
surrogate ``d z / d v = 1 / (1 + slope * |v - v_threshold|)^2`` (Zenke & Ganguli,
"SuperSpike", Neural Computation 30(6), 2018).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


class _FastSigmoidSpike(torch.autograd.Function):
    """Heaviside forward, fast-sigmoid derivative backward."""

    @staticmethod
    def forward(ctx, v_minus_threshold: torch.Tensor, slope: float) -> torch.Tensor:
        ctx.save_for_backward(v_minus_threshold)
        ctx.slope = slope
        return (v_minus_threshold > 0).to(v_minus_threshold.dtype)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        (v_minus_threshold,) = ctx.saved_tensors
        surrogate = 1.0 / (1.0 + ctx.slope * v_minus_threshold.abs()) ** 2
        return grad_output * surrogate, None


def spike_fn(v_minus_threshold: torch.Tensor, slope: float = 25.0) -> torch.Tensor:
    """Return 1.0 where ``v - v_threshold > 0``, with the fast-sigmoid surrogate gradient."""
    return _FastSigmoidSpike.apply(v_minus_threshold, slope)


@dataclass(frozen=True)
class LIFParameters:
    """Per-neuron LIF parameters as tensors shaped like the layer (no batch dimension).

    ``tau`` is the membrane time constant in seconds, ``r`` the input resistance,
    ``v_leak``, ``v_threshold`` and ``v_reset`` voltages in the layer's unit.
    """

    tau: torch.Tensor
    r: torch.Tensor
    v_leak: torch.Tensor
    v_threshold: torch.Tensor
    v_reset: torch.Tensor


def lif_step(
    v: torch.Tensor, current: torch.Tensor, params: LIFParameters, dt: float, slope: float = 25.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Advance LIF membranes ``v`` by one step ``dt`` under input ``current``; return (spikes, v)."""
    v = v + (dt / params.tau) * (params.v_leak - v + params.r * current)
    spikes = spike_fn(v - params.v_threshold, slope)
    v = torch.where(spikes > 0, params.v_reset.expand_as(v), v)
    return spikes, v


def if_step(
    v: torch.Tensor, current: torch.Tensor, r: torch.Tensor, v_threshold: torch.Tensor,
    v_reset: torch.Tensor, slope: float = 25.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Advance integrate-and-fire membranes by one step; return (spikes, v)."""
    v = v + r * current
    spikes = spike_fn(v - v_threshold, slope)
    v = torch.where(spikes > 0, v_reset.expand_as(v), v)
    return spikes, v


class LIF(torch.nn.Module):
    """A layer of LIF neurons with per-neuron parameters, one time step per call.

    The parameters are buffers (not trained) so that they travel with ``state_dict`` and
    with ``.double()``.  The membrane state is passed in and out explicitly.
    """

    def __init__(self, shape: tuple[int, ...], *, tau: float, v_threshold: float,
                 r: float = 1.0, v_leak: float = 0.0, v_reset: float = 0.0, slope: float = 25.0):
        super().__init__()
        for name, value in (("tau", tau), ("v_threshold", v_threshold), ("r", r)):
            if not value > 0:
                raise ValueError(f"LIF {name} must be > 0, got {value}")
        self.shape = tuple(shape)
        self.slope = slope
        self.register_buffer("tau", torch.full(self.shape, float(tau)))
        self.register_buffer("r", torch.full(self.shape, float(r)))
        self.register_buffer("v_leak", torch.full(self.shape, float(v_leak)))
        self.register_buffer("v_threshold", torch.full(self.shape, float(v_threshold)))
        self.register_buffer("v_reset", torch.full(self.shape, float(v_reset)))

    @property
    def params(self) -> LIFParameters:
        return LIFParameters(self.tau, self.r, self.v_leak, self.v_threshold, self.v_reset)

    def forward(self, current: torch.Tensor, v: torch.Tensor | None, dt: float):
        if v is None:
            v = torch.zeros_like(current)
        return lif_step(v, current, self.params, dt, self.slope)
