"""Tests of hardware.energy: the constant table, user overrides and the estimate."""

from __future__ import annotations

import json
import math

import pytest

from hardware.energy import (
    CONFIDENCE_LEVELS,
    DEFAULT_CONSTANTS,
    EnergyConstant,
    EnergyTableError,
    energy_table_markdown,
    estimate_energy,
    load_energy_table,
)

# Values and confidence marks as published (Loihi: Davies et al. 2018, Table 2;
# 45 nm: Horowitz, ISSCC 2014), both quoted second-hand.
EXPECTED = {
    "loihi_sop_pj": (23.6, "second-hand"),
    "loihi_neuron_update_active_pj": (81.0, "second-hand"),
    "loihi_neuron_update_inactive_pj": (52.0, "second-hand"),
    "cmos45_fp32_add_pj": (0.9, "second-hand"),
    "cmos45_fp32_mult_pj": (3.7, "second-hand"),
    "cmos45_fp32_mac_pj": (4.6, "derived"),
    "cmos45_int8_add_pj": (0.03, "second-hand"),
    "cmos45_int8_mult_pj": (0.2, "second-hand"),
}


def write_json(tmp_path, content, name="energy.json"):
    path = tmp_path / name
    path.write_text(content if isinstance(content, str) else json.dumps(content), encoding="utf-8")
    return path


def test_default_table_values():
    table = load_energy_table()
    assert set(table) == set(EXPECTED)
    for key, (value, confidence) in EXPECTED.items():
        assert table[key].value == pytest.approx(value, rel=1e-12), key
        assert table[key].confidence == confidence, key
        assert table[key].unit == "pJ", key


def test_default_table_sources():
    table = load_energy_table()
    for key in ("loihi_sop_pj", "loihi_neuron_update_active_pj", "loihi_neuron_update_inactive_pj"):
        assert "Davies" in table[key].source
        assert "Table 2" in table[key].source
    for key in ("cmos45_fp32_add_pj", "cmos45_fp32_mult_pj", "cmos45_int8_add_pj", "cmos45_int8_mult_pj"):
        assert "Horowitz" in table[key].source
        assert "ISSCC 2014" in table[key].source


def test_default_mac_is_mult_plus_add():
    table = load_energy_table()
    assert table["cmos45_fp32_mac_pj"].value == table["cmos45_fp32_mult_pj"].value + table["cmos45_fp32_add_pj"].value


def test_default_table_is_a_copy():
    first = load_energy_table()
    first.pop("loihi_sop_pj")
    assert "loihi_sop_pj" in load_energy_table()
    assert len(DEFAULT_CONSTANTS) == len(EXPECTED)


def test_override_object_and_number(tmp_path):
    path = write_json(tmp_path, {"loihi_sop_pj": {"value": 20.0, "source": "my chip"}, "cmos45_int8_add_pj": 0.05})
    table = load_energy_table(path)
    assert table["loihi_sop_pj"].value == 20.0
    assert table["loihi_sop_pj"].source == "my chip"
    assert table["loihi_sop_pj"].confidence == "user"
    assert table["cmos45_int8_add_pj"].value == 0.05
    assert str(path) in table["cmos45_int8_add_pj"].source
    assert table["loihi_neuron_update_active_pj"].value == 81.0


def test_override_keeps_given_confidence(tmp_path):
    path = write_json(tmp_path, {"loihi_sop_pj": {"value": 25, "confidence": "confirmed", "unit": "pJ"}})
    constant = load_energy_table(path)["loihi_sop_pj"]
    assert constant.confidence == "confirmed"
    assert constant.value == 25.0
    assert isinstance(constant.value, float)


def test_override_part_recomputes_mac(tmp_path):
    table = load_energy_table(write_json(tmp_path, {"cmos45_fp32_add_pj": 1.0}))
    assert table["cmos45_fp32_mac_pj"].value == table["cmos45_fp32_mult_pj"].value + 1.0
    assert "after user overrides" in table["cmos45_fp32_mac_pj"].source


def test_override_mac_wins_over_parts(tmp_path):
    table = load_energy_table(write_json(tmp_path, {"cmos45_fp32_add_pj": 1.0, "cmos45_fp32_mac_pj": 7.0}))
    assert table["cmos45_fp32_mac_pj"].value == 7.0
    assert table["cmos45_fp32_mac_pj"].confidence == "user"


@pytest.mark.parametrize(
    "content, key, message",
    [
        ({"loihi_spop_pj": 20.0}, "loihi_spop_pj", "unknown key"),
        ({"loihi_sop_pj": "20"}, "loihi_sop_pj", "must be a number"),
        ({"loihi_sop_pj": True}, "loihi_sop_pj", "must be a number"),
        ({"loihi_sop_pj": None}, "loihi_sop_pj", "must be a number"),
        ({"loihi_sop_pj": 0}, "loihi_sop_pj", "finite and > 0"),
        ({"loihi_sop_pj": -1.5}, "loihi_sop_pj", "finite and > 0"),
        ('{"loihi_sop_pj": NaN}', "loihi_sop_pj", "finite and > 0"),
        ('{"loihi_sop_pj": Infinity}', "loihi_sop_pj", "finite and > 0"),
        ({"loihi_sop_pj": {"source": "x"}}, "loihi_sop_pj", "no 'value'"),
        ({"loihi_sop_pj": {"value": 1, "note": "x"}}, "loihi_sop_pj", "unknown field 'note'"),
        ({"loihi_sop_pj": {"value": 1, "unit": "fJ"}}, "loihi_sop_pj", "unit 'fJ'"),
        ({"loihi_sop_pj": {"value": 1, "confidence": "sure"}}, "loihi_sop_pj", "confidence"),
        ({"loihi_sop_pj": {"value": 1, "source": ""}}, "loihi_sop_pj", "non-empty string"),
        ('{"loihi_sop_pj": 1, "loihi_sop_pj": 2}', "loihi_sop_pj", "more than once"),
    ],
)
def test_override_rejects_bad_entry(tmp_path, content, key, message):
    path = write_json(tmp_path, content)
    with pytest.raises(EnergyTableError, match=message) as caught:
        load_energy_table(path)
    assert caught.value.key == key
    assert caught.value.path == path
    assert str(path) in str(caught.value)
    assert key in str(caught.value)


@pytest.mark.parametrize(
    "content, message",
    [
        ('{"loihi_sop_pj": 20.0', "not valid JSON"),
        ("[1, 2]", "must contain a JSON object"),
        ("", "not valid JSON"),
    ],
)
def test_override_rejects_bad_file(tmp_path, content, message):
    path = write_json(tmp_path, content)
    with pytest.raises(EnergyTableError, match=message) as caught:
        load_energy_table(path)
    assert str(path) in str(caught.value)


def test_override_missing_file(tmp_path):
    path = tmp_path / "absent.json"
    with pytest.raises(EnergyTableError, match="cannot read") as caught:
        load_energy_table(path)
    assert str(path) in str(caught.value)
    assert isinstance(caught.value, ValueError)


def test_override_binary_file(tmp_path):
    path = tmp_path / "binary.json"
    path.write_bytes(b"\xff\xfe\x00\x81")
    with pytest.raises(EnergyTableError, match="cannot read"):
        load_energy_table(path)


@pytest.mark.parametrize(
    "changes, field",
    [
        ({"key": "not a key"}, "key"),
        ({"value": 0.0}, "value"),
        ({"value": float("nan")}, "value"),
        ({"value": "1"}, "value"),
        ({"unit": " "}, "unit"),
        ({"source": ""}, "source"),
        ({"confidence": "probable"}, "confidence"),
    ],
)
def test_constant_validation(changes, field):
    values = dict(key="x_pj", value=1.0, unit="pJ", operation="op", source="src", confidence="derived")
    values.update(changes)
    with pytest.raises(ValueError, match=field):
        EnergyConstant(**values)


def test_estimate_arithmetic():
    table = load_energy_table()
    pj = {key: constant.value for key, constant in table.items()}
    estimate = estimate_energy(table, synaptic_operations=1000, neuron_updates=500,
                               active_neuron_updates=200, macs=4000)

    assert estimate.snn_45nm_fp32.picojoules == pytest.approx(1000 * pj["cmos45_fp32_add_pj"])
    assert estimate.snn_45nm_int8.picojoules == pytest.approx(1000 * pj["cmos45_int8_add_pj"])
    assert estimate.loihi_synaptic.picojoules == pytest.approx(1000 * pj["loihi_sop_pj"])
    expected_neuron = 200 * pj["loihi_neuron_update_active_pj"] + 300 * pj["loihi_neuron_update_inactive_pj"]
    assert estimate.loihi_neuron_update.picojoules == pytest.approx(expected_neuron)
    assert estimate.loihi_total.picojoules == pytest.approx(1000 * pj["loihi_sop_pj"] + expected_neuron)
    assert estimate.cnn_45nm_fp32.picojoules == pytest.approx(4000 * pj["cmos45_fp32_mac_pj"])
    expected_int8 = 4000 * (pj["cmos45_int8_mult_pj"] + pj["cmos45_int8_add_pj"])
    assert estimate.cnn_45nm_int8.picojoules == pytest.approx(expected_int8)
    assert estimate.snn_to_cnn_fp32 == pytest.approx(
        estimate.snn_45nm_fp32.picojoules / estimate.cnn_45nm_fp32.picojoules)
    assert estimate.snn_to_cnn_int8 == pytest.approx(
        estimate.snn_45nm_int8.picojoules / estimate.cnn_45nm_int8.picojoules)
    assert estimate.loihi_to_cnn_fp32 == pytest.approx(
        estimate.loihi_total.picojoules / estimate.cnn_45nm_fp32.picojoules)


def test_estimate_names_constants():
    estimate = estimate_energy(load_energy_table(), synaptic_operations=10, neuron_updates=10, macs=10)
    assert estimate.snn_45nm_fp32.constants == ("cmos45_fp32_add_pj",)
    assert estimate.loihi_synaptic.constants == ("loihi_sop_pj",)
    assert estimate.cnn_45nm_fp32.constants == ("cmos45_fp32_mac_pj",)
    assert set(estimate.loihi_total.constants) == {
        "loihi_sop_pj", "loihi_neuron_update_active_pj", "loihi_neuron_update_inactive_pj"}
    assert set(estimate.constants_used()) <= set(EXPECTED)
    for term in estimate.terms():
        assert term.constants
        assert term.formula


def test_estimate_all_active_by_default():
    table = load_energy_table()
    estimate = estimate_energy(table, synaptic_operations=0, neuron_updates=100, macs=1)
    assert estimate.loihi_neuron_update.picojoules == pytest.approx(100 * table["loihi_neuron_update_active_pj"].value)
    assert "upper bound" in estimate.caveats


def test_estimate_caveats_memory():
    estimate = estimate_energy(load_energy_table(), synaptic_operations=1, neuron_updates=1, macs=1)
    assert "memory traffic" in estimate.caveats
    assert "dominates" in estimate.caveats


def test_estimate_caveats_user_constants(tmp_path):
    table = load_energy_table(write_json(tmp_path, {"loihi_sop_pj": 20.0}))
    estimate = estimate_energy(table, synaptic_operations=1, neuron_updates=1, macs=1)
    assert "loihi_sop_pj" in estimate.caveats
    assert estimate.loihi_synaptic.picojoules == 20.0


def test_estimate_zero_macs_gives_no_ratio():
    estimate = estimate_energy(load_energy_table(), synaptic_operations=5, neuron_updates=5, macs=0)
    assert estimate.snn_to_cnn_fp32 is None
    assert estimate.snn_to_cnn_int8 is None
    assert estimate.loihi_to_cnn_fp32 is None


def test_estimate_accepts_per_sample_floats():
    estimate = estimate_energy(load_energy_table(), synaptic_operations=12.5, neuron_updates=3.0, macs=7.25)
    assert math.isfinite(estimate.snn_to_cnn_fp32)


@pytest.mark.parametrize(
    "counts, field",
    [
        (dict(synaptic_operations=-1, neuron_updates=1, macs=1), "synaptic_operations"),
        (dict(synaptic_operations=1, neuron_updates=float("nan"), macs=1), "neuron_updates"),
        (dict(synaptic_operations=1, neuron_updates=1, macs="3"), "macs"),
        (dict(synaptic_operations=True, neuron_updates=1, macs=1), "synaptic_operations"),
        (dict(synaptic_operations=1, neuron_updates=10, macs=1, active_neuron_updates=11), "active_neuron_updates"),
        (dict(synaptic_operations=1, neuron_updates=10, macs=1, active_neuron_updates=-1), "active_neuron_updates"),
    ],
)
def test_estimate_rejects_bad_counts(counts, field):
    with pytest.raises(ValueError, match=field):
        estimate_energy(load_energy_table(), **counts)


def test_estimate_rejects_incomplete_table():
    table = load_energy_table()
    del table["loihi_sop_pj"]
    with pytest.raises(EnergyTableError, match="loihi_sop_pj"):
        estimate_energy(table, synaptic_operations=1, neuron_updates=1, macs=1)


def test_markdown_rows():
    table = load_energy_table()
    lines = energy_table_markdown(table).splitlines()
    assert lines[0] == "| name | value | unit | operation | source | confidence |"
    assert len(lines) == 2 + len(table)
    sop_row = next(line for line in lines if line.startswith("| loihi_sop_pj |"))
    assert "| 23.6 | pJ |" in sop_row
    assert sop_row.endswith("| second-hand |")
    mac_row = next(line for line in lines if line.startswith("| cmos45_fp32_mac_pj |"))
    assert "| 4.6 |" in mac_row


def test_markdown_escapes_pipes(tmp_path):
    table = load_energy_table(write_json(tmp_path, {"loihi_sop_pj": {"value": 1, "source": "a | b"}}))
    sop_row = next(line for line in energy_table_markdown(table).splitlines() if "loihi_sop_pj" in line)
    assert "a \\| b" in sop_row
    assert sop_row.count(" | ") == 5


def test_confidence_levels_listed():
    assert set(CONFIDENCE_LEVELS) >= {"confirmed", "second-hand", "derived"}
