"""Calibration: thresholds for each target on hand-made scores, frozen when applied."""

from __future__ import annotations

import numpy as np
import pytest

from siamkit.calibrate import ThresholdCalibrator, parse_target

# similarities: positives 0.9, 0.8, 0.4; negatives 0.7, 0.3, 0.2, 0.1
SCORES = np.array([0.9, 0.8, 0.7, 0.4, 0.3, 0.2, 0.1])
LABELS = np.array([1, 1, 0, 1, 0, 0, 0])


def test_far_target_picks_the_most_accepting_threshold_within_the_far():
    # FAR 0 allows accepting down to 0.8; FAR 0.25 down to 0.4 (0.7 is the one false accept)
    assert ThresholdCalibrator("far", 0.0).fit(SCORES, LABELS).threshold_ == pytest.approx(0.8)
    cal = ThresholdCalibrator("far", 0.25).fit(SCORES, LABELS)
    assert cal.threshold_ == pytest.approx(0.4)
    assert cal.validation_["far"] == pytest.approx(0.25)
    assert cal.validation_["recall"] == pytest.approx(1.0)


def test_precision_target():
    # accepting down to 0.8: precision 1; to 0.4: 3/4; so precision >= 0.75 -> 0.4
    assert ThresholdCalibrator("precision", 0.75).fit(SCORES, LABELS).threshold_ == \
        pytest.approx(0.4)
    assert ThresholdCalibrator("precision", 0.9).fit(SCORES, LABELS).threshold_ == \
        pytest.approx(0.8)


def test_accuracy_and_eer_targets():
    assert ThresholdCalibrator("accuracy").fit(SCORES, LABELS).threshold_ == pytest.approx(0.75)
    cal = ThresholdCalibrator("eer").fit([0, 1, 2, 3], [0, 0, 1, 1])
    assert cal.predict([0, 1, 2, 3]).tolist() == [False, False, True, True]


def test_distances_point_the_other_way():
    # the same data as distances (lower = closer): thresholds and decisions mirror
    cal = ThresholdCalibrator("far", 0.25, higher_is_closer=False).fit(-SCORES, LABELS)
    assert cal.threshold_ == pytest.approx(-0.4)
    assert cal.predict(-SCORES).tolist() == (SCORES >= 0.4).tolist()


def test_threshold_is_frozen_on_test_data():
    cal = ThresholdCalibrator("eer").fit(SCORES, LABELS)
    t = cal.threshold_
    test_scores, test_labels = np.array([0.95, 0.05, 0.5]), np.array([0, 1, 1])
    rates = cal.evaluate(test_scores, test_labels)
    assert cal.threshold_ == t  # evaluating never moves it
    expected = cal.predict(test_scores)
    assert rates["accuracy"] == pytest.approx(np.mean(expected == test_labels.astype(bool)))


def test_round_trip_and_errors():
    cal = ThresholdCalibrator("precision", 0.9).fit(SCORES, LABELS)
    again = ThresholdCalibrator.from_dict(cal.to_dict())
    assert again.threshold_ == cal.threshold_ and again.predict(SCORES).tolist() == \
        cal.predict(SCORES).tolist()
    with pytest.raises(RuntimeError, match="not fitted"):
        ThresholdCalibrator().predict(SCORES)
    with pytest.raises(ValueError, match="needs a value"):
        ThresholdCalibrator("far").fit(SCORES, LABELS)


def test_parse_target():
    assert parse_target("eer") == ("eer", None)
    assert parse_target("far=0.01") == ("far", 0.01)
    assert parse_target("precision=0.95") == ("precision", 0.95)
    for bad, msg in [("foo", "unknown calibration target"), ("far", "needs a value"),
                     ("far=2", "must be in"), ("eer=1", "takes no value")]:
        with pytest.raises(ValueError, match=msg):
            parse_target(bad)


def test_bad_targets_are_config_errors():
    from siamkit.config import ConfigError

    with pytest.raises(ConfigError, match="must be in"):
        parse_target("far=7")


def test_check_direction_refuses_scores_the_wrong_way_round():
    from siamkit.calibrate import check_direction
    from siamkit.data.download import DatasetError

    check_direction(SCORES, LABELS, True, "s.csv")  # similarities for a similarity model
    check_direction(-SCORES, LABELS, False, "s.csv")  # distances for a distance model
    with pytest.raises(DatasetError, match=r"s.csv: .*\(lower is closer\): similarities"):
        check_direction(SCORES, LABELS, False, "s.csv")
