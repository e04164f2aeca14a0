"""One source of truth for every option: the dataclasses in encoder/options.py reach the model, training, the CLI's
flags and help, and the README, and the indexer's environment settings fail in one line."""
from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest

from encoder.options import ModelOptions, TrainConfig, default_of, flag_fields, flag_help
from indexer import settings as indexer_settings
from indexer.__main__ import _options, _parser
from tests.support import REPO


def shown_default(f: dataclasses.Field) -> str:
    default = default_of(f)
    return f.metadata.get("shown") or (f"`{default:g}`" if isinstance(default, float) else f"`{default}`")


def test_the_readme_lists_every_training_flag_with_its_default_and_help():
    text = (REPO / "README.md").read_text()
    rows = [f"| `--{f.name.replace('_', '-')}` | {shown_default(f)} | {f.metadata['help']} |" for f in flag_fields()]
    table = "\n".join(["| Flag | Default | Meaning |", "|---|---|---|", *rows])
    assert table in text, "README's training options table differs from encoder/options.py:\n" + table


def test_a_training_config_is_model_options_plus_the_budget():
    model_names = {f.name for f in dataclasses.fields(ModelOptions)}
    assert model_names <= {f.name for f in dataclasses.fields(TrainConfig)}
    # The model part of the defaults is the model's defaults: there is no second place they could differ.
    assert TrainConfig().model_options() == ModelOptions()
    assert TrainConfig(image_size=16, seed=3).model_options() == ModelOptions(image_size=16, seed=3)


@pytest.mark.parametrize("bad", [dict(variant="magic"), dict(image_size=4), dict(consistency="cosine"),
                                 dict(views="three"), dict(pooling="max")])
def test_bad_model_options_fail_before_tensorflow_loads(bad):
    with pytest.raises(ValueError, match=next(iter(bad)).replace("_", ".")):
        ModelOptions(**bad)


def test_every_training_flag_parses_to_its_field_and_shows_the_dataclass_default():
    parser = _parser()
    build = parser._subparsers._group_actions[0].choices["build"]  # argparse keeps sub-parsers here
    actions = {a.dest: a for a in build._actions}
    for f in flag_fields():
        action = actions[f.name]
        assert action.option_strings == ["--" + f.name.replace("_", "-")]
        assert action.default is None  # unset flags leave the default (or the existing model's value) alone
        assert action.help == flag_help(f) and shown_default(f).strip("`") in action.help
    args = parser.parse_args(["build", "imgs", "--index", "ix", "--zoom", "0.25", "--steps", "7", "--seed", "4",
                              "--variant", "conv", "--learning-rate", "0.01"])
    assert (args.zoom, args.steps, args.seed, args.variant, args.learning_rate) == (0.25, 7, 4, "conv", 0.01)


def test_flags_reach_build_options_and_training_config():
    from indexer.__main__ import _options

    args = _parser().parse_args(["train", "imgs", "--index", "ix", "--code-size", "12", "--whitening", "0",
                                 "--batch-size", "32", "--reconstruction-weight", "2", "-q"])
    options = _options(args)
    assert options.code_size == 12 and options.steps is None
    assert options.training == {"whitening": 0.0, "batch_size": 32, "reconstruction_weight": 2.0}
    config = TrainConfig(code_size=options.code_size, **options.training)
    assert (config.whitening, config.batch_size, config.reconstruction_weight) == (0.0, 32, 2.0)


def test_indexer_settings_come_from_the_environment_with_their_defaults():
    assert indexer_settings.from_environment(indexer_settings.SETTINGS, {}) == indexer_settings.DEFAULTS
    env = {"LOOKALIKE_WORKERS": "3", "LOOKALIKE_MAX_TRAIN_IMAGES": "500", "LOOKALIKE_COMMIT_BATCH": "64"}
    args = _parser_with(env).parse_args(["build", "imgs", "--index", "ix"])
    assert (args.workers, args.max_train_images, args.commit_batch) == (3, 500, 64)
    args = _parser_with(env).parse_args(["build", "imgs", "--index", "ix", "--workers", "1"])
    assert args.workers == 1  # a flag beats the environment
    env = {"LOOKALIKE_ENGINE": "ray", "LOOKALIKE_RAY_ADDRESS": "10.0.0.5:6379", "LOOKALIKE_RAY_ENCODERS": "4"}
    options = _options(_parser_with(env).parse_args(["build", "imgs", "--index", "ix", "--ray-encoders", "2"]))
    assert (options.engine, options.ray_address, options.ray_encoders) == ("ray", "10.0.0.5:6379", 2)
    assert _options(_parser().parse_args(["build", "imgs", "--index", "ix"])).engine == "local"
    assert _options(_parser().parse_args(["build", "imgs", "--index", "ix"])).error_sample is None  # every image
    sampled = _parser_with({"LOOKALIKE_ERROR_SAMPLE": "1000"}).parse_args(["build", "imgs", "--index", "ix"])
    assert _options(sampled).error_sample == 1000
    every = _parser_with({"LOOKALIKE_ERROR_SAMPLE": "1000"}).parse_args(["build", "i", "--index", "x",
                                                                          "--error-sample", "ALL"])
    assert _options(every).error_sample is None


def test_the_ray_engine_without_its_extra_is_a_clear_error(tmp_path, monkeypatch):
    from indexer import ray_engine
    from indexer.build import BuildError, BuildOptions, _engine

    monkeypatch.setattr(ray_engine, "ray_available", lambda: False)
    with pytest.raises(BuildError, match=r"--engine ray needs the optional Ray extra: pip install 'lookalike\[ray\]'"):
        _engine(BuildOptions(engine="ray"))


def _parser_with(env: dict[str, str]):
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        return _parser()


@pytest.mark.parametrize("env,raw", [("LOOKALIKE_WORKERS", "x"), ("LOOKALIKE_WORKERS", "-1"),
                                     ("LOOKALIKE_MAX_TRAIN_IMAGES", "0"), ("LOOKALIKE_COMMIT_BATCH", "1.5"),
                                     ("LOOKALIKE_ENGINE", "spark"), ("LOOKALIKE_RAY_ENCODERS", "-2"),
                                     ("LOOKALIKE_ERROR_SAMPLE", "some"), ("LOOKALIKE_ERROR_SAMPLE", "-5")])
def test_a_bad_indexer_setting_is_one_line_in_process(env, raw, monkeypatch, capsys):
    from indexer.__main__ import main

    monkeypatch.setenv(env, raw)
    with pytest.raises(SystemExit) as stop:
        main(["info", "--index", "nowhere"])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {env}={raw!r}: " + err[0].split(": ", 2)[2]] and "expected" in err[0]


def test_a_bad_indexer_setting_is_one_line_from_the_shell():
    # The case, as a user types it: before, this died with a traceback from int().
    proc = subprocess.run([sys.executable, "-m", "indexer", "--help"], cwd=REPO, capture_output=True, text=True,
                          env={"LOOKALIKE_WORKERS": "x", "PATH": "/usr/bin:/bin"}, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == ["error: LOOKALIKE_WORKERS='x': expected a whole number from 0 to 1000"]


@pytest.mark.slow
def test_the_model_takes_its_options_and_gives_them_back(tmp_path):
    from encoder.model import Autoencoder, build_autoencoder

    options = ModelOptions(image_size=16, code_size=6, variant="conv", width=8, seed=5)
    model = build_autoencoder(options, reconstruction_scale=2.0)
    assert model.options == options and model.code_size == 6
    config = model.get_config()
    assert {k: config[k] for k in options.to_dict()} == options.to_dict()
    again = Autoencoder.from_config(config)
    assert again.options == options and again.reconstruction_scale == 2.0
    assert Autoencoder().options == ModelOptions()  # the constructor's defaults are the dataclass's
