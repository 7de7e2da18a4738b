"""Cohorts of people blowing: recordings, metadata, breathing cycles, the HDF5 store and the simulator.

Heavy modules (OpenCV, h5py, pyspiro, torch) are imported by the submodules that need
them; import ``cohort.readers``, ``cohort.metadata``, ``cohort.segmentation``,
``cohort.store``, ``cohort.dataset``, ``cohort.folds`` or ``cohort.simulator`` directly.
"""

from cohort.flow import (
    ForcedExpiration,
    fit_forced_expiration,
    from_time_constants,
    pef_range,
    single_compartment_tau,
)
from cohort.recording import MODALITIES, Cycle, Recording
from cohort.synthetic import (
    ABNORMAL_FEV1_FVC,
    DEFAULT_FPS_HZ,
    BreathingClip,
    ClipBatch,
    ClipSpec,
    generate_clips,
    stack_clips,
)
from cohort.thermal import (
    FaceLayout,
    MaskHeating,
    ThermalScene,
    ellipse_weight,
    head_motion,
    mask_temperature_rise,
    render_thermal_frames,
)

__all__ = [
    "MODALITIES",
    "Cycle",
    "Recording",
    "ABNORMAL_FEV1_FVC",
    "DEFAULT_FPS_HZ",
    "BreathingClip",
    "ClipBatch",
    "ClipSpec",
    "FaceLayout",
    "ForcedExpiration",
    "MaskHeating",
    "ThermalScene",
    "ellipse_weight",
    "fit_forced_expiration",
    "from_time_constants",
    "generate_clips",
    "head_motion",
    "mask_temperature_rise",
    "pef_range",
    "render_thermal_frames",
    "single_compartment_tau",
    "stack_clips",
]
