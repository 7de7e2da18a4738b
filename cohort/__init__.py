"""Synthetic cohorts: forced-expiration flow curves and thermal clips of a person blowing."""

from cohort.flow import (
    ForcedExpiration,
    fit_forced_expiration,
    from_time_constants,
    pef_range,
    single_compartment_tau,
)
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
