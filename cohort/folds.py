"""Subject-wise cross-validation folds: no subject's clips in both the train and test set.

Clips of one subject are strongly correlated (same face, same lungs, same session), so
splitting clips instead of subjects leaks the test subjects into training and inflates
every score.  ``subject_folds`` splits subject ids; build one dataset per side from the
ids it returns.

Subject ids are normalised before they are compared, stored or split, by
``normalize_subject_id``: Unicode NFKC, leading and trailing whitespace removed, upper
case.  ``" s01"``, ``"S01"`` and ``"s01\\t"`` are therefore one subject.  Whitespace inside
an id, path separators and other punctuation except ``-``, ``_`` and ``.`` are rejected,
because an id also names an HDF5 group.
"""

from __future__ import annotations

import logging
import re
import unicodedata
import warnings
from collections.abc import Hashable, Mapping, Sequence

import numpy as np

logger = logging.getLogger(__name__)

SUBJECT_ID_PATTERN = re.compile(r"[A-Z0-9][A-Z0-9_.-]{0,63}")


def normalize_subject_id(subject_id: object) -> str:
    """Return the canonical form of a subject id (NFKC, stripped, upper case).

    Raises ValueError when the result is empty, longer than 64 characters or contains
    characters other than letters, digits, ``-``, ``_`` and ``.``.
    """
    if not isinstance(subject_id, str | int) or isinstance(subject_id, bool):
        raise ValueError(f"subject id {subject_id!r} is invalid; use a string such as 'S001'")
    text = unicodedata.normalize("NFKC", str(subject_id)).strip().upper()
    if not SUBJECT_ID_PATTERN.fullmatch(text):
        raise ValueError(
            f"subject id {subject_id!r} is invalid; after stripping and upper-casing it must be "
            "1-64 letters, digits, '-', '_' or '.', starting with a letter or digit"
        )
    return text


def unique_subject_ids(subject_ids: Sequence[object]) -> list[str]:
    """Normalise ``subject_ids`` and return each distinct id once, sorted."""
    return sorted({normalize_subject_id(subject_id) for subject_id in subject_ids})


def _labels_per_subject(
    subject_ids: Sequence[object], stratify_labels: Mapping[object, Hashable] | Sequence[Hashable]
) -> dict[str, Hashable]:
    """Map each normalised subject id to one label, rejecting subjects with two labels."""
    if isinstance(stratify_labels, Mapping):
        pairs = [(normalize_subject_id(key), label) for key, label in stratify_labels.items()]
    else:
        if len(stratify_labels) != len(subject_ids):
            raise ValueError(
                f"stratify_labels has {len(stratify_labels)} entries but subject_ids has "
                f"{len(subject_ids)}; pass one label per entry of subject_ids or a mapping id -> label"
            )
        pairs = [(normalize_subject_id(key), label) for key, label in zip(subject_ids, stratify_labels)]

    labels: dict[str, Hashable] = {}
    for subject_id, label in pairs:
        if subject_id in labels and labels[subject_id] != label:
            raise ValueError(
                f"subject {subject_id!r} has two labels, {labels[subject_id]!r} and {label!r}; "
                "stratify by a per-subject label (for example the subject's measured FEV1/FVC < 0.70)"
            )
        labels[subject_id] = label
    return labels


def subject_folds(
    subject_ids: Sequence[object],
    k: int = 5,
    *,
    seed: int = 0,
    stratify_labels: Mapping[object, Hashable] | Sequence[Hashable] | None = None,
) -> list[tuple[list[str], list[str]]]:
    """Split subjects into ``k`` folds and return ``(train_ids, test_ids)`` for each fold.

    ``subject_ids`` may repeat (one entry per clip or recording is fine) and is
    normalised first.  Every subject is in exactly one test set, and never in the train
    and test set of the same fold.  Test sets differ in size by at most one subject.

    With ``stratify_labels`` (a mapping id -> label, or one label per entry of
    ``subject_ids``), subjects of each label are spread over the folds as evenly as
    possible, so each label's count per test set differs by at most one.  A subject
    given two different labels raises ValueError.  Both id lists are sorted, and the
    split depends only on the set of ids, the labels and ``seed``.
    """
    ids = unique_subject_ids(subject_ids)
    if isinstance(k, bool) or not isinstance(k, int) or not 2 <= k <= len(ids):
        raise ValueError(f"k = {k!r} is invalid; it must be an integer from 2 to the number of subjects ({len(ids)})")

    rng = np.random.default_rng(seed)
    if stratify_labels is None:
        order = [ids[i] for i in rng.permutation(len(ids))]
    else:
        labels = _labels_per_subject(subject_ids, stratify_labels)
        missing = [subject_id for subject_id in ids if subject_id not in labels]
        if missing:
            raise ValueError(f"stratify_labels has no label for subjects {missing[:10]}; give every subject a label")
        groups: dict[Hashable, list[str]] = {}
        for subject_id in ids:
            groups.setdefault(labels[subject_id], []).append(subject_id)
        order = []
        # Groups are laid end to end and dealt round-robin.  A group of m subjects then
        # fills m consecutive positions, so every fold gets floor(m/k) or ceil(m/k) of them.
        for label in sorted(groups, key=repr):
            members = groups[label]
            if len(members) < k:
                warnings.warn(
                    f"label {label!r} has {len(members)} subjects, fewer than k = {k}; "
                    "some test sets will contain none of them",
                    stacklevel=2,
                )
            order.extend(members[i] for i in rng.permutation(len(members)))

    test_sets: list[list[str]] = [[] for _ in range(k)]
    for position, subject_id in enumerate(order):
        test_sets[position % k].append(subject_id)

    folds = []
    for test_ids in test_sets:
        test = set(test_ids)
        folds.append(([subject_id for subject_id in ids if subject_id not in test], sorted(test_ids)))
    logger.debug("split %d subjects into %d folds (seed %d)", len(ids), k, seed)
    return folds


def fold_problems(
    folds: Sequence[tuple[Sequence[object], Sequence[object]]], subject_ids: Sequence[object]
) -> list[str]:
    """Check subject-wise folds and return one message per problem (empty if sound).

    Problems are: a subject in the train and test set of one fold, a subject in no test
    set or in several, and an id in a fold that is not among ``subject_ids``.  All ids
    are normalised first.  ``folds`` may hold per-clip ids, so the check also catches a
    clip-level split that puts clips of one subject on both sides.
    """
    expected = set(unique_subject_ids(subject_ids))
    problems = []
    test_count = dict.fromkeys(expected, 0)
    for number, (train_ids, test_ids) in enumerate(folds):
        train = set(unique_subject_ids(train_ids))
        test = set(unique_subject_ids(test_ids))
        both = sorted(train & test)
        if both:
            problems.append(f"fold {number}: {len(both)} subjects in train and test, e.g. {both[:5]}")
        unknown = sorted((train | test) - expected)
        if unknown:
            problems.append(f"fold {number}: unknown subjects {unknown[:5]}")
        for subject_id in test & expected:
            test_count[subject_id] += 1
    never = sorted(subject_id for subject_id, count in test_count.items() if count == 0)
    if never:
        problems.append(f"{len(never)} subjects are in no test set, e.g. {never[:5]}")
    repeated = sorted(subject_id for subject_id, count in test_count.items() if count > 1)
    if repeated:
        problems.append(f"{len(repeated)} subjects are in more than one test set, e.g. {repeated[:5]}")
    return problems
