"""The PulmoFusion spiking classifier, defined once as a PyTorch module.

Data flow for one time step (shapes without batch, default configuration)::

    spikes (1, 64, 64)
      -> conv1  Conv2d 1->8, 5x5, stride 2, padding 2 -> lif1      (8, 32, 32)
      -> pool1  SumPool2d 2x2                         -> pool1_lif (8, 16, 16)
      -> conv2  Conv2d 8->16, 3x3, padding 1          -> lif2      (16, 16, 16)
      -> pool2  SumPool2d 2x2                         -> pool2_lif (16, 8, 8)
      -> flatten (1024,) -> fc1 Affine 1024->64 -> lif3 (64,)
      -> fc2 Affine 64->2 -> lif_out (2,)   class = argmax of output spike counts

Pooling: the PulmoFusion paper pools with max pooling, which NIR 1.0 cannot express
(there is no MaxPool node).  On binary spike maps the maximum over a window is 1
exactly when the window's sum is at least 1.  Each pooling stage is therefore written as
a ``SumPool2d`` followed by a memoryless LIF (``tau = dt``, ``r = 1``,
``v_threshold = 0.5``).  With ``dt / tau = 1`` the update ``v = v + (I - v)`` leaves
``v = I``, so the neuron fires if and only if a spike arrived in its window.  That is max
pooling, in primitives every NIR backend and neuromorphic chip runs, at the cost of
one extra neuron layer per stage.  The graph stores the ``dt`` it was written for; run
at another ``dt``, these neurons become leaky (see ``neuro/nir_io.py``).

Class index 0 is "normal" (FEV1/FVC >= 0.70), 1 is "abnormal"; a tie in spike counts
goes to the lower index.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch

from neuro.neurons import LIF

NORMAL, ABNORMAL = 0, 1
CLASS_NAMES = ("normal", "abnormal")


@dataclass(frozen=True)
class SNNConfig:
    """Architecture and neuron constants of the spiking classifier.

    ``dt`` and ``tau`` are in seconds.  ``r`` defaults to ``tau / dt`` so that one input
    unit raises ``v`` by one unit in one step; ``v_threshold`` is in that unit.
    """

    input_size: int = 64
    in_channels: int = 1
    conv_channels: tuple[int, int] = (8, 16)
    hidden: int = 64
    n_classes: int = 2
    dt: float = 1e-3
    tau: float = 5e-3
    v_threshold: float = 1.0
    weight_gain: float = 2.0
    seed: int = 0
    pool_threshold: float = field(default=0.5, repr=False)

    def __post_init__(self) -> None:
        checks = [
            ("input_size", self.input_size, self.input_size >= 8 and self.input_size % 8 == 0,
             "a multiple of 8, at least 8"),
            ("in_channels", self.in_channels, self.in_channels >= 1, ">= 1"),
            ("conv_channels", self.conv_channels,
             len(self.conv_channels) == 2 and all(c >= 1 for c in self.conv_channels), "two values >= 1"),
            ("hidden", self.hidden, self.hidden >= 1, ">= 1"),
            ("n_classes", self.n_classes, self.n_classes >= 2, ">= 2"),
            ("dt", self.dt, self.dt > 0, "> 0 seconds"),
            ("tau", self.tau, self.tau >= self.dt, ">= dt seconds"),
            ("v_threshold", self.v_threshold, self.v_threshold > 0, "> 0"),
            ("weight_gain", self.weight_gain, self.weight_gain > 0, "> 0"),
        ]
        for name, value, ok, allowed in checks:
            if not ok:
                raise ValueError(f"SNNConfig.{name} = {value!r} is invalid; it must be {allowed}")

    @property
    def r(self) -> float:
        return self.tau / self.dt

    def to_dict(self) -> dict:
        values = asdict(self)
        values["conv_channels"] = list(self.conv_channels)
        return values

    @classmethod
    def from_dict(cls, values: dict) -> "SNNConfig":
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown SNNConfig keys {unknown}; allowed keys are {sorted(known)}")
        values = dict(values)
        if "conv_channels" in values:
            values["conv_channels"] = tuple(int(c) for c in values["conv_channels"])
        return cls(**values)


class SumPool2d(torch.nn.Module):
    """Sum over non-overlapping ``kernel_size`` windows (NIR's SumPool2d, no padding)."""

    def __init__(self, kernel_size: int):
        super().__init__()
        self.kernel_size = kernel_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = self.kernel_size
        return torch.nn.functional.avg_pool2d(x, k, k, divisor_override=1)


class PulmoSNN(torch.nn.Module):
    """Spiking FEV1/FVC classifier; ``forward`` takes spikes shaped (T, B, C, H, W)."""

    # Execution order of the layers; names are also the NIR node names.
    LAYER_ORDER = ("conv1", "lif1", "pool1", "pool1_lif", "conv2", "lif2", "pool2", "pool2_lif",
                   "flatten", "fc1", "lif3", "fc2", "lif_out")

    def __init__(self, config: SNNConfig | None = None):
        super().__init__()
        self.config = config or SNNConfig()
        cfg = self.config
        c1, c2 = cfg.conv_channels
        s1 = cfg.input_size // 2
        s2 = s1 // 2
        s3 = s2 // 2
        lif = dict(tau=cfg.tau, v_threshold=cfg.v_threshold, r=cfg.r)
        pool_lif = dict(tau=cfg.dt, v_threshold=cfg.pool_threshold, r=1.0)

        self.conv1 = torch.nn.Conv2d(cfg.in_channels, c1, 5, stride=2, padding=2)
        self.lif1 = LIF((c1, s1, s1), **lif)
        self.pool1 = SumPool2d(2)
        self.pool1_lif = LIF((c1, s2, s2), **pool_lif)
        self.conv2 = torch.nn.Conv2d(c1, c2, 3, stride=1, padding=1)
        self.lif2 = LIF((c2, s2, s2), **lif)
        self.pool2 = SumPool2d(2)
        self.pool2_lif = LIF((c2, s3, s3), **pool_lif)
        self.flatten = torch.nn.Flatten(start_dim=1)
        self.fc1 = torch.nn.Linear(c2 * s3 * s3, cfg.hidden)
        self.lif3 = LIF((cfg.hidden,), **lif)
        self.fc2 = torch.nn.Linear(cfg.hidden, cfg.n_classes)
        self.lif_out = LIF((cfg.n_classes,), **lif)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Draw weights from a seeded generator: N(0, gain / sqrt(fan_in)), zero biases."""
        generator = torch.Generator().manual_seed(self.config.seed)
        for layer in (self.conv1, self.conv2, self.fc1, self.fc2):
            fan_in = layer.weight[0].numel()
            std = self.config.weight_gain / fan_in ** 0.5
            with torch.no_grad():
                layer.weight.copy_(torch.randn(layer.weight.shape, generator=generator) * std)
                layer.bias.zero_()

    def input_shape(self) -> tuple[int, int, int]:
        cfg = self.config
        return (cfg.in_channels, cfg.input_size, cfg.input_size)

    def forward(self, spikes: torch.Tensor, record: bool = False):
        """Run all time steps and return the output spikes (T, B, n_classes).

        With ``record``, also return a dict of every layer's output (T, B, *shape) by layer name.
        """
        if spikes.dim() != 5 or tuple(spikes.shape[2:]) != self.input_shape():
            raise ValueError(
                f"expected input spikes shaped (T, B, {', '.join(map(str, self.input_shape()))}), "
                f"got {tuple(spikes.shape)}"
            )
        dt = self.config.dt
        states: dict[str, torch.Tensor | None] = {}
        records: dict[str, list[torch.Tensor]] = {name: [] for name in self.LAYER_ORDER}
        outputs = []
        for step in spikes:
            x = step
            for name in self.LAYER_ORDER:
                layer = getattr(self, name)
                if isinstance(layer, LIF):
                    x, states[name] = layer(x, states.get(name), dt)
                else:
                    x = layer(x)
                if record:
                    records[name].append(x)
            outputs.append(x)
        output = torch.stack(outputs)
        if record:
            return output, {name: torch.stack(values) for name, values in records.items()}
        return output


def predict_classes(output_spikes: torch.Tensor) -> torch.Tensor:
    """Return the class per sample from output spikes (T, B, n_classes); ties go to the lower index."""
    return output_spikes.sum(dim=0).argmax(dim=-1)
