"""Config: dotted overrides, YAML files, and errors that name the key and the fix."""

import dataclasses
import re
import typing
from typing import Any

import pytest

from spikeopt import api
from spikeopt import config as C
from spikeopt.config import (
    Config,
    ConfigError,
    apply,
    check_choices,
    dump_yaml,
    from_dict,
    key_docs,
    load_yaml,
    parse_overrides,
    to_dict,
)
from spikeopt.functional.composite import TERMS
from spikeopt.functional.loss import LOSSES
from spikeopt.functional.neuron import RESETS
from spikeopt.functional.surrogate import SURROGATES
from spikeopt.methods import METHODS
from spikeopt.methods.base import OPTIMIZERS
from spikeopt.methods.cma_es import CMA_DIAGONAL
from spikeopt.methods.nodepert import CONV, CREDIT, NOISE, SIGMA_MODES, SPLIT
from spikeopt.methods.reinforce import BASELINES, NORMALIZE
from spikeopt.methods.strategy import SIGMA_SCHEDULES
from spikeopt.nn.layers import INITS, NORMS, POOLS
from spikeopt.nn.models import ARCHS, OUTPUT_LAYERS
from spikeopt.nn.policies import OBS_ENCODINGS, READOUTS
from spikeopt.population import MODES, RANDOMNESS, SHAPINGS
from spikeopt.recipes import RECIPES, get_recipe
from spikeopt.tasks.corpus import CORPORA
from spikeopt.tasks.datasets import AUGMENTATIONS
from spikeopt.tasks.encoders import ENCODERS
from spikeopt.tasks.envs import ENVS
from spikeopt.tasks.readers import DATASET_READERS
from spikeopt.train.experiment import TASKS
from spikeopt.train.loop import EARLY_STOP_MODES, GOALS, NONFINITE
from spikeopt.train.schedules import ALPHA_SCHEDULES, LR_SCHEDULES


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


# ---------------------------------------------------------------- named choices

# Every Literal-typed key -> the registry that implements its names (dict keys or a tuple).
REGISTRIES: dict[str, Any] = {
    "data.name": DATASET_READERS,
    "data.augment": AUGMENTATIONS,
    "encoder.kind": ENCODERS,
    "model.arch": ARCHS,
    "model.pool": POOLS,
    "model.cnn_pool": POOLS,
    "model.norm": NORMS,
    "model.readout": OUTPUT_LAYERS,
    "model.init": INITS,
    "neuron.reset": RESETS,
    "neuron.surrogate": SURROGATES,
    "neuron.alpha_schedule": ALPHA_SCHEDULES,
    "method.name": METHODS,
    "env.name": ENVS,
    "policy.readout": READOUTS,
    "policy.obs_encoding": OBS_ENCODINGS,
    "rl.normalize": NORMALIZE,
    "rl.baseline": BASELINES,
    "es.mode": MODES,
    "es.shaping": SHAPINGS,
    "es.sigma_schedule": SIGMA_SCHEDULES,
    "es.vmap_randomness": RANDOMNESS,
    "es.cma_diagonal": CMA_DIAGONAL,
    "nodepert.sigma_mode": SIGMA_MODES,
    "nodepert.noise": NOISE,
    "nodepert.conv": CONV,
    "nodepert.split": SPLIT,
    "nodepert.credit": CREDIT,
    "hybrid.shaping": SHAPINGS,
    "optim.name": OPTIMIZERS,
    "sched.name": LR_SCHEDULES,
    "trainer.task": TASKS,
    "loss.name": LOSSES,
    "loss.terms": TERMS,
    "early_stop.mode": EARLY_STOP_MODES,
    "early_stop.goal": GOALS,
    "trainer.nonfinite": NONFINITE,
    "lang.corpus": CORPORA,
}


def literal_keys() -> dict[str, tuple[str, ...]]:
    """Every dotted key whose type is a Literal (or a list of one), with its names."""
    out = {}
    for section, cls in typing.get_type_hints(Config).items():
        for name, tp in typing.get_type_hints(cls).items():
            if typing.get_origin(tp) is list:
                tp = typing.get_args(tp)[0]
            if typing.get_origin(tp) is typing.Literal:
                out[f"{section}.{name}"] = typing.get_args(tp)
    return out


def test_every_named_choice_equals_the_registry_that_implements_it():
    typed = literal_keys()
    assert set(typed) == set(REGISTRIES), "a Literal-typed key needs its registry here"
    for key, names in typed.items():
        # the same names in the same order: check_choices lists them as the registry does
        assert names == tuple(REGISTRIES[key]), key


def test_choices_are_checked_per_section_not_when_set():
    cfg = apply(Config(), {"model.arch": "transformr", "loss.terms": ["ce", "l2"]})
    assert cfg.model.arch == "transformr"  # apply takes any name; the builder checks it
    check_choices(cfg.encoder)  # an untouched section passes
    with pytest.raises(ConfigError) as err:
        check_choices(cfg.model)
    assert (
        str(err.value)
        == "model.arch: unknown value 'transformr'; valid: mlp, conv, rsnn, cnn, s5, gru"
    )
    with pytest.raises(ConfigError, match="loss.terms: unknown value 'l2'; valid: ce, mse"):
        check_choices(cfg.loss)
    with pytest.raises(ConfigError, match="model.arch"):  # a whole config: section by section
        check_choices(cfg)
    bad = apply(Config(), {"optim.name": "adm"})
    with pytest.raises(ConfigError, match=r"optim.name: unknown value 'adm' \(did you mean 'adam'"):
        check_choices(bad.optim)
    with pytest.raises(ConfigError, match="model.arch: expected str, got 3"):
        apply(Config(), {"model.arch": 3})


def test_show_lists_the_names_of_every_choice():
    docs = key_docs()
    for key, names in literal_keys().items():  # config.choices reads the same Literal
        assert docs[key][1].endswith(f"one of: {' | '.join(names)}"), key
    assert docs["encoder.kind"][1].endswith(
        "one of: repeat | rate | deterministic | latency | sequence | events"
    )
    assert "one of" not in docs["optim.lr"][1]


@pytest.mark.parametrize("key", sorted(C.RANGES))
def test_every_range_refuses_a_value_outside_it_before_anything_is_written(key, tmp_path):
    bad = {list: [-1], int: -1, float: float("nan"), str: "gpu", type(None): -1}
    cfg = api.resolve("digits-mlp-surrogate")
    section, name = key.split(".")
    value = bad[type(getattr(getattr(cfg, section), name))]
    with pytest.raises(ConfigError, match=rf"{re.escape(key)}=.* is out of range: it must be"):
        api.run("digits-mlp-surrogate", {key: value}, out=tmp_path / "run", quiet=True)
    assert not (tmp_path / "run").exists()


def test_every_recipe_is_inside_the_ranges():
    for name in RECIPES:
        C.check_ranges(get_recipe(name).config())


def test_every_config_section_is_read_by_every_run_or_a_task_or_a_method():
    from spikeopt.train.experiment import COMMON_SECTIONS, TASKS

    claimed = {*COMMON_SECTIONS}
    claimed |= {s for t in TASKS.values() for s in t.sections}
    claimed |= {s for m in METHODS.values() for s in m.sections}
    assert claimed == {f.name for f in dataclasses.fields(Config)}  # none hidden from show
