"""benchmarks/novelty.py's signals on arrays: the blur baseline, the latent's Mahalanobis distance, the flag rates."""
import numpy as np

from benchmarks.novelty import blur_error, flag_rates, gaussian, mahalanobis


def test_a_flat_image_rebuilds_from_its_blur_and_a_checkerboard_does_not():
    flat = np.full((1, 32, 32, 3), 120, np.uint8)
    board = (np.indices((32, 32)).sum(axis=0) % 2 * 255).astype(np.uint8)[None, :, :, None].repeat(3, axis=3)
    errors = blur_error(np.concatenate([flat, board]))
    assert errors[0] < 1e-6 and errors[1] > 0.2


def test_mahalanobis_distance_grows_along_a_narrow_direction():
    z = np.random.default_rng(0).standard_normal((5_000, 2)) * np.array([10.0, 0.1])
    mean, precision = gaussian(z)
    wide, narrow = mahalanobis(np.array([[10.0, 0.0], [0.0, 0.5]]), mean, precision)
    assert 0.5 < wide < 2 and narrow > 20  # squared: 1 sigma along x, 5 sigma along y


def test_a_rule_fires_when_any_of_its_signals_is_above_the_calibration_percentile():
    rng = np.random.default_rng(1)
    signals = {"calibration": {"a": rng.random(1000), "b": rng.random(1000)},
               "in": {"a": rng.random(1000) * 0.9, "b": rng.random(1000) * 0.9},
               "out": {"a": np.full(10, 2.0), "b": np.zeros(10)}}
    rates = flag_rates(signals, "calibration", {"a": ("a",), "a or b": ("a", "b")}, 99.0)
    assert rates["a"]["in"] == 0.0 and rates["a"]["out"] == 1.0 and rates["a or b"]["out"] == 1.0
