"""Every registered recipe resolves, and every one whose data is offline runs a forward pass."""

import pytest

from spikeopt import api
from spikeopt.config import ConfigError
from spikeopt.recipes import RECIPES, get_recipe, list_recipes
from spikeopt.tasks import DataError

OFFLINE = {"digits", "mnist1d"}


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_recipe_config_resolves(name):
    recipe = get_recipe(name)
    cfg = recipe.config()
    assert recipe.summary and recipe.application and recipe.architecture
    t = cfg.trainer
    plain_backprop = recipe.architecture == "cnn" or t.task != "classification" or t.forward_check
    assert cfg.method.name == recipe.method or plain_backprop


# control recipes have their own smoke test (tests/train/test_control_recipes.py)
CLASSIFY = sorted(n for n, r in RECIPES.items() if r.config().trainer.task != "control")


@pytest.mark.parametrize("name", CLASSIFY)
def test_recipe_forward_pass_or_clear_data_error(name, tmp_path):
    cfg = get_recipe(name).config()
    overrides = {"data.n_train": 0, "data.batch_size": 8, "data.cache_dir": str(tmp_path)}
    if cfg.data.name in OFFLINE:
        summary = api.forward_check(api.resolve(name, overrides))
        assert summary["ok"], summary
    else:
        with pytest.raises(DataError, match="data.root"):
            api.forward_check(api.resolve(name, overrides))


def test_list_filters():
    assert {r.name for r in list_recipes(method="surrogate")} >= {"digits-surrogate"}
    assert all(r.architecture == "rsnn" for r in list_recipes(architecture="rsnn"))


def test_unknown_recipe():
    with pytest.raises(ConfigError, match="did you mean"):
        get_recipe("digit-surrogate")
