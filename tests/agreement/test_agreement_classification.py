"""Accuracy and macro-F1 from confusion tables (last column = unparsed)."""

import numpy as np
import pytest

from thinktrace.agreement._classification import accuracy, macro_f1


def _table(human, rater, v):
    t = np.zeros((v, v + 1))
    for h, r in zip(human, rater):
        t[h, v if r is None else r] += 1
    return t


def _naive_macro_f1(human, rater, v):
    present = sorted(set(human) | {r for r in rater if r is not None})
    f1s = []
    for c in present:
        tp = sum(h == c and r == c for h, r in zip(human, rater))
        fp = sum(h != c and r == c for h, r in zip(human, rater))
        fn = sum(h == c and r != c for h, r in zip(human, rater))
        f1s.append(2 * tp / (2 * tp + fp + fn))
    return float(np.mean(f1s))


def test_hand_computed_with_unparsed():
    human = [0, 0, 1, 1, 2]
    rater = [0, None, 1, 0, None]
    t = _table(human, rater, 3)
    assert accuracy(t) == pytest.approx(2 / 5)  # unparsed counts as wrong
    # label 0: TP1 FP1 FN1 -> 0.5; label 1: TP1 FN1 -> 2/3; label 2: FN1 -> 0
    assert macro_f1(t) == pytest.approx((0.5 + 2 / 3 + 0.0) / 3)


def test_matches_naive_definition_and_vectorizes():
    rng = np.random.default_rng(0)
    tables, expected = [], []
    for _ in range(20):
        human = list(rng.integers(0, 4, 30))
        rater = [None if rng.random() < 0.1 else int(x) for x in rng.integers(0, 4, 30)]
        tables.append(_table(human, rater, 5))  # label 4 never occurs: not in the macro average
        expected.append(_naive_macro_f1(human, rater, 5))
    assert np.allclose(macro_f1(np.stack(tables)), expected)


def test_perfect_and_empty():
    t = _table([0, 1, 2, 1], [0, 1, 2, 1], 3)
    assert accuracy(t) == 1.0 and macro_f1(t) == 1.0
    assert np.isnan(accuracy(np.zeros((3, 4)))) and np.isnan(macro_f1(np.zeros((3, 4))))
