"""Energy constants and the arithmetic-energy estimate of an SNN run against a CNN.

Every constant sits in one table (``DEFAULT_CONSTANTS``) with its unit, the operation it
prices, its source and a confidence mark:

- "confirmed": read in the primary source.
- "second-hand": quoted by several later works that name the primary table, while the
  primary source itself was not checked.
- "derived": computed from other entries of this table.
- "user": replaced by the user through a JSON file (``load_energy_table``).

The estimate multiplies operation counts by these constants.  It prices arithmetic only:
memory traffic (weight, state and activation reads and writes) is left out, and it often
dominates.  ``EnergyEstimate.caveats`` states this next to the numbers.
"""

from __future__ import annotations

import json
import logging
import math
import numbers
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Mapping

logger = logging.getLogger(__name__)

CONFIDENCE_LEVELS = ("confirmed", "second-hand", "derived", "user")

_LOIHI_SOURCE = ('Davies et al., "Loihi: A Neuromorphic Manycore Processor with On-Chip Learning", '
                 "IEEE Micro 38(1), 2018, Table 2 (pre-silicon simulation at 0.75 V, minimum values)")
_HOROWITZ_SOURCE = ('Horowitz, "Computing\'s energy problem (and what we can do about it)", ISSCC 2014, '
                    "per-operation energies for 45 nm CMOS at 0.9 V")


class EnergyTableError(ValueError):
    """Invalid energy table or override file; ``path`` and ``key`` name the file and constant, where known."""

    def __init__(self, message: str, *, path: str | os.PathLike | None = None, key: str | None = None):
        super().__init__(message)
        self.path = path
        self.key = key


@dataclass(frozen=True)
class EnergyConstant:
    """One energy figure: ``value`` in ``unit`` for the operation ``operation``."""

    key: str
    value: float
    unit: str
    operation: str
    source: str
    confidence: str

    def __post_init__(self) -> None:
        if not self.key.isidentifier():
            raise ValueError(f"EnergyConstant.key = {self.key!r} is invalid; it must be a Python identifier")
        if isinstance(self.value, bool) or not isinstance(self.value, (int, float)):
            raise ValueError(f"EnergyConstant.value of {self.key} = {self.value!r} is invalid; it must be a number")
        if not math.isfinite(self.value) or self.value <= 0:
            raise ValueError(f"EnergyConstant.value of {self.key} = {self.value!r} is invalid; it must be finite "
                             "and > 0")
        for field_name in ("unit", "operation", "source"):
            if not getattr(self, field_name).strip():
                raise ValueError(f"EnergyConstant.{field_name} of {self.key} is empty; it must name the "
                                 f"{field_name}")
        if self.confidence not in CONFIDENCE_LEVELS:
            raise ValueError(f"EnergyConstant.confidence of {self.key} = {self.confidence!r} is invalid; "
                             f"allowed values are {', '.join(CONFIDENCE_LEVELS)}")


EnergyTable = dict[str, EnergyConstant]

# The fp32 MAC entry is the sum of the fp32 multiply and add entries.  load_energy_table
# recomputes it when the user overrides either part but not the MAC itself.
_MAC_PARTS = {
    "cmos45_fp32_mac_pj": ("cmos45_fp32_mult_pj", "cmos45_fp32_add_pj"),
}

DEFAULT_CONSTANTS: tuple[EnergyConstant, ...] = (
    EnergyConstant("loihi_sop_pj", 23.6, "pJ", "synaptic spike operation on Loihi (minimum)",
                   _LOIHI_SOURCE, "second-hand"),
    EnergyConstant("loihi_neuron_update_active_pj", 81.0, "pJ", "update of one active neuron on Loihi",
                   _LOIHI_SOURCE, "second-hand"),
    EnergyConstant("loihi_neuron_update_inactive_pj", 52.0, "pJ", "update of one inactive neuron on Loihi",
                   _LOIHI_SOURCE, "second-hand"),
    EnergyConstant("cmos45_fp32_add_pj", 0.9, "pJ", "32-bit floating-point add (accumulate)",
                   _HOROWITZ_SOURCE, "second-hand"),
    EnergyConstant("cmos45_fp32_mult_pj", 3.7, "pJ", "32-bit floating-point multiply",
                   _HOROWITZ_SOURCE, "second-hand"),
    EnergyConstant("cmos45_fp32_mac_pj", 3.7 + 0.9, "pJ", "32-bit floating-point multiply-accumulate",
                   "sum of cmos45_fp32_mult_pj and cmos45_fp32_add_pj", "derived"),
    EnergyConstant("cmos45_int8_add_pj", 0.03, "pJ", "8-bit integer add (accumulate)",
                   _HOROWITZ_SOURCE, "second-hand"),
    EnergyConstant("cmos45_int8_mult_pj", 0.2, "pJ", "8-bit integer multiply",
                   _HOROWITZ_SOURCE, "second-hand"),
)

_OVERRIDE_FIELDS = ("value", "source", "confidence", "unit")


def default_energy_table() -> EnergyTable:
    """Return a fresh copy of the built-in table, keyed by constant key."""
    return {constant.key: constant for constant in DEFAULT_CONSTANTS}


def read_json_object(path: Path, *, file_kind: str, contents: str, error: type | None = None) -> dict:
    """Read a JSON object from ``path``, rejecting repeated keys.

    ``file_kind`` names the file in messages ("energy table file"), ``contents`` describes
    what the object maps ("constant keys to values"), and ``error`` is the exception raised, called
    as ``error(message, path=..., key=...)`` (``EnergyTableError`` by default).
    """
    error = error or EnergyTableError

    def reject_duplicates(pairs: list[tuple[str, object]]) -> dict:
        keys = [key for key, _ in pairs]
        duplicates = sorted({key for key in keys if keys.count(key) > 1})
        if duplicates:
            raise error(f"{file_kind} {path}: key {duplicates[0]!r} appears more than once; keep one entry per key",
                        path=path, key=duplicates[0])
        return dict(pairs)

    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as problem:
        raise error(f"cannot read {file_kind} {path}: {problem}", path=path) from None
    try:
        data = json.loads(text, object_pairs_hook=reject_duplicates)
    except json.JSONDecodeError as problem:
        raise error(f"{file_kind} {path} is not valid JSON: {problem.msg} at line {problem.lineno}, "
                    f"column {problem.colno}", path=path) from None
    if not isinstance(data, dict):
        raise error(f"{file_kind} {path} must contain a JSON object mapping {contents}, found {type(data).__name__}",
                    path=path)
    return data


def _check_value(value: object, path: Path, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise EnergyTableError(f"energy table file {path}: value of {key!r} is {value!r}; it must be a number "
                               "> 0 (in the unit of the built-in entry)", path=path, key=key)
    if not math.isfinite(value) or value <= 0:
        raise EnergyTableError(f"energy table file {path}: value of {key!r} is {value!r}; it must be finite "
                               "and > 0", path=path, key=key)
    return float(value)


def _override(default: EnergyConstant, entry: object, path: Path) -> EnergyConstant:
    """Return ``default`` with the fields given by one entry of a user file."""
    key = default.key
    if not isinstance(entry, dict):
        entry = {"value": entry}
    unknown = sorted(set(entry) - set(_OVERRIDE_FIELDS))
    if unknown:
        raise EnergyTableError(f"energy table file {path}: entry {key!r} has unknown field {unknown[0]!r}; "
                               f"allowed fields are {', '.join(_OVERRIDE_FIELDS)}", path=path, key=key)
    if "value" not in entry:
        raise EnergyTableError(f"energy table file {path}: entry {key!r} has no 'value'; give a number > 0",
                               path=path, key=key)
    value = _check_value(entry["value"], path, key)
    unit = entry.get("unit", default.unit)
    if unit != default.unit:
        raise EnergyTableError(f"energy table file {path}: entry {key!r} has unit {unit!r}, but this constant "
                               f"is in {default.unit}; convert the value to {default.unit}", path=path, key=key)
    source = entry.get("source", f"user file {path}")
    confidence = entry.get("confidence", "user")
    for field_name, text in (("source", source), ("confidence", confidence)):
        if not isinstance(text, str) or not text.strip():
            raise EnergyTableError(f"energy table file {path}: field {field_name!r} of {key!r} is {text!r}; "
                                   "it must be a non-empty string", path=path, key=key)
    if confidence not in CONFIDENCE_LEVELS:
        raise EnergyTableError(f"energy table file {path}: confidence of {key!r} is {confidence!r}; allowed "
                               f"values are {', '.join(CONFIDENCE_LEVELS)}", path=path, key=key)
    return replace(default, value=value, source=source, confidence=confidence)


def load_energy_table(path: str | os.PathLike | None = None) -> EnergyTable:
    """Return the built-in table, with entries replaced from the JSON file ``path`` if given.

    The file maps constant keys to a number or to an object with ``value`` and optional
    ``source``, ``confidence`` and ``unit`` (which must equal the built-in unit)::

        {"loihi_sop_pj": {"value": 20.0, "source": "my chip"}, "cmos45_fp32_add_pj": 0.8}

    An overridden entry gets confidence "user" unless the file sets one.  When the fp32
    multiply or add is overridden and the fp32 MAC is not, the MAC is recomputed as their
    sum.  Raises ``EnergyTableError`` naming the file and key for an unreadable file,
    invalid JSON, a duplicate or unknown key, and a value that is not a finite number > 0.
    """
    table = default_energy_table()
    if path is None:
        return table
    path = Path(path)
    data = read_json_object(path, file_kind="energy table file", contents="constant keys to values")
    for key, entry in data.items():
        if key not in table:
            raise EnergyTableError(f"energy table file {path}: unknown key {key!r}; allowed keys are "
                                   f"{', '.join(sorted(table))}", path=path, key=key)
        table[key] = _override(table[key], entry, path)

    for mac_key, parts in _MAC_PARTS.items():
        if mac_key not in data and any(part in data for part in parts):
            total = sum(table[part].value for part in parts)
            table[mac_key] = replace(table[mac_key], value=total,
                                     source=f"sum of {' and '.join(parts)} (after user overrides)")
    logger.info("energy table: %d constants overridden from %s (%s)", len(data), path, ", ".join(sorted(data)))
    return table


@dataclass(frozen=True)
class EnergyTerm:
    """One energy figure of an estimate, with the formula and the constants it used."""

    label: str
    picojoules: float
    formula: str
    constants: tuple[str, ...]


@dataclass(frozen=True)
class EnergyEstimate:
    """Arithmetic energy of one SNN run and of a CNN doing the same task.

    The ratios divide SNN energy by CNN energy and are None when the CNN count is 0.
    ``snn_to_cnn_fp32`` and ``snn_to_cnn_int8`` price both networks with the same 45 nm
    arithmetic.  ``loihi_to_cnn_fp32`` divides the Loihi total by the 45 nm fp32 CNN
    figure, so it compares a chip with a process-level figure.
    """

    snn_45nm_fp32: EnergyTerm
    snn_45nm_int8: EnergyTerm
    loihi_synaptic: EnergyTerm
    loihi_neuron_update: EnergyTerm
    loihi_total: EnergyTerm
    cnn_45nm_fp32: EnergyTerm
    cnn_45nm_int8: EnergyTerm
    snn_to_cnn_fp32: float | None
    snn_to_cnn_int8: float | None
    loihi_to_cnn_fp32: float | None
    caveats: str

    def terms(self) -> tuple[EnergyTerm, ...]:
        return (self.snn_45nm_fp32, self.snn_45nm_int8, self.loihi_synaptic, self.loihi_neuron_update,
                self.loihi_total, self.cnn_45nm_fp32, self.cnn_45nm_int8)

    def constants_used(self) -> tuple[str, ...]:
        """Return the keys of every constant used, in first-use order."""
        keys: dict[str, None] = {}
        for term in self.terms():
            keys.update(dict.fromkeys(term.constants))
        return tuple(keys)


def _check_count(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"estimate_energy {name} = {value!r} is invalid; it must be a number >= 0")
    value = float(value)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"estimate_energy {name} = {value!r} is invalid; it must be finite and >= 0")
    return value


def _ratio(numerator: float, denominator: float) -> float | None:
    return numerator / denominator if denominator > 0 else None


_REQUIRED_KEYS = ("loihi_sop_pj", "loihi_neuron_update_active_pj", "loihi_neuron_update_inactive_pj",
                  "cmos45_fp32_add_pj", "cmos45_fp32_mac_pj", "cmos45_int8_add_pj", "cmos45_int8_mult_pj")


def estimate_energy(table: Mapping[str, EnergyConstant], *, synaptic_operations: float, neuron_updates: float,
                    macs: float, active_neuron_updates: float | None = None) -> EnergyEstimate:
    """Estimate arithmetic energy (pJ) from operation counts of one run or one sample.

    ``synaptic_operations`` are the SNN's accumulates (spike x fan-out, see
    ``hardware.counting``), ``neuron_updates`` its neuron-state updates, and ``macs`` the
    multiply-accumulates of the CNN it is compared with.  All counts must cover the same
    unit of work, for example one sample.  The SNN on 45 nm is priced at one add per
    synaptic operation, with no cost for neuron updates.  On Loihi it is synaptic
    operations x ``loihi_sop_pj`` plus a separate neuron-update term.

    ``active_neuron_updates`` is how many of the updates count as active.  When None,
    every update is priced as active, an upper bound for that term.
    NOTE: the source table's exact definition of an active update was not checked, so
    the caller chooses one (for example, updates of neurons that received input).
    """
    missing = [key for key in _REQUIRED_KEYS if key not in table]
    if missing:
        raise EnergyTableError(f"energy table lacks {', '.join(missing)}; build it with load_energy_table",
                               key=missing[0])
    sops = _check_count("synaptic_operations", synaptic_operations)
    updates = _check_count("neuron_updates", neuron_updates)
    mac_count = _check_count("macs", macs)
    if active_neuron_updates is None:
        active = updates
    else:
        active = _check_count("active_neuron_updates", active_neuron_updates)
        if active > updates:
            raise ValueError(f"estimate_energy active_neuron_updates = {active_neuron_updates!r} is invalid; "
                             f"it must be <= neuron_updates = {neuron_updates!r}")

    def pj(key: str) -> float:
        return table[key].value

    snn_fp32 = EnergyTerm("SNN, 45 nm fp32 accumulate", sops * pj("cmos45_fp32_add_pj"),
                          "synaptic_operations x cmos45_fp32_add_pj", ("cmos45_fp32_add_pj",))
    snn_int8 = EnergyTerm("SNN, 45 nm int8 accumulate", sops * pj("cmos45_int8_add_pj"),
                          "synaptic_operations x cmos45_int8_add_pj", ("cmos45_int8_add_pj",))
    loihi_synaptic = EnergyTerm("SNN on Loihi, synaptic operations", sops * pj("loihi_sop_pj"),
                                "synaptic_operations x loihi_sop_pj", ("loihi_sop_pj",))
    loihi_neuron = EnergyTerm(
        "SNN on Loihi, neuron updates",
        active * pj("loihi_neuron_update_active_pj") + (updates - active) * pj("loihi_neuron_update_inactive_pj"),
        "active x loihi_neuron_update_active_pj + (neuron_updates - active) x loihi_neuron_update_inactive_pj",
        ("loihi_neuron_update_active_pj", "loihi_neuron_update_inactive_pj"),
    )
    loihi_total = EnergyTerm("SNN on Loihi, total", loihi_synaptic.picojoules + loihi_neuron.picojoules,
                             "synaptic term + neuron-update term",
                             (*loihi_synaptic.constants, *loihi_neuron.constants))
    cnn_fp32 = EnergyTerm("CNN, 45 nm fp32 MAC", mac_count * pj("cmos45_fp32_mac_pj"),
                          "macs x cmos45_fp32_mac_pj", ("cmos45_fp32_mac_pj",))
    cnn_int8 = EnergyTerm("CNN, 45 nm int8 MAC", mac_count * (pj("cmos45_int8_mult_pj") + pj("cmos45_int8_add_pj")),
                          "macs x (cmos45_int8_mult_pj + cmos45_int8_add_pj)",
                          ("cmos45_int8_mult_pj", "cmos45_int8_add_pj"))

    caveats = [
        "Arithmetic only: memory traffic (weight, state and activation reads and writes, cache and DRAM "
        "accesses) is left out, and it often dominates the energy of both networks.",
        "The 45 nm figures are per operation at 0.9 V. The Loihi figures are pre-silicon minima, "
        "not averages, and the Loihi-to-CNN ratio compares a chip with 45 nm operation figures.",
        "The 45 nm SNN figures leave out neuron-state updates, which only the Loihi total prices.",
    ]
    if active_neuron_updates is None:
        caveats.append("Every Loihi neuron update is priced as active, an upper bound for that term.")
    user_keys = sorted(key for key in table if table[key].confidence == "user")
    if user_keys:
        caveats.append(f"User-supplied constants: {', '.join(user_keys)}.")

    return EnergyEstimate(
        snn_45nm_fp32=snn_fp32, snn_45nm_int8=snn_int8, loihi_synaptic=loihi_synaptic,
        loihi_neuron_update=loihi_neuron, loihi_total=loihi_total, cnn_45nm_fp32=cnn_fp32, cnn_45nm_int8=cnn_int8,
        snn_to_cnn_fp32=_ratio(snn_fp32.picojoules, cnn_fp32.picojoules),
        snn_to_cnn_int8=_ratio(snn_int8.picojoules, cnn_int8.picojoules),
        loihi_to_cnn_fp32=_ratio(loihi_total.picojoules, cnn_fp32.picojoules),
        caveats=" ".join(caveats),
    )


def _markdown_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def energy_table_markdown(table: Mapping[str, EnergyConstant]) -> str:
    """Render the table as a Markdown table: name, value, unit, operation, source, confidence."""
    lines = ["| name | value | unit | operation | source | confidence |",
             "|---|---|---|---|---|---|"]
    for constant in table.values():
        cells = (constant.key, f"{constant.value:g}", constant.unit, constant.operation, constant.source,
                 constant.confidence)
        lines.append("| " + " | ".join(_markdown_cell(cell) for cell in cells) + " |")
    return "\n".join(lines)
