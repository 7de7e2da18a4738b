"""Adult clinic population for the cohort simulator: demographics, reference values, disease.

Every distribution below is an estimate for an adult population referred for spirometry,
not a fit to a registry. Sampling uses only the ``numpy.random.Generator`` passed in.

Demographics
    age 20-80 y, normal with mean 55 y and SD 15 y, redrawn outside the range (20-80 y is
    the adult range of Hankinson 1999); sex male with probability 0.5; height normal, men
    176 +/- 7 cm and women 163 +/- 6.5 cm, redrawn outside the Hankinson 1999 adult
    ranges (men 158-194 cm, women 145-180 cm); BMI log-normal with median 27 kg/m2 and
    log-SD 0.16, weight = BMI * height^2.
Smoking
    never 45 %, former 35 %, current 20 %. Pack-years are log-normal, former smokers
    median 20 and log-SD 0.7, current smokers median 25 and log-SD 0.6, capped at two
    packs a day since age 15.
Reference values
    FEV1, FVC, FEV1/FVC and their LLN from the race-neutral GLI global equations
    (Bowerman et al., Am J Respir Crit Care Med 2023, ``pyspiro.BOWERMAN_2022``). PEF and
    its LLN from Hankinson et al. 1999 (``pyspiro.HANKINSON_1999``) with the Caucasian
    coefficients, because that source has no race-neutral PEF equation.
Disease model
    The probability of airflow obstruction is logistic in age, pack-years and current
    smoking. Its coefficients are estimates. A never-smoker of 55 y gets 10 %, close
    to the 9.1 % of never-smokers aged 30-80 that Celli et al. (Am J Med 2005) found
    obstructed. A current smoker of 70 y with 40 pack-years gets 46 %, in line with
    about half of elderly smokers in OLIN 2003. Obstructed subjects get FEV1/FVC from a normal distribution of
    0.563 +/- 0.116 (COPD ever-smokers, Thorax cohort table), truncated to 0.35 up to
    the lower of 0.69 and their LLN, and an FVC z-score of -0.7 +/- 1 (estimate).
    Unobstructed subjects get GLI z-scores ~ N(0, 1) truncated to +/-2.5, with FEV1/FVC
    lowered by 0.0015 per pack-year up to 0.05 (estimate matching 0.817 in healthy
    never-smokers against 0.775 in healthy ever-smokers, Thorax cohort table). PEF
    follows FEV1 in percent of predicted, times a log-normal factor with log-SD 0.10
    (estimate).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import pandas
from pyspiro import BOWERMAN_2022, HANKINSON_1999

logger = logging.getLogger(__name__)

AGE_RANGE_Y = (20.0, 80.0)
HEIGHT_RANGE_CM = {"M": (158.0, 194.0), "F": (145.0, 180.0)}
SMOKING_CATEGORIES = ("never", "former", "current")
SMOKING_PROBABILITIES = (0.45, 0.35, 0.20)
OBSTRUCTION_LOGIT_INTERCEPT = -2.2
OBSTRUCTION_LOGIT_PER_YEAR = 0.035
OBSTRUCTION_LOGIT_PER_PACK_YEAR = 0.03
OBSTRUCTION_LOGIT_CURRENT = 0.3
OBSTRUCTED_RATIO_MEAN_SD = (0.563, 0.116)
OBSTRUCTED_RATIO_RANGE = (0.35, 0.69)
FIXED_RATIO_THRESHOLD = 0.70
Z_LIMIT = 2.5
HANKINSON_CAUCASIAN = 1

_GLI = BOWERMAN_2022()
_HANKINSON = HANKINSON_1999()


@dataclass(frozen=True)
class ReferenceValues:
    """Predicted values (GLI medians, Hankinson 1999 for PEF) and lower limits of normal (LLN).

    Volumes in L, flows in L/s, ratios dimensionless. ``*_lms`` are the GLI (L, M, S)
    triplets used to turn z-scores into values.
    """

    fev1_pred: float
    fev1_lln: float
    fvc_pred: float
    fvc_lln: float
    fev1_fvc_pred: float
    fev1_fvc_lln: float
    pef_pred: float
    pef_lln: float
    fev1_lms: tuple[float, float, float]
    fvc_lms: tuple[float, float, float]
    fev1_fvc_lms: tuple[float, float, float]


def reference_values(*, sex: str, age: float, height_cm: float) -> ReferenceValues:
    """Compute the reference values of one adult with pyspiro 1.0.0.

    ``sex`` is "M" or "F". Raises ValueError when pyspiro has no value for the inputs
    (age outside 20-80 y or height outside the Hankinson 1999 adult range).
    """
    sex_code = 1 if sex == "M" else 0
    gli = {}
    for name, parameter in (("fev1", 1), ("fvc", 2), ("fev1_fvc", 3)):
        lms = _GLI.lms(sex_code, age, height_cm, parameter, None)
        lln = _GLI.lln(sex_code, age, height_cm, parameter, None)
        gli[name] = (tuple(float(v) for v in lms), float(lln))
    pef_code = HANKINSON_1999.Parameters.PEF.value
    pef_lms = _HANKINSON.lms(sex_code, age, height_cm, HANKINSON_CAUCASIAN, pef_code, None)
    pef_lln = _HANKINSON.lln(sex_code, age, height_cm, HANKINSON_CAUCASIAN, pef_code, None)
    values = [v for triplet, lln in gli.values() for v in (*triplet, lln)] + [pef_lms[1], pef_lln]
    if any(v is None or v is pandas.NA for v in values):
        raise ValueError(
            f"pyspiro has no reference value for sex={sex!r}, age={age!r} y, height_cm={height_cm!r}; "
            f"use age in {AGE_RANGE_Y} y and height in {HEIGHT_RANGE_CM[sex]} cm"
        )
    return ReferenceValues(
        fev1_pred=gli["fev1"][0][1],
        fev1_lln=gli["fev1"][1],
        fvc_pred=gli["fvc"][0][1],
        fvc_lln=gli["fvc"][1],
        fev1_fvc_pred=gli["fev1_fvc"][0][1],
        fev1_fvc_lln=gli["fev1_fvc"][1],
        pef_pred=float(pef_lms[1]),
        pef_lln=float(pef_lln),
        fev1_lms=gli["fev1"][0],
        fvc_lms=gli["fvc"][0],
        fev1_fvc_lms=gli["fev1_fvc"][0],
    )


def value_from_zscore(lms: tuple[float, float, float], z: float) -> float:
    """Invert the LMS z-score: value = M * (1 + L * S * z) ** (1 / L)."""
    l_power, median, spread = lms
    return float(median * (1.0 + l_power * spread * z) ** (1.0 / l_power))


@dataclass(frozen=True)
class Physiology:
    """One subject's demographics and true lung function, before any blow is drawn."""

    age: float
    sex: str
    height_cm: float
    weight_kg: float
    smoking: str
    pack_years: float
    obstructed: bool
    fvc: float
    fev1_fvc: float
    pef: float
    reference: ReferenceValues


def _truncated_normal(rng: np.random.Generator, mean: float, sd: float, low: float, high: float) -> float:
    """Draw from N(mean, sd) until a value falls in [low, high].

    After 1000 misses it returns ``mean`` clipped into the range.
    """
    for _ in range(1000):
        value = rng.normal(mean, sd)
        if low <= value <= high:
            return float(value)
    return float(np.clip(mean, low, high))


def obstruction_probability(*, age: float, pack_years: float, current_smoker: bool) -> float:
    """Return the disease model's probability of airflow obstruction (estimate, see module docstring)."""
    logit = (
        OBSTRUCTION_LOGIT_INTERCEPT
        + OBSTRUCTION_LOGIT_PER_YEAR * (age - 55.0)
        + OBSTRUCTION_LOGIT_PER_PACK_YEAR * pack_years
        + OBSTRUCTION_LOGIT_CURRENT * float(current_smoker)
    )
    return 1.0 / (1.0 + math.exp(-logit))


def draw_physiology(rng: np.random.Generator) -> Physiology:
    """Draw one adult's demographics, smoking history and true lung function."""
    age = round(_truncated_normal(rng, 55.0, 15.0, *AGE_RANGE_Y), 1)
    sex = "M" if rng.random() < 0.5 else "F"
    height_mean_sd = (176.0, 7.0) if sex == "M" else (163.0, 6.5)
    height_cm = round(_truncated_normal(rng, *height_mean_sd, *HEIGHT_RANGE_CM[sex]), 1)
    bmi = 27.0 * math.exp(0.16 * rng.standard_normal())
    weight_kg = round(bmi * (height_cm / 100.0) ** 2, 1)

    smoking = str(rng.choice(SMOKING_CATEGORIES, p=SMOKING_PROBABILITIES))
    pack_years = 0.0
    if smoking != "never":
        median, log_sd = (20.0, 0.7) if smoking == "former" else (25.0, 0.6)
        cap = 2.0 * (age - 15.0)
        pack_years = round(min(median * math.exp(log_sd * rng.standard_normal()), cap), 1)

    reference = reference_values(sex=sex, age=age, height_cm=height_cm)
    probability = obstruction_probability(age=age, pack_years=pack_years, current_smoker=smoking == "current")
    obstructed = bool(rng.random() < probability)

    if obstructed:
        fvc_z = _truncated_normal(rng, -0.7, 1.0, -Z_LIMIT - 0.7, Z_LIMIT - 0.7)
        ratio_high = min(OBSTRUCTED_RATIO_RANGE[1], reference.fev1_fvc_lln)
        fev1_fvc = _truncated_normal(rng, *OBSTRUCTED_RATIO_MEAN_SD, OBSTRUCTED_RATIO_RANGE[0], ratio_high)
    else:
        fvc_z = _truncated_normal(rng, 0.0, 1.0, -Z_LIMIT, Z_LIMIT)
        ratio_z = _truncated_normal(rng, 0.0, 1.0, -Z_LIMIT, Z_LIMIT)
        smoking_drop = min(0.0015 * pack_years, 0.05)
        fev1_fvc = min(value_from_zscore(reference.fev1_fvc_lms, ratio_z) - smoking_drop, 0.92)
    fvc = value_from_zscore(reference.fvc_lms, fvc_z)
    fev1_percent = fev1_fvc * fvc / reference.fev1_pred
    pef = reference.pef_pred * fev1_percent * math.exp(0.10 * rng.standard_normal())
    return Physiology(
        age=age,
        sex=sex,
        height_cm=height_cm,
        weight_kg=weight_kg,
        smoking=smoking,
        pack_years=pack_years,
        obstructed=obstructed,
        fvc=fvc,
        fev1_fvc=fev1_fvc,
        pef=pef,
        reference=reference,
    )
