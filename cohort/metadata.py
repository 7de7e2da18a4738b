"""Subject metadata from a CSV file, spirometry reference values and metadata features.

CSV columns (header names exact, lower case; extra columns are ignored):

========== ======== ================================================================
column     required values
========== ======== ================================================================
subject_id yes      text, unique
age        yes      years, 18-100
sex        yes      M/F (also male/female, any case)
height     yes      cm, 120-220
weight     yes      kg, 30-250
smoking    yes      never / former / current
pack_years no       0-200; must be empty for never-smokers
fev1       no       measured FEV1, L, 0.1-10
fvc        no       measured FVC, L, 0.1-10; FEV1 <= FVC
fev1_fvc   no       measured FEV1/FVC as a ratio in (0, 1]; within 0.02 of fev1/fvc
pef        no       measured PEF, L/s, 0.5-20
ethnicity  no       caucasian, african_american, northeast_asian, southeast_asian,
                    mexican_american or other (only used by GLI-2012 and Hankinson)
========== ======== ================================================================

The ranges are plausibility limits for adults chosen for this project, not clinical
norms: they catch unit mistakes (metres for centimetres, pounds for kilograms) and typos.

Reference values come from pyspiro 1.0.0, with the citations its classes give. FEV1, FVC
and FEV1/FVC use the race-neutral GLI global equations (Bowerman et al., Am J Respir
Crit Care Med 2023; ``equations="gli_global"``) or GLI-2012 (Quanjer et al., Eur Respir
J 2012; ``equations="gli_2012"``). PEF, which GLI does not cover, uses NHANES III
(Hankinson et al., Am J Respir Crit Care Med 1999).
"""

from __future__ import annotations

import csv
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

REQUIRED_COLUMNS = ("subject_id", "age", "sex", "height", "weight", "smoking")
OPTIONAL_COLUMNS = ("pack_years", "fev1", "fvc", "fev1_fvc", "pef", "ethnicity")
SMOKING_STATUSES = ("never", "former", "current")
SEX_SPELLINGS = {"m": "M", "male": "M", "f": "F", "female": "F"}
ETHNICITIES = ("caucasian", "african_american", "northeast_asian", "southeast_asian", "mexican_american", "other")
# Plausibility limits (low, high, unit) for adults, chosen for this project.
LIMITS = {
    "age": (18.0, 100.0, "years"),
    "height": (120.0, 220.0, "cm"),
    "weight": (30.0, 250.0, "kg"),
    "pack_years": (0.0, 200.0, "pack-years"),
    "fev1": (0.1, 10.0, "L"),
    "fvc": (0.1, 10.0, "L"),
    "fev1_fvc": (0.01, 1.0, "ratio"),
    "pef": (0.5, 20.0, "L/s"),
}
# Allowed gap between a stated fev1_fvc and fev1/fvc; covers rounding each to 0.01.
RATIO_TOLERANCE = 0.02


@dataclass(frozen=True)
class SubjectMetadata:
    """One subject: anthropometry, smoking history and optional measured spirometry.

    Units: age years, height cm, weight kg, fev1/fvc L, fev1_fvc ratio, pef L/s.
    """

    subject_id: str
    age: float
    sex: str
    height: float
    weight: float
    smoking: str
    pack_years: float | None = None
    fev1: float | None = None
    fvc: float | None = None
    fev1_fvc: float | None = None
    pef: float | None = None
    ethnicity: str | None = None

    def __post_init__(self) -> None:
        problems = _field_problems(vars(self))
        if problems:
            column, value, message = problems[0]
            raise ValueError(f"SubjectMetadata.{column} = {value!r} is invalid: {message}")

    @property
    def bmi(self) -> float:
        """Body-mass index, kg/m^2."""
        return self.weight / (self.height / 100.0) ** 2

    @property
    def measured_ratio(self) -> float | None:
        """Measured FEV1/FVC: the stated ratio, else fev1/fvc, else None."""
        if self.fev1_fvc is not None:
            return self.fev1_fvc
        if self.fev1 is not None and self.fvc is not None:
            return self.fev1 / self.fvc
        return None


def _field_problems(values: dict) -> list[tuple[str, object, str]]:
    """Return (column, value, message) for every invalid field; the one rule set for rows and objects."""
    problems = []
    get = values.get
    if not str(get("subject_id") or "").strip():
        problems.append(("subject_id", get("subject_id"), "subject_id must not be empty"))
    if get("sex") not in ("M", "F"):
        problems.append(("sex", get("sex"), "allowed: M, F, male, female"))
    if get("smoking") not in SMOKING_STATUSES:
        problems.append(("smoking", get("smoking"), f"allowed: {', '.join(SMOKING_STATUSES)}"))
    if get("ethnicity") is not None and get("ethnicity") not in ETHNICITIES:
        problems.append(("ethnicity", get("ethnicity"), f"allowed: {', '.join(ETHNICITIES)} or empty"))
    for column, (low, high, unit) in LIMITS.items():
        value = get(column)
        if value is None:
            if column in REQUIRED_COLUMNS:
                problems.append((column, value, f"required value is missing; give {column} in {unit}"))
            continue
        if not (math.isfinite(value) and low <= value <= high):
            problems.append((column, value, f"outside the plausibility limits {low:g}-{high:g} {unit}"))
    fev1, fvc, ratio = get("fev1"), get("fvc"), get("fev1_fvc")
    if get("smoking") == "never" and get("pack_years") not in (None, 0.0):
        problems.append(("pack_years", get("pack_years"), "a never-smoker has no pack-years; leave it empty or fix the smoking status"))
    if fev1 is not None and fvc is not None and fev1 > fvc:
        problems.append(("fev1", fev1, f"FEV1 is larger than FVC = {fvc:g} L; FEV1 cannot exceed FVC, check the columns"))
    if fev1 is not None and fvc is not None and ratio is not None and abs(fev1 / fvc - ratio) > RATIO_TOLERANCE:
        problems.append(("fev1_fvc", ratio, f"differs from fev1/fvc = {fev1 / fvc:.3f} by more than {RATIO_TOLERANCE:g}; give a ratio 0-1 (not percent) that matches fev1 and fvc"))
    return problems


@dataclass(frozen=True)
class MetadataProblem:
    """One invalid cell (or a file-level problem, with ``line`` 0 and ``column`` "")."""

    line: int
    column: str
    value: str
    message: str

    def __str__(self) -> str:
        if self.line:
            where = f"line {self.line}, column {self.column!r}"
        elif self.column:
            where = f"column {self.column!r}"
        else:
            where = "file"
        value = f": value {self.value!r}" if self.value != "" else ""
        return f"{where}{value}: {self.message}"


class MetadataError(ValueError):
    """Invalid metadata CSV; ``problems`` lists every problem found, not only the first."""

    def __init__(self, path: Path, problems: list[MetadataProblem]) -> None:
        self.path = path
        self.problems = list(problems)
        lines = "\n".join(f"  - {problem}" for problem in self.problems)
        super().__init__(f"{path}: {len(self.problems)} problem(s) in the metadata CSV:\n{lines}")


def read_metadata(path: str | Path) -> list[SubjectMetadata]:
    """Read and validate a metadata CSV; raise one ``MetadataError`` listing all problems."""
    path = Path(path)
    if not path.is_file():
        raise MetadataError(path, [MetadataProblem(0, "", "", "file not found; check the path")])
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = None
    if text is None or "\x00" in text:
        raise MetadataError(path, [MetadataProblem(0, "", "", "not a CSV text file (binary or not UTF-8); export the table as UTF-8 CSV")])
    if not text.strip():
        raise MetadataError(path, [MetadataProblem(0, "", "", f"the file is empty; it needs a header row with {', '.join(REQUIRED_COLUMNS)} and one row per subject")])

    reader = csv.reader(text.splitlines())
    header = [name.strip().lower() for name in next(reader)]
    missing = [name for name in REQUIRED_COLUMNS if name not in header]
    if missing:
        hint = " (the header has no commas: is this a CSV?)" if len(header) == 1 else ""
        problems = [MetadataProblem(1, name, "", f"required column is missing{hint}; the header must contain {', '.join(REQUIRED_COLUMNS)}") for name in missing]
        raise MetadataError(path, problems)
    duplicated = sorted({name for name in header if header.count(name) > 1 and name})
    if duplicated:
        raise MetadataError(path, [MetadataProblem(1, name, "", "column appears more than once in the header; keep one") for name in duplicated])

    problems: list[MetadataProblem] = []
    subjects: list[SubjectMetadata] = []
    first_line: dict[str, int] = {}
    for row in reader:
        line = reader.line_num
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            problems.append(MetadataProblem(line, "", "", f"row has {len(row)} fields but the header has {len(header)}; check for stray or missing commas"))
            continue
        cells = {name: cell.strip() for name, cell in zip(header, row)}
        subject, row_problems = _parse_row(cells, line)
        problems += row_problems
        subject_id = cells["subject_id"]
        if subject_id in first_line:
            problems.append(MetadataProblem(line, "subject_id", subject_id, f"duplicate subject id, first on line {first_line[subject_id]}; make ids unique"))
        else:
            first_line[subject_id] = line
        if subject is not None:
            subjects.append(subject)
    if not first_line and not problems:
        problems.append(MetadataProblem(0, "", "", "the file has a header but no subject rows; add one row per subject"))
    if problems:
        raise MetadataError(path, problems)
    logger.info("read %d subjects from %s", len(subjects), path)
    return subjects


def _parse_row(cells: dict[str, str], line: int) -> tuple[SubjectMetadata | None, list[MetadataProblem]]:
    problems: list[MetadataProblem] = []
    values: dict[str, object] = {"subject_id": cells["subject_id"]}
    for column in ("age", "height", "weight") + OPTIONAL_COLUMNS[:5]:
        text = cells.get(column, "")
        if text == "":
            if column in REQUIRED_COLUMNS:
                problems.append(MetadataProblem(line, column, text, f"required value is empty; give {column} in {LIMITS[column][2]}"))
            values[column] = None
            continue
        try:
            values[column] = float(text)
        except ValueError:
            low, high, unit = LIMITS[column]
            problems.append(MetadataProblem(line, column, text, f"not a number; give {column} in {unit} ({low:g}-{high:g})"))
            values[column] = None
    values["sex"] = SEX_SPELLINGS.get(cells["sex"].lower(), cells["sex"])
    values["smoking"] = cells["smoking"].lower()
    values["ethnicity"] = cells.get("ethnicity", "").lower() or None

    # Check the parsed row with the dataclass's own rules, skipping cells already reported.
    reported = {problem.column for problem in problems}
    for column, value, message in _field_problems(values):
        if column not in reported:
            problems.append(MetadataProblem(line, column, cells.get(column, ""), message))
    if problems:
        return None, problems
    return SubjectMetadata(**values), []


# ---------------------------------------------------------------- reference values

EQUATIONS = ("gli_global", "gli_2012")
PARAMETERS = ("fev1", "fvc", "fev1_fvc", "pef")
# Input ranges of the equations in pyspiro 1.0.0; inputs outside are clamped (with a note).
GLI_AGE_RANGE = (3.0, 95.0)
HANKINSON_AGE_RANGE = (8.0, 80.0)
# Hankinson 1999 adult height ranges, cm, by (sex, ethnicity), as pyspiro 1.0.0 enforces them.
HANKINSON_ADULT_HEIGHTS = {
    ("M", "caucasian"): (158.0, 194.0),
    ("M", "african_american"): (158.0, 196.0),
    ("M", "mexican_american"): (156.0, 192.0),
    ("F", "caucasian"): (145.0, 180.0),
    ("F", "african_american"): (146.0, 180.0),
    ("F", "mexican_american"): (136.0, 172.0),
}
GLI_2012_ETHNICITY_CODES = {"caucasian": 1, "african_american": 2, "northeast_asian": 3, "southeast_asian": 4, "other": 5, "mexican_american": 5}
HANKINSON_ETHNICITY_CODES = {"caucasian": 1, "african_american": 2, "mexican_american": 3}


@dataclass(frozen=True)
class ReferenceValues:
    """Predicted values, lower limits of normal, and %predicted and z-scores of measured values.

    Keys are ``PARAMETERS``; units as in ``SubjectMetadata``. ``percent_predicted`` and
    ``zscore`` contain only the parameters the subject has measured.
    """

    equations: str
    predicted: dict[str, float]
    lln: dict[str, float]
    percent_predicted: dict[str, float] = field(default_factory=dict)
    zscore: dict[str, float] = field(default_factory=dict)
    notes: tuple[str, ...] = ()


def _clamp(name: str, value: float, bounds: tuple[float, float], source: str, notes: list[str]) -> float:
    clamped = min(max(value, bounds[0]), bounds[1])
    if clamped != value:
        notes.append(f"{source}: {name} {value:g} is outside the equation's range {bounds[0]:g}-{bounds[1]:g}; evaluated at the limit {clamped:g} (clamped)")
    return clamped


def _number(value) -> float:
    import pandas

    return float("nan") if value is pandas.NA or value is None else float(value)


def reference_values(subject: SubjectMetadata, equations: str = "gli_global") -> ReferenceValues:
    """Compute reference values for ``subject`` with pyspiro (GLI for spirometry, Hankinson for PEF)."""
    import pyspiro

    if equations not in EQUATIONS:
        raise ValueError(f"equations = {equations!r} is invalid; use one of {EQUATIONS}")
    notes: list[str] = []
    sex = 1 if subject.sex == "M" else 0
    measured = {"fev1": subject.fev1, "fvc": subject.fvc, "fev1_fvc": subject.measured_ratio, "pef": subject.pef}
    predicted, lln, percent, zscore = {}, {}, {}, {}

    age = _clamp("age", subject.age, GLI_AGE_RANGE, equations, notes)
    if equations == "gli_global":
        gli = pyspiro.BOWERMAN_2022()
        ethnicity_args: tuple = ()
    else:
        gli = pyspiro.GLI_2012()
        ethnicity = subject.ethnicity or "other"
        if subject.ethnicity is None:
            notes.append("gli_2012: no ethnicity given; used the 'Other/mixed' equations")
        ethnicity_args = (GLI_2012_ETHNICITY_CODES[ethnicity],)
    for name, parameter in (("fev1", gli.Parameters.FEV1), ("fvc", gli.Parameters.FVC), ("fev1_fvc", gli.Parameters.FEV1FVC)):
        args = (sex, age, subject.height) + ethnicity_args + (parameter,)
        _, median, _ = gli.lms(*args, None)
        predicted[name] = _number(median)
        lln[name] = _number(gli.lln(*args, None))
        if measured[name] is not None:
            zscore[name] = _number(gli.zscore(*args, measured[name]))

    hankinson = pyspiro.HANKINSON_1999()
    ethnicity = subject.ethnicity if subject.ethnicity in HANKINSON_ETHNICITY_CODES else "caucasian"
    if ethnicity != subject.ethnicity:
        reason = "no ethnicity given" if subject.ethnicity is None else f"ethnicity {subject.ethnicity!r} has no NHANES III equation"
        notes.append(f"hankinson_1999 PEF: {reason}; used the Caucasian equation")
    pef_age = _clamp("age", subject.age, HANKINSON_AGE_RANGE, "hankinson_1999", notes)
    pef_height = _clamp("height", subject.height, HANKINSON_ADULT_HEIGHTS[(subject.sex, ethnicity)], "hankinson_1999", notes)
    args = (sex, pef_age, pef_height, HANKINSON_ETHNICITY_CODES[ethnicity], hankinson.Parameters.PEF)
    predicted["pef"] = _number(hankinson.lms(*args, None)[1])
    lln["pef"] = _number(hankinson.lln(*args, None))
    if subject.pef is not None:
        zscore["pef"] = _number(hankinson.zscore(*args, subject.pef))

    for name, value in measured.items():
        if value is not None:
            percent[name] = 100.0 * value / predicted[name]
    for note in notes:
        logger.info("subject %s: %s", subject.subject_id, note)
    return ReferenceValues(equations, predicted, lln, percent, zscore, tuple(notes))


FEATURE_NAMES = (
    "age_years", "sex_male", "height_cm", "weight_kg", "bmi_kg_m2",
    "smoking_never", "smoking_former", "smoking_current", "pack_years",
    "fev1_predicted_l", "fvc_predicted_l", "fev1_fvc_predicted", "pef_predicted_l_s",
    "fev1_percent_predicted", "fvc_percent_predicted", "fev1_fvc_percent_predicted", "pef_percent_predicted",
    "fev1_zscore", "fvc_zscore", "fev1_fvc_zscore", "pef_zscore",
)


def metadata_features(subject: SubjectMetadata, reference: ReferenceValues) -> np.ndarray:
    """Return a float32 vector in ``FEATURE_NAMES`` order.

    Missing pack-years are 0 for never-smokers and NaN for smokers; an unmeasured
    parameter has %predicted and z-score NaN, so the caller chooses the imputation.
    NOTE: the measured FEV1/FVC features determine ``is_abnormal`` and leak the label
    into any classifier of abnormality; drop them (``FEATURE_NAMES[13:]``) for such models.
    """
    if subject.pack_years is not None:
        pack_years = subject.pack_years
    else:
        pack_years = 0.0 if subject.smoking == "never" else float("nan")
    values = [
        subject.age, 1.0 if subject.sex == "M" else 0.0, subject.height, subject.weight, subject.bmi,
        *(1.0 if subject.smoking == status else 0.0 for status in SMOKING_STATUSES),
        pack_years,
        *(reference.predicted[name] for name in PARAMETERS),
        *(reference.percent_predicted.get(name, float("nan")) for name in PARAMETERS),
        *(reference.zscore.get(name, float("nan")) for name in PARAMETERS),
    ]
    return np.asarray(values, dtype=np.float32)


def is_abnormal(subject: SubjectMetadata, reference: ReferenceValues, rule: str = "fixed_ratio") -> bool:
    """Return whether measured FEV1/FVC is below 0.70 (``"fixed_ratio"``) or below the LLN (``"lln"``)."""
    ratio = subject.measured_ratio
    if ratio is None:
        raise ValueError(f"subject {subject.subject_id!r} has no measured FEV1/FVC; give fev1_fvc or fev1 and fvc in the metadata")
    if rule == "fixed_ratio":
        return ratio < 0.70
    if rule == "lln":
        return ratio < reference.lln["fev1_fvc"]
    raise ValueError(f"rule = {rule!r} is invalid; use 'fixed_ratio' or 'lln'")


@dataclass(frozen=True)
class RecordingMatch:
    """Subject ids with both a recording and a metadata row, and those with only one of them."""

    matched: tuple[str, ...]
    recordings_without_metadata: tuple[str, ...]
    subjects_without_recording: tuple[str, ...]

    def describe(self) -> str:
        """Return a one-paragraph summary naming every unmatched id."""
        text = f"{len(self.matched)} subject(s) matched"
        if self.recordings_without_metadata:
            text += f"; recordings without a metadata row: {', '.join(self.recordings_without_metadata)}"
        if self.subjects_without_recording:
            text += f"; metadata rows without a recording: {', '.join(self.subjects_without_recording)}"
        return text


def match_recordings(recording_subject_ids: list[str], metadata: list[SubjectMetadata]) -> RecordingMatch:
    """Match recording subject ids to metadata rows; several recordings may share one subject."""
    rows = {subject.subject_id for subject in metadata}
    recorded = list(dict.fromkeys(recording_subject_ids))
    match = RecordingMatch(
        matched=tuple(sid for sid in recorded if sid in rows),
        recordings_without_metadata=tuple(sid for sid in recorded if sid not in rows),
        subjects_without_recording=tuple(subject.subject_id for subject in metadata if subject.subject_id not in set(recorded)),
    )
    if match.recordings_without_metadata or match.subjects_without_recording:
        logger.warning(match.describe())
    return match
