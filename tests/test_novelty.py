"""encoder.novelty: the complexity-corrected reconstruction signal and the code signal, fitted and judged."""
from __future__ import annotations

import json

import numpy as np

from encoder.novelty import CODE_TAIL, MIN_HELD_OUT, RECONSTRUCTION_TAIL, Novelty, complexity, fit_novelty


def population(n: int, seed: int, shift: float = 0.0, d: int = 6):
    """Errors that grow with complexity as images' do (log-linear plus noise), latents from one Gaussian."""
    rng = np.random.default_rng(seed)
    log_complexity = rng.uniform(-1.0, 2.0, n)
    errors = np.exp(-6.0 + 1.2 * log_complexity + rng.normal(shift, 0.3, n))
    latents = rng.normal(0, 1, (n, d)) @ np.diag(np.linspace(0.5, 2.0, d))
    return errors, latents, log_complexity


def test_a_flat_image_is_simpler_than_a_noisy_one():
    rng = np.random.default_rng(0)
    flat = np.full((1, 32, 32, 3), 128, np.uint8)
    noisy = rng.integers(0, 256, (1, 32, 32, 3), dtype=np.uint8)
    grey = rng.integers(0, 256, (1, 32, 32, 1), dtype=np.uint8)
    values = complexity(np.concatenate([flat, noisy]))
    assert values.shape == (2,) and values[0] < values[1] - 2  # far fewer bits per pixel
    assert complexity(grey).shape == (1,)  # single-channel models are measured too


def test_unseen_images_of_the_same_kind_are_flagged_about_as_often_as_promised():
    # Held-out images rebuild worse than trained ones (shift): the limits come from them, not the training set.
    novelty = fit_novelty(population(2_000, 0), population(300, 1, shift=0.4))
    assert novelty.calibrated_on == "held-out" and novelty.calibration_images == 300
    judged = novelty.judge(*population(5_000, 2, shift=0.4))
    share = np.mean([bool(j["fired"]) for j in judged])
    assert share < 2.5 * (RECONSTRUCTION_TAIL + CODE_TAIL), share
    assert 0.3 < share / (RECONSTRUCTION_TAIL + CODE_TAIL)  # not silent either: the tails are honest
    trained_calibration = fit_novelty(population(2_000, 0), population(300, 0))  # what calibrating on trained does
    overshoot = np.mean([bool(j["fired"]) for j in trained_calibration.judge(*population(5_000, 2, shift=0.4))])
    assert overshoot > 3 * share


def test_each_signal_fires_for_its_own_reason():
    novelty = fit_novelty(population(2_000, 0), population(300, 1))
    errors, latents, log_complexity = population(3, 3)
    simple_but_badly_rebuilt = (np.array([np.exp(-6.0 + 1.2 * -1.0 + 2.0)]), latents[:1], np.array([-1.0]))
    busy_and_badly_rebuilt = (np.array([np.exp(-6.0 + 1.2 * 2.0 + 0.1)]), latents[:1], np.array([2.0]))
    far_code = (errors[:1], latents[:1] + 12.0, log_complexity[:1])
    [simple] = novelty.judge(*simple_but_badly_rebuilt)
    [busy] = novelty.judge(*busy_and_badly_rebuilt)
    [far] = novelty.judge(*far_code)
    assert simple["fired"] == ["reconstruction"] and simple["signals"]["reconstruction"] > 99
    assert busy["fired"] == []  # a high error is ordinary for an image that complex
    assert far["fired"] == ["code"] and far["signals"]["code"] > 99.5
    assert set(simple["signals"]) == {"reconstruction", "code"}


def test_too_few_held_out_images_calibrate_on_every_image_and_say_so():
    train, held = population(50, 0), population(MIN_HELD_OUT - 1, 1, shift=0.4)
    novelty = fit_novelty(train, held)
    assert novelty.calibrated_on == "training and held-out" and novelty.calibration_images == 50 + MIN_HELD_OUT - 1
    empty = (np.zeros(0), np.zeros((0, 6)), np.zeros(0))
    assert fit_novelty(train, empty).calibration_images == 50


def test_images_all_of_one_complexity_give_a_flat_line_not_a_failure():
    errors, latents, _ = population(200, 0)
    novelty = fit_novelty((errors, latents, np.full(200, 3.0)), population(50, 1))  # pure noise: PNG can't squeeze it
    assert novelty.slope == 0.0 and abs(novelty.intercept - np.log(errors).mean()) < 1e-9


def test_the_calibration_survives_the_model_sidecar():
    novelty = fit_novelty(population(500, 0), population(100, 1))
    again = Novelty.from_dict(json.loads(json.dumps(novelty.to_dict())))
    assert again == novelty
    probe = population(20, 4)
    assert again.judge(*probe) == novelty.judge(*probe)


def test_a_trained_model_carries_its_calibration_and_the_serving_path_uses_it(tiny_collection):
    from PIL import Image, ImageDraw

    from encoder.embed import Encoder
    from encoder.preprocess import load_image

    encoder = Encoder.load(tiny_collection.index_dir)
    assert encoder.novelty is not None and encoder.novelty.calibrated_on == "training and held-out"  # 4 held out
    size, channels = encoder.image_size, encoder.channels
    own = np.stack([load_image(p, size, channels).pixels for p in tiny_collection.images])
    digit = Image.new("L", (28, 28))
    ImageDraw.Draw(digit).text((8, 6), "7", fill=255)
    foreign = np.stack([load_image(im_bytes(im), size, channels).pixels
                        for im in (Image.new("RGB", (48, 48), "white"), digit)])
    for pixels, flagged in ((own, False), (foreign, True)):
        codes, errors, latents = encoder.encode_for_query(pixels)
        np.testing.assert_allclose(codes, encoder.encode(pixels), rtol=1e-4, atol=1e-5)  # the indexing path's codes
        judged = encoder.judge(pixels, errors, latents)
        assert judged is not None and len(judged) == len(pixels)
        shares = np.mean([bool(j["fired"]) for j in judged])
        assert (shares == 1.0) if flagged else (shares <= 0.1), (flagged, judged)


def im_bytes(image) -> bytes:
    import io

    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()
