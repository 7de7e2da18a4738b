"""Wall-clock latency and peak resident memory of a callable, for the benchmark.

Latency uses ``time.perf_counter``.  Memory is the resident set size (RSS) from psutil,
summed over this process and all its descendants, because simulators such as Lava run
their model in child processes.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import psutil

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LatencyMeasurement:
    """Wall times in seconds of ``repeats`` timed calls, after ``warmup`` untimed calls.

    ``iqr_s`` is the 75th minus the 25th percentile (NumPy's linear interpolation).
    ``result`` is the return value of the last timed call.
    """

    times_s: tuple[float, ...]
    warmup: int
    median_s: float
    min_s: float
    max_s: float
    iqr_s: float
    result: Any = None

    @classmethod
    def from_times(cls, times_s: list[float], warmup: int, result: Any = None) -> "LatencyMeasurement":
        if not times_s:
            raise ValueError("LatencyMeasurement needs at least one time; times_s is empty")
        times = np.asarray(times_s, dtype=np.float64)
        q25, q75 = np.percentile(times, [25, 75])
        return cls(times_s=tuple(float(t) for t in times), warmup=warmup, median_s=float(np.median(times)),
                   min_s=float(times.min()), max_s=float(times.max()), iqr_s=float(q75 - q25), result=result)


def _check_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} = {value!r} is invalid; it must be an integer >= {minimum}")
    return value


def measure_latency(fn: Callable[[], Any], *, repeats: int, warmup: int = 1) -> LatencyMeasurement:
    """Call ``fn`` ``warmup`` times untimed, then ``repeats`` times timed one by one."""
    if not callable(fn):
        raise ValueError(f"fn = {fn!r} is invalid; it must be callable with no arguments")
    repeats = _check_int("repeats", repeats, 1)
    warmup = _check_int("warmup", warmup, 0)
    for _ in range(warmup):
        fn()
    times: list[float] = []
    result = None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    measurement = LatencyMeasurement.from_times(times, warmup, result)
    logger.debug("latency over %d repeats: median %.6f s, IQR %.6f s", repeats, measurement.median_s,
                 measurement.iqr_s)
    return measurement


@dataclass(frozen=True)
class MemoryMeasurement:
    """Peak resident memory (PSS where available, else RSS) in bytes of this process tree during a call.

    ``baseline_bytes`` is the RSS sampled just before the call, ``increase_bytes`` the
    peak minus that baseline (0 when memory only fell).  ``samples`` counts the RSS
    readings taken, ``interval_s`` is the sampling period requested.
    """

    peak_bytes: int
    baseline_bytes: int
    increase_bytes: int
    samples: int
    interval_s: float
    result: Any = None


def _resident_bytes(process: psutil.Process) -> int:
    """Return the PSS of ``process`` where the system reports it (Linux), else its RSS.

    PSS (proportional set size) divides each shared page among the processes sharing it.
    Lava forks one child per process it runs, and the children share most of their pages
    (libraries, copy-on-write memory) with the parent; summed RSS counts those pages once
    per child and overstates the tree's memory several times over.
    """
    try:
        return int(process.memory_full_info().pss)
    except (AttributeError, psutil.AccessDenied):
        return int(process.memory_info().rss)


def process_tree_rss(process: psutil.Process) -> int:
    """Return the resident memory in bytes of ``process`` plus all its descendants.

    Each process counts its PSS where available (see ``_resident_bytes``), else its RSS,
    which counts shared pages once per process.  A child that exits during the scan, or
    that this user may not inspect, is skipped.
    """
    total = _resident_bytes(process)
    for child in process.children(recursive=True):
        try:
            total += _resident_bytes(child)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return total


class _PeakSampler(threading.Thread):
    """Background thread that records the maximum of ``process_tree_rss`` until stopped."""

    def __init__(self, process: psutil.Process, interval_s: float):
        super().__init__(name="rss-sampler", daemon=True)
        self.process = process
        self.interval_s = interval_s
        self.peak = 0
        self.samples = 0
        self.error: BaseException | None = None
        self._stop_event = threading.Event()

    def sample(self) -> None:
        self.peak = max(self.peak, process_tree_rss(self.process))
        self.samples += 1

    def run(self) -> None:
        try:
            while not self._stop_event.is_set():
                self.sample()
                self._stop_event.wait(self.interval_s)
        except psutil.Error as error:
            self.error = error

    def stop(self) -> None:
        self._stop_event.set()
        self.join()


def measure_peak_memory(fn: Callable[[], Any], *, interval_s: float = 0.002) -> MemoryMeasurement:
    """Call ``fn`` once while a background thread samples the RSS of the process tree.

    The thread reads the RSS of this process and all descendant processes every
    ``interval_s`` seconds, and once more after ``fn`` returns.  Sampling can miss a
    short peak: one that lasts less than the interval, or one that rises and falls while
    ``fn`` holds the GIL in a long C call (the thread cannot run then).  The result is a
    lower bound on the true peak.  The thread takes the GIL for each reading, so measure
    latency in a separate call.  Exceptions from ``fn`` propagate after the thread stops.
    """
    if not callable(fn):
        raise ValueError(f"fn = {fn!r} is invalid; it must be callable with no arguments")
    if isinstance(interval_s, bool) or not isinstance(interval_s, (int, float)) \
            or not math.isfinite(interval_s) or interval_s <= 0:
        raise ValueError(f"interval_s = {interval_s!r} is invalid; it must be a finite number of seconds > 0")
    process = psutil.Process()
    baseline = process_tree_rss(process)
    sampler = _PeakSampler(process, float(interval_s))
    sampler.peak = baseline
    sampler.start()
    try:
        result = fn()
    finally:
        sampler.stop()
    # Read once more after the thread has stopped, so the two threads never update the peak together.
    sampler.sample()
    if sampler.error is not None:
        logger.warning("RSS sampling stopped early after %d samples: %s", sampler.samples, sampler.error)
    peak = sampler.peak
    logger.debug("peak RSS %d bytes over baseline %d bytes from %d samples", peak, baseline, sampler.samples)
    return MemoryMeasurement(peak_bytes=peak, baseline_bytes=baseline, increase_bytes=max(peak - baseline, 0),
                             samples=sampler.samples, interval_s=float(interval_s), result=result)
