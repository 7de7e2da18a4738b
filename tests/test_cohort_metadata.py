"""Metadata CSV validation, reference values against pyspiro, features and matching."""

from __future__ import annotations

import math

import numpy as np
import pyspiro
import pytest

from cohort.metadata import (
    FEATURE_NAMES,
    HANKINSON_ADULT_HEIGHTS,
    MetadataError,
    SubjectMetadata,
    is_abnormal,
    match_recordings,
    metadata_features,
    read_metadata,
    reference_values,
)

HEADER = "subject_id,age,sex,height,weight,smoking,pack_years,fev1,fvc,fev1_fvc,pef\n"
GOOD_ROWS = (
    "s01,40,M,175,80,former,10,3.0,4.2,,9.0\n"
    "s02,55,female,162,60,never,,2.4,3.0,0.80,\n"
    "s03,70,F,158,70,current,40,,,,\n"
)


def write(tmp_path, text, name="meta.csv"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def problems_of(path):
    with pytest.raises(MetadataError) as caught:
        read_metadata(path)
    return caught.value.problems, str(caught.value)


def test_read_metadata_valid_rows(tmp_path):
    subjects = read_metadata(write(tmp_path, HEADER + GOOD_ROWS))
    assert [s.subject_id for s in subjects] == ["s01", "s02", "s03"]
    assert subjects[1].sex == "F"
    assert subjects[1].pack_years is None
    assert subjects[0].measured_ratio == pytest.approx(3.0 / 4.2)
    assert subjects[2].fev1 is None
    assert subjects[0].bmi == pytest.approx(80 / 1.75**2)


def test_read_metadata_reports_all_problems(tmp_path):
    rows = (
        "s01,17,M,175,80,never,,,,,\n"        # line 2: age below 18
        "s02,40,X,1.75,80,never,,,,,\n"       # line 3: sex, height in metres
        "s03,abc,M,175,300,sometimes,,,,,\n"  # line 4: age text, weight, smoking
        "s04,40,M,175,80,never,5,,,,\n"       # line 5: pack-years for a never-smoker
        "s05,40,M,175,80,former,,4.5,4.0,,\n"  # line 6: fev1 > fvc
        "s06,40,M,175,80,former,,3.0,4.0,75,\n"  # line 7: ratio as percent
        "s07,40,M,175,80,former,,3.0,4.0,0.60,\n"  # line 8: ratio inconsistent
        "s01,40,M,175,80,never,,,,,\n"        # line 9: duplicate id
    )
    problems, message = problems_of(write(tmp_path, HEADER + rows))
    found = {(p.line, p.column) for p in problems}
    expected = {
        (2, "age"), (3, "sex"), (3, "height"), (4, "age"), (4, "weight"), (4, "smoking"),
        (5, "pack_years"), (6, "fev1"), (7, "fev1_fvc"), (8, "fev1_fvc"), (9, "subject_id"),
    }
    assert found == expected
    assert "line 4, column 'age': value 'abc': not a number" in message
    assert "line 3, column 'height': value '1.75': outside the plausibility limits 120-220 cm" in message
    assert "line 9, column 'subject_id': value 's01': duplicate subject id, first on line 2" in message
    assert "line 4, column 'smoking': value 'sometimes': allowed: never, former, current" in message


def test_read_metadata_missing_columns(tmp_path):
    problems, message = problems_of(write(tmp_path, "subject_id,age,sex\ns01,40,M\n"))
    assert [(p.line, p.column) for p in problems] == [(1, "height"), (1, "weight"), (1, "smoking")]
    assert "line 1, column 'height'" in message


def test_read_metadata_empty_file(tmp_path):
    problems, message = problems_of(write(tmp_path, ""))
    assert "the file is empty" in message
    assert len(problems) == 1


def test_read_metadata_header_only(tmp_path):
    _, message = problems_of(write(tmp_path, HEADER))
    assert "no subject rows" in message


def test_read_metadata_not_csv(tmp_path):
    path = tmp_path / "meta.csv"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe")
    _, message = problems_of(path)
    assert "not a CSV text file" in message
    _, message = problems_of(write(tmp_path, "just some words\nmore words\n", "notes.csv"))
    assert "the header has no commas" in message


def test_read_metadata_missing_file(tmp_path):
    _, message = problems_of(tmp_path / "absent.csv")
    assert "file not found" in message


def test_read_metadata_ragged_row(tmp_path):
    problems, message = problems_of(write(tmp_path, HEADER + "s01,40,M,175\n"))
    assert problems[0].line == 2
    assert "row has 4 fields but the header has 11" in message


def test_subject_metadata_rejects_invalid():
    with pytest.raises(ValueError, match=r"SubjectMetadata.age = 12"):
        SubjectMetadata("x", 12, "M", 175, 80, "never")


@pytest.mark.parametrize("equations", ["gli_global", "gli_2012"])
def test_reference_values_match_pyspiro(equations):
    subject = SubjectMetadata("s", 47.5, "F", 166, 64, "former", 12, fev1=2.5, fvc=3.4, pef=6.2, ethnicity="caucasian")
    reference = reference_values(subject, equations)
    if equations == "gli_global":
        gli, extra = pyspiro.BOWERMAN_2022(), ()
    else:
        gli, extra = pyspiro.GLI_2012(), (1,)
    for name, parameter, value in (("fev1", gli.Parameters.FEV1, 2.5), ("fvc", gli.Parameters.FVC, 3.4), ("fev1_fvc", gli.Parameters.FEV1FVC, 2.5 / 3.4)):
        args = (0, 47.5, 166) + extra + (parameter,)
        assert reference.predicted[name] == pytest.approx(gli.lms(*args, None)[1], rel=1e-12)
        assert reference.lln[name] == pytest.approx(gli.lln(*args, None), rel=1e-12)
        assert reference.zscore[name] == pytest.approx(gli.zscore(*args, value), rel=1e-12)
        assert reference.percent_predicted[name] == pytest.approx(gli.percent(*args, value), abs=0.006)
    hankinson = pyspiro.HANKINSON_1999()
    args = (0, 47.5, 166, 1, hankinson.Parameters.PEF)
    assert reference.lln["pef"] == pytest.approx(hankinson.lln(*args, None), rel=1e-12)
    assert reference.zscore["pef"] == pytest.approx(hankinson.zscore(*args, 6.2), rel=1e-12)
    assert reference.percent_predicted["pef"] == pytest.approx(hankinson.percent(*args, 6.2), abs=0.006)
    assert reference.notes == ()


def test_hankinson_pef_hand_checked():
    # Hankinson 1999 PEF for Caucasian men aged 20-80 y, coefficients as pyspiro 1.0.0 stores them:
    # 1.0523 + 0.08272 age - 0.001301 age^2 + 0.00024962 height^2 (L/s). 25 y and 175 cm give 9.95 L/s (597 L/min).
    subject = SubjectMetadata("m", 25, "M", 175, 75, "never", ethnicity="caucasian")
    expected = 1.0523 + 0.08272 * 25 - 0.001301 * 25**2 + 0.00024962 * 175**2
    assert expected == pytest.approx(9.9518, abs=1e-4)
    assert reference_values(subject).predicted["pef"] == pytest.approx(expected, rel=1e-9)


def test_reference_values_clamps_with_notes():
    subject = SubjectMetadata("old", 99, "F", 130, 50, "never")
    reference = reference_values(subject, "gli_2012")
    assert all(math.isfinite(v) for v in reference.predicted.values())
    joined = " | ".join(reference.notes)
    assert "age 99 is outside the equation's range 3-95" in joined
    assert "height 130 is outside the equation's range 145-180" in joined
    assert "no ethnicity given" in joined


def test_hankinson_height_ranges_match_pyspiro():
    names = {"M": "male", "F": "female"}
    for (sex, ethnicity), bounds in HANKINSON_ADULT_HEIGHTS.items():
        assert pyspiro.HANKINSON_1999._HEIGHT_RANGES[(names[sex], ethnicity, "adult")] == bounds


def test_metadata_features_order():
    subject = SubjectMetadata("s", 40, "M", 175, 80, "current", None, fev1=3.0, fvc=4.0)
    reference = reference_values(subject)
    features = metadata_features(subject, reference)
    assert features.shape == (len(FEATURE_NAMES),)
    assert features.dtype == np.float32
    named = dict(zip(FEATURE_NAMES, features.tolist()))
    assert named["sex_male"] == 1.0
    assert named["smoking_current"] == 1.0
    assert named["smoking_never"] == 0.0
    assert math.isnan(named["pack_years"])
    assert named["bmi_kg_m2"] == pytest.approx(80 / 1.75**2, rel=1e-6)
    assert named["fev1_fvc_zscore"] == pytest.approx(reference.zscore["fev1_fvc"], rel=1e-6)
    assert math.isnan(named["pef_zscore"])
    assert named["pef_predicted_l_s"] == pytest.approx(reference.predicted["pef"], rel=1e-6)


def test_is_abnormal_rules():
    # 40-y man, 175 cm: GLI global LLN of FEV1/FVC is about 0.71.
    borderline = SubjectMetadata("b", 40, "M", 175, 80, "former", fev1=2.8, fvc=4.0)
    reference = reference_values(borderline)
    assert is_abnormal(borderline, reference, "fixed_ratio") is False
    assert is_abnormal(borderline, reference, "lln") is True
    unmeasured = SubjectMetadata("u", 40, "M", 175, 80, "never")
    with pytest.raises(ValueError, match="no measured FEV1/FVC"):
        is_abnormal(unmeasured, reference)
    with pytest.raises(ValueError, match="rule = 'gold'"):
        is_abnormal(borderline, reference, "gold")


def test_match_recordings_names_unmatched():
    metadata = [SubjectMetadata(sid, 40, "M", 175, 80, "never") for sid in ("a", "b", "c")]
    match = match_recordings(["a", "a", "b", "z"], metadata)
    assert match.matched == ("a", "b")
    assert match.recordings_without_metadata == ("z",)
    assert match.subjects_without_recording == ("c",)
    assert "recordings without a metadata row: z" in match.describe()
    assert "metadata rows without a recording: c" in match.describe()
