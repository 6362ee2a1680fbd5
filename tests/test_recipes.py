"""Every registered recipe resolves, and every one whose data is offline runs a forward pass."""

import math

import pytest

from spikeopt import api
from spikeopt.config import ConfigError
from spikeopt.recipes import RECIPES, get_recipe, list_recipes
from spikeopt.tasks import DataError
from tests.tasks.test_datasets import make_idx, make_images

OFFLINE = {"digits", "mnist1d"}


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_recipe_config_resolves(name):
    recipe = get_recipe(name)
    cfg = recipe.config()
    assert recipe.summary and recipe.application and recipe.architecture
    t = cfg.trainer
    plain_backprop = recipe.architecture == "cnn" or t.task != "classification" or t.forward_check
    assert cfg.method.name == recipe.method or plain_backprop


# control recipes have their own smoke test (tests/train/test_control_recipes.py); language
# recipes train a few steps below (their corpus ships with Python: always offline)
CLASSIFY = sorted(n for n, r in RECIPES.items() if r.config().trainer.task == "classification")
LANGUAGE = sorted(n for n, r in RECIPES.items() if r.config().trainer.task == "language")


def test_language_recipes_are_registered():
    assert LANGUAGE == ["language-gru", "language-rsnn", "language-s5"]
    assert {r.name for r in list_recipes(application="language")} == set(LANGUAGE)


@pytest.mark.parametrize("name", LANGUAGE)
def test_language_recipe_trains_a_few_steps(name, tmp_path):
    over = {"trainer.epochs": 1, "trainer.steps_per_epoch": 2, "trainer.progress": False,
            "lang.seq_len": 16, "data.batch_size": 4, "lang.sample_chars": 20}  # fmt: skip
    summary = api.run(name, over, out=tmp_path / "run", quiet=True)
    assert math.isfinite(summary["test_bpc"]) and summary["iterations"] == 2
    assert len((tmp_path / "run" / "samples.txt").read_text()) == len("The ") + 20


@pytest.mark.parametrize("name", CLASSIFY)
def test_recipe_forward_pass_or_clear_data_error(name, tmp_path):
    cfg = get_recipe(name).config()
    overrides = {"data.n_train": 0, "data.batch_size": 8, "data.cache_dir": str(tmp_path)}
    if cfg.data.name in OFFLINE:
        summary = api.forward_check(api.resolve(name, overrides))
        # shapes and a finite loss; a readout silent at init on 8 samples is reported, not wrong
        assert summary["loss_finite"] and all(layer["shape_ok"] for layer in summary["layers"])
    else:
        with pytest.raises(DataError, match="data.root"):
            api.forward_check(api.resolve(name, overrides))


def test_list_filters():
    assert {r.name for r in list_recipes(method="surrogate")} >= {"digits-surrogate"}
    assert all(r.architecture == "rsnn" for r in list_recipes(architecture="rsnn"))


def test_unknown_recipe():
    with pytest.raises(ConfigError, match="did you mean"):
        get_recipe("digit-surrogate")


# issue 12: each zeroth-order recipe defaults to the best estimator and trains under both
ZEROTH_ORDER = ["mnist-es", "mnist-es-full", "fashion-es", "mnist1d-es"]
ZEROTH_ORDER += ["cifar10-es-repeat-big", "cifar10-es"]


@pytest.fixture(scope="module")
def small_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """MNIST/Fashion IDX files and a CIFAR-10 JPEG folder, each in its original layout."""
    root = tmp_path_factory.mktemp("files")
    make_idx(root / "idx", gz=False)
    make_images(root / "cifar10", ext="jpg")
    idx, cifar = str(root / "idx"), str(root / "cifar10")
    return {"mnist": idx, "fashion": idx, "cifar10": cifar}


@pytest.mark.parametrize("method", ["nodepert", "es"])
@pytest.mark.parametrize("name", ZEROTH_ORDER)
def test_zeroth_order_recipe_trains_by_nodepert_and_es(name, method, small_files, tmp_path):
    cfg = get_recipe(name).config()
    assert cfg.method.name == "nodepert"
    overrides = {
        "method.name": method,
        "es.population": 4,
        "trainer.epochs": 1,
        "trainer.steps_per_epoch": 2,
        "trainer.progress": False,
        "data.n_train": 0,
        "data.n_test": 0,
        "data.batch_size": 8,
        "data.cache_dir": str(tmp_path / "cache"),
    }
    if cfg.data.name in small_files:
        overrides["data.root"] = small_files[cfg.data.name]
    summary = api.run(name, overrides, None, tmp_path / "run", quiet=True)
    assert summary["method"] == method and summary["iterations"] == 2
    assert math.isfinite(summary["test_loss"]) and (tmp_path / "run" / "checkpoint.pt").exists()


def test_forward_check_is_not_ok_when_a_spiking_layer_never_fires():
    summary = api.forward_check(api.resolve("snn-forward"))
    assert summary["ok"] and not any(layer["silent"] for layer in summary["layers"])
    summary = api.forward_check(api.resolve("snn-forward", {"neuron.v_threshold": 1e6}))
    assert not summary["ok"] and [layer["silent"] for layer in summary["layers"]] == [True, True]
    li = api.forward_check(api.resolve("snn-forward", {"model.readout": "li"}))
    assert li["ok"] and not li["layers"][-1]["silent"]  # an LI readout has no spikes to miss


# issue 16.1: every event recipe trains end to end on a fixture in its authors' file format
EVENTS = sorted(r.name for r in list_recipes(application="events"))


@pytest.fixture(scope="module")
def event_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """SHD, N-MNIST and DVS Gesture fixtures, each in its original layout."""
    from tests.tasks.test_events import make_gesture, make_nmnist, make_shd

    root = tmp_path_factory.mktemp("events")
    return {"shd": str(make_shd(root / "shd", 16, "zip")),
            "nmnist": str(make_nmnist(root / "nmnist", 12, zipped=True)),
            "dvsgesture": str(make_gesture(root / "dvs", 12, tar=True))}  # fmt: skip


@pytest.mark.parametrize("name", EVENTS)
def test_event_recipe_trains_end_to_end_on_its_fixture(name, event_files, tmp_path):
    assert len(EVENTS) == 5
    cfg = get_recipe(name).config()
    overrides = {
        "data.root": event_files[cfg.data.name],
        "data.cache_dir": str(tmp_path / "cache"),
        "data.batch_size": 8,
        "es.population": 4,
        "trainer.epochs": 1,
        "trainer.steps_per_epoch": 2,
        "trainer.progress": False,
    }
    summary = api.run(name, overrides, None, tmp_path / "run", quiet=True)
    assert summary["iterations"] == 2 and math.isfinite(summary["test_loss"])
    assert (tmp_path / "run" / "checkpoint.pt").exists()
