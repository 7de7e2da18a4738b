"""Subject-wise folds: no leakage, full coverage, id normalisation and stratification."""

from __future__ import annotations

import warnings
from collections import Counter

import numpy as np
import pytest

from cohort.folds import fold_problems, normalize_subject_id, subject_folds


def _clip_cohort() -> tuple[list[str], dict[str, int]]:
    """Per-clip subject ids where a naive clip split is sure to leak.

    One subject has 120 clips, the rest 1-4, ids repeat across recordings and come in
    mixed case and whitespace.
    """
    rng = np.random.default_rng(7)
    clip_ids = ["P000"] * 120
    labels = {"P000": 1}
    for number in range(1, 30):
        base = f"p{number:03d}"
        spellings = [base, base.upper(), f" {base.upper()}\t"]
        for _ in range(int(rng.integers(1, 5))):
            clip_ids.append(spellings[int(rng.integers(0, 3))])
        labels[base.upper()] = int(number % 3 == 0)
    order = rng.permutation(len(clip_ids))
    return [clip_ids[i] for i in order], labels


def _naive_clip_folds(clip_ids: list[str], k: int, seed: int) -> list[tuple[list[str], list[str]]]:
    """Clip-level k-fold (what sklearn's KFold over clips does), mapped back to subject ids."""
    order = np.random.default_rng(seed).permutation(len(clip_ids))
    folds = []
    for test_positions in np.array_split(order, k):
        test = set(test_positions.tolist())
        train_ids = [clip_ids[i] for i in range(len(clip_ids)) if i not in test]
        folds.append((train_ids, [clip_ids[i] for i in test_positions]))
    return folds


def test_normalize_subject_id_forms():
    assert normalize_subject_id(" s01") == "S01"
    assert normalize_subject_id("S01\t") == "S01"
    assert normalize_subject_id("ｓ01") == "S01"  # full-width letter, folded by NFKC
    assert normalize_subject_id(17) == "17"
    for bad in ["", "  ", "S 01", "a/b", "../x", "-S1", True, None, "x" * 65]:
        with pytest.raises(ValueError, match="subject id"):
            normalize_subject_id(bad)


def test_naive_clip_split_leaks():
    clip_ids, _ = _clip_cohort()
    problems = fold_problems(_naive_clip_folds(clip_ids, 5, seed=0), clip_ids)
    assert any("in train and test" in problem for problem in problems)


def test_unnormalised_split_leaks():
    """Splitting raw ids treats 'p001' and ' P001' as two subjects, which the check catches."""
    clip_ids, _ = _clip_cohort()
    raw_ids = sorted(set(clip_ids))
    assert len(raw_ids) > 30
    order = np.random.default_rng(0).permutation(len(raw_ids))
    folds = []
    for test_positions in np.array_split(order, 5):
        test = set(test_positions.tolist())
        train_ids = [raw_ids[i] for i in range(len(raw_ids)) if i not in test]
        folds.append((train_ids, [raw_ids[i] for i in test_positions]))
    assert any("in train and test" in problem for problem in fold_problems(folds, clip_ids))


def test_subject_folds_pass_check():
    clip_ids, _ = _clip_cohort()
    folds = subject_folds(clip_ids, k=5, seed=0)
    assert fold_problems(folds, clip_ids) == []
    assert len(folds) == 5
    subjects = sorted({normalize_subject_id(subject_id) for subject_id in clip_ids})
    assert len(subjects) == 30
    test_counts = Counter(subject_id for _, test_ids in folds for subject_id in test_ids)
    assert sorted(test_counts) == subjects
    assert set(test_counts.values()) == {1}
    for train_ids, test_ids in folds:
        assert set(train_ids).isdisjoint(test_ids)
        assert sorted(train_ids + test_ids) == subjects
        assert len(test_ids) == 6


def test_clip_assignment_never_leaks():
    clip_ids, _ = _clip_cohort()
    for train_ids, test_ids in subject_folds(clip_ids, k=4, seed=3):
        test = set(test_ids)
        test_clips = [i for i, subject_id in enumerate(clip_ids) if normalize_subject_id(subject_id) in test]
        train_clips = [i for i, subject_id in enumerate(clip_ids) if normalize_subject_id(subject_id) in set(train_ids)]
        assert len(test_clips) + len(train_clips) == len(clip_ids)
        train_subjects = {normalize_subject_id(clip_ids[i]) for i in train_clips}
        test_subjects = {normalize_subject_id(clip_ids[i]) for i in test_clips}
        assert train_subjects.isdisjoint(test_subjects)


def test_fold_problems_reports_gaps():
    subjects = ["A", "B", "C", "D"]
    missing = [(["A", "B"], ["C"]), (["C"], ["A", "B"])]
    assert fold_problems(missing, subjects) == ["1 subjects are in no test set, e.g. ['D']"]
    repeated = [(["B", "C", "D"], ["A"]), (["B", "C"], ["A", "D"]), (["A"], ["B", "C"])]
    assert fold_problems(repeated, subjects) == ["1 subjects are in more than one test set, e.g. ['A']"]
    unknown = [(["A", "B"], ["C", "D", "E"]), (["C", "D"], ["A", "B"])]
    assert fold_problems(unknown, subjects) == ["fold 0: unknown subjects ['E']"]


def test_stratified_folds_balance_labels():
    ids = [f"S{number:02d}" for number in range(40)]
    labels = {subject_id: int(number < 10) for number, subject_id in enumerate(ids)}
    folds = subject_folds(ids, k=5, seed=1, stratify_labels=labels)
    assert fold_problems(folds, ids) == []
    for _, test_ids in folds:
        assert len(test_ids) == 8
        assert sum(labels[subject_id] for subject_id in test_ids) == 2


def test_stratified_uneven_counts():
    clip_ids, labels = _clip_cohort()
    folds = subject_folds(clip_ids, k=4, seed=2, stratify_labels=labels)
    assert fold_problems(folds, clip_ids) == []
    positives = [sum(labels[subject_id] for subject_id in test_ids) for _, test_ids in folds]
    sizes = [len(test_ids) for _, test_ids in folds]
    assert sum(positives) == sum(labels.values()) == 10
    assert max(positives) - min(positives) <= 1
    assert max(sizes) - min(sizes) <= 1


def test_stratify_per_clip_labels():
    ids = ["a", "A ", "b", "c", "d"]
    folds = subject_folds(ids, k=2, stratify_labels=[1, 1, 0, 0, 1])
    assert fold_problems(folds, ids) == []
    with pytest.raises(ValueError, match="two labels"):
        subject_folds(ids, k=2, stratify_labels=[1, 0, 0, 0, 1])
    with pytest.raises(ValueError, match="one label per entry"):
        subject_folds(ids, k=2, stratify_labels=[1, 0])
    with pytest.raises(ValueError, match="no label"):
        subject_folds(ids, k=2, stratify_labels={"A": 1})


def test_rare_label_warns():
    ids = [f"S{number}" for number in range(10)]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        subject_folds(ids, k=5, stratify_labels={subject_id: int(subject_id == "S0") for subject_id in ids})
    assert any("fewer than k = 5" in str(warning.message) for warning in caught)


def test_folds_seeded_and_order_free():
    ids = [f"S{number:02d}" for number in range(25)]
    assert subject_folds(ids, k=5, seed=4) == subject_folds(list(reversed(ids)), k=5, seed=4)
    assert subject_folds(ids, k=5, seed=4) != subject_folds(ids, k=5, seed=5)


@pytest.mark.parametrize("k", [1, 0, 6, 2.0, True])
def test_invalid_k_rejected(k):
    with pytest.raises(ValueError, match="k = "):
        subject_folds(["a", "b", "c", "d", "e"], k=k)
