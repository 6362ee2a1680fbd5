"""Config: dotted overrides, YAML files, and errors that name the key and the fix."""

import pytest

from spikeopt.config import (
    Config,
    ConfigError,
    apply,
    dump_yaml,
    from_dict,
    key_docs,
    load_yaml,
    parse_overrides,
    to_dict,
)


def test_every_key_has_a_doc():
    docs = key_docs()
    assert len(docs) > 60
    assert all(doc for _, doc in docs.values())


def test_overrides_parse_as_yaml_and_apply():
    values = parse_overrides(
        [
            "optim.lr=0.01",
            "model.hidden=[64, 32]",
            "neuron.alpha=null",
            "trainer.compile=true",
            "data.name=mnist1d",
        ]
    )
    cfg = apply(Config(), values)
    assert cfg.optim.lr == 0.01 and cfg.model.hidden == [64, 32] and cfg.neuron.alpha is None
    assert cfg.trainer.compile is True and cfg.data.name == "mnist1d"
    assert Config().optim.lr == 1e-3  # the input is not modified


def test_int_is_accepted_for_float_and_scalar_for_list():
    cfg = apply(Config(), {"optim.lr": 1, "model.hidden": 32})
    assert cfg.optim.lr == 1.0 and isinstance(cfg.optim.lr, float) and cfg.model.hidden == [32]


def test_exponent_without_a_dot_is_a_float():
    """YAML 1.1 leaves `1e-9` a string; a float key takes it as the number it is."""
    cfg = apply(
        Config(), parse_overrides(["optim.lr=1e-4", "es.sigma=2E-2", "optim.momentum=-1e0"])
    )
    assert (cfg.optim.lr, cfg.es.sigma, cfg.optim.momentum) == (1e-4, 2e-2, -1.0)
    with pytest.raises(ConfigError, match="expected float"):
        apply(Config(), parse_overrides(["optim.lr=1e"]))


def test_unknown_key_names_it_and_the_nearest_keys():
    with pytest.raises(ConfigError, match=r"unknown config key 'optim\.lrr'.*optim\.lr"):
        apply(Config(), {"optim.lrr": 0.1})
    with pytest.raises(ConfigError, match="unknown config key 'optimizer.lr'"):
        apply(Config(), {"optimizer": {"lr": 0.1}})


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("optim.lr", "fast", "expected float"),
        ("trainer.epochs", 2.5, "expected int"),
        ("trainer.compile", "yes", "expected bool"),
        ("model.hidden", ["a"], "expected int"),
        ("trainer.epochs", True, "expected int"),
    ],
)
def test_wrong_type_names_key_and_type(key, value, expected):
    with pytest.raises(ConfigError, match=rf"{key}: {expected}"):
        apply(Config(), {key: value})


def test_bad_override_syntax():
    with pytest.raises(ConfigError, match="not key=value"):
        parse_overrides(["optim.lr"])


def test_yaml_round_trip(tmp_path):
    cfg = apply(Config(), {"model.hidden": [7], "neuron.alpha": 2.5})
    path = tmp_path / "c.yaml"
    path.write_text(dump_yaml(cfg))
    assert to_dict(from_dict(load_yaml(str(path)))) == to_dict(cfg)


def test_yaml_errors(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_yaml(str(tmp_path / "missing.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_yaml(str(bad))
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("3\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_yaml(str(scalar))
