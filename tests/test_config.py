import pytest

from samedge_lib.record.config import ConfigError, RunConfig, preset_config


def test_presets_validate_for_every_task():
    for task in ("mnist", "cifar10", "shakespeare"):
        for preset in ("smoke", "cpu", "paper"):
            gd = preset_config(task, preset)
            sam = preset_config(task, preset, rho=0.1)
            assert gd.optimizer == "gd" and gd.rho == 0
            assert sam.optimizer == "sam" and sam.rho == 0.1
            assert gd.identity() != sam.identity()


def test_paper_preset_is_the_official_setting():
    cfg = preset_config("mnist", "paper", rho=0.1)
    assert cfg.eta == 0.01 and cfg.n_train is None and cfg.batch_size is None and cfg.loss == "mse_mean"
    tr = preset_config("shakespeare", "paper", rho=0.1)
    assert tr.eta == 0.1 and tr.batch_size == 128 and tr.loss == "cross_entropy"


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"task": "imagenet"}, ["task", "'mnist'", "'cifar10'", "'shakespeare'"]),
        ({"optimizer": "adam"}, ["optimizer", "'gd'", "'sam'"]),
        ({"eta": 0.0}, ["eta", "> 0"]),
        ({"eta": -1.0}, ["eta"]),
        ({"rho": -0.1, "optimizer": "sam"}, ["rho", ">= 0"]),
        ({"rho": 0.1, "optimizer": "gd"}, ["optimizer='gd' needs rho=0"]),
        ({"hvp": "magic"}, ["hvp", "'exact'", "'finite_difference'"]),
        ({"dtype": "float16"}, ["dtype", "'float32'", "'float64'"]),
        ({"model": {"depth": 3, "colour": 2}}, ["colour", "depth", "width"]),
        ({"steps": 0}, ["steps"]),
        ({"k": 2.5}, ["k", "integer"]),
        ({"loss": "cross_entropy"}, ["loss", "mse_mean"]),
        ({"k": 3, "lanczos_max_iter": 2}, ["k=3 is more than lanczos_max_iter=2", "lanczos_max_iter >= 3"]),
    ],
)
def test_invalid_configs_name_field_and_allowed_values(changes, words):
    base = dict(task="mnist", eta=0.01)
    base.update(changes)
    with pytest.raises(ConfigError) as err:
        RunConfig(**base).validate()
    for w in words:
        assert w in str(err.value)


def test_roundtrip_and_unknown_fields():
    cfg = preset_config("cifar10", "smoke", rho=0.05)
    assert RunConfig.from_dict(cfg.to_dict()) == cfg
    d = cfg.to_dict()
    d["colour"] = 1
    with pytest.raises(ConfigError, match="unknown config fields"):
        RunConfig.from_dict(d)


def test_identity_ignores_labels_but_not_physics():
    cfg = preset_config("mnist", "smoke", rho=0.1)
    assert cfg.replace(name="x", checkpoint_every=3).identity() == cfg.identity()
    assert cfg.replace(eta=cfg.eta * 2).identity() != cfg.identity()
    assert cfg.replace(seed=1).identity() != cfg.identity()
