"""Tests of hardware.measure: latency statistics and peak RSS of the process tree."""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import psutil
import pytest

from hardware.measure import LatencyMeasurement, measure_latency, measure_peak_memory, process_tree_rss

MIB = 2**20


def test_latency_of_sleep():
    measurement = measure_latency(lambda: time.sleep(0.02), repeats=5, warmup=1)
    assert len(measurement.times_s) == 5
    assert 0.018 <= measurement.median_s <= 0.1
    assert measurement.min_s <= measurement.median_s <= measurement.max_s
    assert measurement.iqr_s >= 0


def test_latency_returns_last_result():
    calls = []

    def count_call():
        calls.append(None)
        return len(calls)

    measurement = measure_latency(count_call, repeats=3, warmup=2)
    assert len(calls) == 5
    assert measurement.result == 5
    assert measurement.warmup == 2


def test_latency_statistics_exact():
    measurement = LatencyMeasurement.from_times([4.0, 1.0, 3.0, 2.0], warmup=0)
    assert measurement.times_s == (4.0, 1.0, 3.0, 2.0)
    assert measurement.median_s == 2.5
    assert measurement.min_s == 1.0
    assert measurement.max_s == 4.0
    # Linear interpolation: the 25th percentile is 1.75, the 75th 3.25.
    assert measurement.iqr_s == 1.5


@pytest.mark.parametrize("repeats, warmup", [(0, 1), (-1, 0), (2, -1), (1.5, 0), (True, 0), (1, "1")])
def test_latency_rejects_bad_counts(repeats, warmup):
    with pytest.raises(ValueError, match="repeats|warmup"):
        measure_latency(lambda: None, repeats=repeats, warmup=warmup)


def test_latency_rejects_non_callable():
    with pytest.raises(ValueError, match="callable"):
        measure_latency(3, repeats=1)


def test_peak_memory_sees_numpy_array():
    def allocate_and_free():
        block = np.ones(200 * MIB, dtype=np.uint8)  # np.ones writes every page, so it is resident
        time.sleep(0.05)
        return int(block[-1])

    measurement = measure_peak_memory(allocate_and_free)
    assert measurement.result == 1
    assert measurement.increase_bytes >= 150 * MIB
    assert measurement.peak_bytes - measurement.baseline_bytes == measurement.increase_bytes
    assert measurement.samples >= 2


def test_peak_memory_counts_child_process():
    script = "import time; block = b'x' * (200 * 2**20); time.sleep(0.5)"

    def run_child():
        return subprocess.run([sys.executable, "-c", script], check=True).returncode

    measurement = measure_peak_memory(run_child)
    assert measurement.result == 0
    assert measurement.increase_bytes >= 150 * MIB


def test_peak_memory_propagates_error():
    def fail():
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        measure_peak_memory(fail)


@pytest.mark.parametrize("interval", [0, -0.1, float("inf"), "0.01", True])
def test_peak_memory_rejects_bad_interval(interval):
    with pytest.raises(ValueError, match="interval_s"):
        measure_peak_memory(lambda: None, interval_s=interval)


def test_process_tree_rss_positive():
    assert process_tree_rss(psutil.Process()) > 0
