"""Per-core limits of neuromorphic chips, each with its source and how sure it is.

Confidence marks, per limit:

- "confirmed": read in the primary source.
- "second-hand": quoted by later works or software that name the primary source, while
  the primary source itself was not checked.
- "derived": computed from other limits of the same chip.
- "unresolved": sources disagree; the conservative value is used.
- "unknown": no public figure was found, so the limit is not checked (value None).
- "user": replaced by the user through a JSON file (``load_chip_limits``).
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from hardware.energy import read_json_object

logger = logging.getLogger(__name__)

LIMIT_CONFIDENCE = ("confirmed", "second-hand", "derived", "unresolved", "unknown", "user")
# Limits a resource report checks; the value None means "not known, not checked".
LIMIT_FIELDS = ("neurons_per_core", "synaptic_memory_bytes_per_core", "fan_in_axons_per_core",
                "fan_out_axons_per_core", "cores_per_chip", "weight_bits")
KIB = 1024


class ChipLimitsError(ValueError):
    """Invalid chip-limits file or value; ``path`` and ``key`` name the file and limit, where known."""

    def __init__(self, message: str, *, path: str | os.PathLike | None = None, key: str | None = None):
        super().__init__(message)
        self.path = path
        self.key = key


@dataclass(frozen=True)
class ChipLimits:
    """Per-core and per-chip limits of one chip.

    ``weight_bits`` is the widest synaptic weight the chip stores.  ``sources`` and
    ``confidence`` map each name in ``LIMIT_FIELDS`` to its source and confidence mark.
    A limit of None is unknown and is not checked.
    """

    name: str
    neurons_per_core: int
    synaptic_memory_bytes_per_core: int
    fan_in_axons_per_core: int | None
    fan_out_axons_per_core: int | None
    cores_per_chip: int
    weight_bits: int
    sources: dict[str, str] = field(default_factory=dict)
    confidence: dict[str, str] = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise ValueError(f"ChipLimits.name = {self.name!r} is invalid; it must be a non-empty string")
        for key in LIMIT_FIELDS:
            value = getattr(self, key)
            required = key in ("neurons_per_core", "synaptic_memory_bytes_per_core", "cores_per_chip", "weight_bits")
            if value is None and not required:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                allowed = "an integer >= 1" if required else "an integer >= 1, or None when unknown"
                raise ValueError(f"ChipLimits.{key} of {self.name} = {value!r} is invalid; it must be {allowed}")
            if key == "weight_bits" and value > 32:
                raise ValueError(f"ChipLimits.weight_bits of {self.name} = {value} is invalid; it must be 1 to 32")
        for key in LIMIT_FIELDS:
            if not str(self.sources.get(key, "")).strip():
                raise ValueError(f"ChipLimits.sources of {self.name} lacks {key!r}; every limit needs a source")
            if self.confidence.get(key) not in LIMIT_CONFIDENCE:
                raise ValueError(f"ChipLimits.confidence[{key!r}] of {self.name} = {self.confidence.get(key)!r} is "
                                 f"invalid; allowed values are {', '.join(LIMIT_CONFIDENCE)}")

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "limits": {key: {"value": getattr(self, key), "source": self.sources[key],
                             "confidence": self.confidence[key]} for key in LIMIT_FIELDS},
            "notes": list(self.notes),
        }


_DAVIES_2018 = ('Davies et al., "Loihi: A Neuromorphic Manycore Processor with On-Chip Learning", '
                "IEEE Micro 38(1), 2018, table of core resources")
_LOIHI2_BRIEF = ('Intel Labs technology brief "Taking Neuromorphic Computing to the Next Level with Loihi 2" '
                 "(2021): up to 1 M neurons and 120 M synapses per chip, 128 neuron cores")
_LAVA_DENSE = ("lava-nc 0.10, lava/proc/dense/process.py: fixed-point weights are scaled to an 8-bit "
               "mantissa (w_scale = 8 - num_weight_bits + weight_exp)")

LOIHI1 = ChipLimits(
    name="loihi1",
    neurons_per_core=1024,
    synaptic_memory_bytes_per_core=128 * KIB,
    fan_in_axons_per_core=4096,
    fan_out_axons_per_core=4096,
    cores_per_chip=128,
    weight_bits=9,
    sources={key: _DAVIES_2018 for key in LIMIT_FIELDS},
    confidence={key: "second-hand" for key in LIMIT_FIELDS},
    notes=("1,024 compartments per core are counted as 1,024 one-compartment neurons.",),
)

LOIHI2 = ChipLimits(
    name="loihi2",
    neurons_per_core=8192,
    synaptic_memory_bytes_per_core=128 * KIB,
    fan_in_axons_per_core=None,
    fan_out_axons_per_core=None,
    cores_per_chip=128,
    weight_bits=8,
    sources={
        "neurons_per_core": f"2**20 (\"1 M\") neurons / 128 cores, from {_LOIHI2_BRIEF}",
        "synaptic_memory_bytes_per_core": "vendor material quoted as 128 KB or as 192 KB of SRAM per neuron core",
        "fan_in_axons_per_core": "no public per-core figure found",
        "fan_out_axons_per_core": "no public per-core figure found",
        "cores_per_chip": _LOIHI2_BRIEF,
        "weight_bits": _LAVA_DENSE,
    },
    confidence={
        "neurons_per_core": "derived",
        "synaptic_memory_bytes_per_core": "unresolved",
        "fan_in_axons_per_core": "unknown",
        "fan_out_axons_per_core": "unknown",
        "cores_per_chip": "second-hand",
        "weight_bits": "second-hand",
    },
    notes=(
        "Synaptic memory per core: sources give 128 KB or 192 KB, so the conservative 128 KB is used.",
        "The per-chip maximum of 120 M synapses is not checked per core; the synaptic memory limit stands for it.",
        "Fan-in and fan-out axon limits per core are unknown and not checked.",
    ),
)

CHIPS: dict[str, ChipLimits] = {LOIHI1.name: LOIHI1, LOIHI2.name: LOIHI2}


def _entry_value(entry: object, path: Path, key: str) -> tuple[int | None, str | None, str | None]:
    """Return (value, source, confidence) of one entry: a number, null, or an object with ``value``."""
    source = confidence = None
    if isinstance(entry, dict):
        unknown = sorted(set(entry) - {"value", "source", "confidence"})
        if unknown:
            raise ChipLimitsError(f"chip limits file {path}: entry {key!r} has unknown field {unknown[0]!r}; "
                                  "allowed fields are value, source, confidence", path=path, key=key)
        if "value" not in entry:
            raise ChipLimitsError(f"chip limits file {path}: entry {key!r} has no 'value'; give an integer >= 1",
                                  path=path, key=key)
        source, confidence = entry.get("source"), entry.get("confidence")
        for name, text in (("source", source), ("confidence", confidence)):
            if text is not None and (not isinstance(text, str) or not text.strip()):
                raise ChipLimitsError(f"chip limits file {path}: field {name!r} of {key!r} is {text!r}; it must "
                                      "be a non-empty string", path=path, key=key)
        if confidence is not None and confidence not in LIMIT_CONFIDENCE:
            raise ChipLimitsError(f"chip limits file {path}: confidence of {key!r} is {confidence!r}; allowed "
                                  f"values are {', '.join(LIMIT_CONFIDENCE)}", path=path, key=key)
        entry = entry["value"]
    if entry is None:
        return None, source, confidence
    if isinstance(entry, float) and math.isfinite(entry) and entry.is_integer():
        entry = int(entry)
    if isinstance(entry, bool) or not isinstance(entry, int) or entry < 1:
        raise ChipLimitsError(f"chip limits file {path}: value of {key!r} is {entry!r}; it must be an integer "
                              ">= 1 (bytes for synaptic_memory_bytes_per_core), or null where unknown",
                              path=path, key=key)
    return entry, source, confidence


def load_chip_limits(path: str | os.PathLike, *, base: str | ChipLimits = "loihi2") -> ChipLimits:
    """Return ``base`` (a name in ``CHIPS`` or a ``ChipLimits``) with limits replaced from the JSON file ``path``.

    The file maps limit names (``LIMIT_FIELDS``, plus ``name``) to an integer, to null for
    "unknown", or to an object with ``value`` and optional ``source`` and ``confidence``::

        {"name": "my-chip", "neurons_per_core": 4096,
         "synaptic_memory_bytes_per_core": {"value": 196608, "source": "datasheet rev 2"}}

    A replaced limit gets confidence "user" unless the file sets one.  Raises
    ``ChipLimitsError`` naming the file and key for an unreadable file, invalid JSON, a
    duplicate or unknown key, or a value that is not an integer >= 1.
    """
    if isinstance(base, str):
        if base not in CHIPS:
            raise ChipLimitsError(f"unknown base chip {base!r}; choose from {', '.join(CHIPS)}", key="base")
        base = CHIPS[base]
    path = Path(path)
    data = read_json_object(path, file_kind="chip limits file", contents="limit names to values", error=ChipLimitsError)
    known = {f.name for f in fields(ChipLimits)} & ({"name"} | set(LIMIT_FIELDS))
    changes: dict[str, object] = {}
    sources, confidence = dict(base.sources), dict(base.confidence)
    for key, entry in data.items():
        if key not in known:
            raise ChipLimitsError(f"chip limits file {path}: unknown key {key!r}; allowed keys are "
                                  f"{', '.join(sorted(known))}", path=path, key=key)
        if key == "name":
            if not isinstance(entry, str) or not entry.strip():
                raise ChipLimitsError(f"chip limits file {path}: name is {entry!r}; it must be a non-empty string",
                                      path=path, key=key)
            changes["name"] = entry
            continue
        value, source, mark = _entry_value(entry, path, key)
        changes[key] = value
        sources[key] = source or f"user file {path}"
        confidence[key] = mark or ("unknown" if value is None else "user")
    changes.setdefault("name", f"{base.name} (modified by {path.name})")
    try:
        limits = replace(base, sources=sources, confidence=confidence,
                         notes=(*base.notes, f"Limits {', '.join(sorted(data))} replaced from {path}."), **changes)
    except ValueError as error:
        raise ChipLimitsError(f"chip limits file {path}: {error}", path=path) from None
    logger.info("chip limits: %d entries of %s replaced from %s", len(data), base.name, path)
    return limits
