"""Bring your own model: snnTorch and Norse networks under every classification method,
through ``api.run(model=...)`` and the CLI's ``model.module`` (real peer libraries)."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from spikeopt import api
from spikeopt.config import ConfigError
from spikeopt.methods import METHODS

snn = pytest.importorskip("snntorch")

# the textbook snnTorch net (tutorial 5): Linear -> Leaky -> Linear -> Leaky, its own surrogate
SNNTORCH_NET = textwrap.dedent("""
    import math

    import snntorch as snn
    import torch
    from snntorch import surrogate
    from torch import nn


    class Net(nn.Module):
        def __init__(self, n_in, n_hidden, n_out, beta=0.9):
            super().__init__()
            grad = surrogate.fast_sigmoid(slope=25)
            self.fc1, self.lif1 = nn.Linear(n_in, n_hidden), snn.Leaky(beta, spike_grad=grad)
            self.fc2, self.lif2 = nn.Linear(n_hidden, n_out), snn.Leaky(beta, spike_grad=grad)

        def forward(self, x):  # x (B, T, ...) -> ([spikes (B, T, N)], [membranes (B, T, N)])
            mem1, mem2 = self.lif1.init_leaky(), self.lif2.init_leaky()
            rec = [[], [], [], []]
            for t in range(x.shape[1]):
                spk1, mem1 = self.lif1(self.fc1(x[:, t].flatten(1)), mem1)
                spk2, mem2 = self.lif2(self.fc2(spk1), mem2)
                for seq, v in zip(rec, (spk1, mem1, spk2, mem2)):
                    seq.append(v)
            s1, m1, s2, m2 = (torch.stack(seq, 1) for seq in rec)
            return [s1, s2], [m1, m2]


    def factory(cfg, input_shape, n_outputs):
        return Net(math.prod(input_shape), 64, n_outputs)
""")
TINY = {"trainer.epochs": 1, "trainer.steps_per_epoch": 2, "trainer.progress": False,
        "data.n_train": 200, "data.n_test": 100, "es.population": 8}  # fmt: skip
CLASSIFIERS = [m for m, cls in METHODS.items() if "classification" in cls.tasks]


@pytest.fixture(scope="module")
def mynet(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mynet")
    (folder / "mynet.py").write_text(SNNTORCH_NET)
    sys.path.insert(0, str(folder))
    import mynet  # type: ignore[import-not-found]

    yield folder, mynet
    sys.path.remove(str(folder))
    sys.modules.pop("mynet", None)


@pytest.mark.parametrize("method", CLASSIFIERS)
def test_every_method_trains_an_snntorch_net_or_says_why_not(mynet, method):
    _, module = mynet
    over = {**TINY, "method.name": method}
    if method == "nodepert":  # its estimate needs spikeopt layers' currents
        with pytest.raises(ConfigError, match="needs a model built from spikeopt layers"):
            api.run("digits-mlp-surrogate", over, model=module.factory)
        return
    if method == "conversion":  # it converts spikeopt's ReLU cnn, not a network already spiking
        with pytest.raises(ConfigError, match="model.arch=cnn"):
            api.run("digits-mlp-surrogate", over, model=module.factory)
        return
    torch.manual_seed(0)
    summary = api.run("digits-mlp-surrogate", over, model=module.factory)
    assert summary["iterations"] == 2 and 0.0 <= summary["test_acc"] <= 1.0
    assert summary["test_loss"] == summary["test_loss"]  # finite, not NaN


def test_an_snntorch_net_learns_under_bptt_and_es(mynet):
    _, module = mynet
    over = {"trainer.epochs": 3, "trainer.progress": False, "loss.name": "ce_mean"}
    bptt = api.run("digits-mlp-surrogate", over, model=module.factory)
    assert bptt["test_acc"] > 0.8, bptt["test_acc"]
    es = api.run("digits-es", {"trainer.epochs": 1, "trainer.steps_per_epoch": 40,
                               "trainer.progress": False, "es.population": 64},
                 model=module.factory)  # fmt: skip
    assert es["test_acc"] > 0.4, es["test_acc"]  # chance is 0.1


def test_a_built_module_is_trained_in_place(mynet):
    _, module = mynet
    net = module.Net(64, 32, 10)
    before = net.fc1.weight.detach().clone()
    api.run("digits-mlp-surrogate", TINY, model=net)
    assert not torch.equal(before, net.fc1.weight)
    with pytest.raises(ConfigError, match="one session"):
        api.run("digits-mlp-surrogate", TINY, model=net, sessions=2)
    with pytest.raises(ConfigError, match="nn.Module or a factory"):
        api.run("digits-mlp-surrogate", TINY, model=42)  # type: ignore[arg-type]


def test_a_norse_net_trains_under_bptt_and_es():
    norse = pytest.importorskip("norse.torch")
    from torch import nn

    class NorseNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc1, self.lif1 = nn.Linear(64, 32), norse.LIFCell()
            self.fc2, self.lif2 = nn.Linear(32, 10), norse.LIFCell()

        def forward(self, x):
            s1 = s2 = None
            rec: list[list[torch.Tensor]] = [[], [], [], []]
            for t in range(x.shape[1]):
                z1, s1 = self.lif1(10 * self.fc1(x[:, t].flatten(1)), s1)
                z2, s2 = self.lif2(10 * self.fc2(z1), s2)
                for seq, v in zip(rec, (z1, s1.v, z2, s2.v)):
                    seq.append(v)
            a, b, c, d = (torch.stack(seq, 1) for seq in rec)
            return [a, c], [b, d]

    for method in ("surrogate", "es"):
        summary = api.run("digits-mlp-surrogate", {**TINY, "method.name": method},
                          model=lambda cfg, shape, n: NorseNet())  # fmt: skip
        assert summary["iterations"] == 2


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The installed console script (its sys.path lacks the working directory)."""
    exe = Path(sys.executable).parent / "spikeopt"
    return subprocess.run([str(exe), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300, env={"PATH": "/usr/bin:/bin", "HOME": str(cwd),
                                            "PYTHONWARNINGS": "ignore"})  # fmt: skip


def test_model_module_from_the_command_line(mynet):
    folder, _ = mynet
    out = folder / "run"
    r = cli("run", "digits-es", "model.module=mynet:factory", "trainer.epochs=1",
            "trainer.steps_per_epoch=2", "data.n_train=200", "data.n_test=100",
            "es.population=8", "--out", str(out), "--quiet", cwd=folder)  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    assert "module: mynet:factory" in (out / "config.yaml").read_text()
    assert json.loads((out / "summary.json").read_text())["iterations"] == 2


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("mynet", "is not 'package.module:factory'"),
        ("no_such_module:f", "cannot import no_such_module"),
        ("mynet:nothing", "mynet has no nothing"),
        ("mynet:math", "mynet has a non-callable math"),
        ("mynet:Net", "the model factory raised TypeError"),  # a class, not a factory
    ],
)
def test_bad_model_modules_exit_2_and_write_nothing(mynet, spec, message, monkeypatch, capsys):
    # in-process (the subprocess path, console script and working directory, is the test above)
    from spikeopt import cli as spikeopt_cli

    folder, _ = mynet
    monkeypatch.chdir(folder)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p != str(folder)])
    out = folder / "runs" / "bad"
    rc = spikeopt_cli.main(["run", "digits-es", f"model.module={spec}", "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and message in err and "Traceback" not in err, err
    assert not out.parent.exists()
