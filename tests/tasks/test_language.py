"""The language task: bits per character, the sampler, a real short run, resume, bad inputs."""

import json
import math
import subprocess
import sys

import pytest
import torch
from torch import nn

from spikeopt import api
from spikeopt.config import ConfigError
from spikeopt.nn.language import build_language_model
from spikeopt.tasks.corpus import make_corpus
from spikeopt.tasks.language import bits_per_char, sample

FAST = {"trainer.epochs": 1, "trainer.steps_per_epoch": 30, "trainer.progress": False,
        "lang.seq_len": 32, "lang.sample_chars": 100}  # fmt: skip


def test_bits_per_char_on_known_distributions():
    targets = torch.tensor([[0, 1, 2, 3]])
    assert bits_per_char(torch.zeros(1, 4, 8), targets) == pytest.approx(3.0)  # uniform over 8
    # p(target) = 1/2 everywhere: exactly one bit per character
    y = targets % 3
    logits = torch.full((1, 4, 3), -1e9)
    logits[0, torch.arange(4), y[0]] = 0.0
    logits[0, torch.arange(4), (y[0] + 1) % 3] = 0.0
    assert bits_per_char(logits, y) == pytest.approx(1.0)


class Uniform(nn.Module):
    """Equal logits over ``vocab`` tokens at every position (the model contract's shape)."""

    def __init__(self, vocab: int) -> None:
        super().__init__()
        self.vocab = vocab

    def forward(self, x):
        logits = torch.zeros(*x.shape, self.vocab)
        return [logits], [logits]


def test_sampler_is_seeded_and_stays_in_the_vocabulary():
    corpus = make_corpus("hello world, hello there " * 4, 0.1)
    model, cpu = Uniform(len(corpus.vocab)), torch.device("cpu")
    a = sample(model, corpus, "he", 40, 1.0, seed=3, context=8, device=cpu)
    assert a == sample(model, corpus, "he", 40, 1.0, seed=3, context=8, device=cpu)
    assert a != sample(model, corpus, "he", 40, 1.0, seed=4, context=8, device=cpu)
    assert len(a) == 42 and a.startswith("he") and set(a[2:]) <= set(corpus.vocab[1:]) | {"\ufffd"}
    with pytest.raises(ConfigError, match="lang.prompt"):
        sample(model, corpus, "", 5, 1.0, 0, 8, cpu)


@pytest.mark.parametrize("arch", ["s5", "rsnn", "gru"])
def test_models_keep_the_contract_and_are_causal(arch):
    from spikeopt.config import Config, apply

    cfg = apply(Config(), {"model.arch": arch, "model.hidden": [16], "lang.states": 8})
    torch.manual_seed(0)
    model = build_language_model(cfg, 11)
    x = torch.randint(0, 11, (2, 9))
    spikes, mems = model(x)
    assert spikes[-1].shape == (2, 9, 11) and all(s.shape == m.shape for s, m in zip(spikes, mems))
    y = x.clone()
    y[:, 5:] = (y[:, 5:] + 1) % 11
    torch.testing.assert_close(model(y)[0][-1][:, :5], spikes[-1][:, :5])
    with pytest.raises(ConfigError, match="token ids"):
        model(torch.rand(2, 9))


def test_short_gru_run_learns_and_writes_samples(tmp_path):
    summary = api.run("language-gru", {**FAST, "trainer.seed": 0}, out=tmp_path / "run", quiet=True)
    assert summary["test_bpc"] < 0.75 * math.log2(summary["vocab"])  # 6.7 bits at chance
    saved = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert saved["test_bpc"] == pytest.approx(summary["test_bpc"])
    assert "test_bpc" in (tmp_path / "run" / "metrics.csv").read_text().splitlines()[0]
    text = (tmp_path / "run" / "samples.txt").read_text()
    assert text.startswith("The ") and len(text) == 4 + 100
    assert not list((tmp_path / "run").glob(".tmp-*"))


def test_resume_replays_the_uninterrupted_run(tmp_path):
    over = {**FAST, "trainer.epochs": 2, "trainer.steps_per_epoch": 3, "lang.sample_chars": 0,
            "sched.name": "none"}  # fmt: skip
    full = api.run("language-gru", over, out=tmp_path / "full", quiet=True)
    api.run("language-gru", {**over, "trainer.epochs": 1}, out=tmp_path / "part", quiet=True)
    resumed = api.run("language-gru", {"trainer.epochs": 2}, out=tmp_path / "part",
                      resume=True, quiet=True)  # fmt: skip
    assert resumed["test_bpc"] == pytest.approx(full["test_bpc"], rel=1e-6)
    assert not (tmp_path / "full" / "samples.txt").exists()  # lang.sample_chars=0


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"model.hidden": []}, "at least one layer"),
        ({"method.name": "es"}, "cannot train trainer.task=language"),
        ({"lang.seq_len": 1}, "lang.seq_len"),
        ({"lang.corpus": "wiki"}, "lang.corpus"),
        ({"model.arch": "mlp"}, "not a language model"),
        ({"lang.seq_len": 30_000}, "too few"),
    ],
)
def test_bad_inputs_are_clear_errors_and_write_nothing(override, message, tmp_path):
    with pytest.raises(ConfigError, match=message):
        api.run("language-s5", override, out=tmp_path / "run", quiet=True)
    assert not (tmp_path / "run").exists()


def test_cli_bad_input_exits_2_and_writes_nothing(tmp_path):
    out = tmp_path / "run"
    r = subprocess.run([sys.executable, "-m", "spikeopt.cli", "run", "language-s5",
                        "model.hidden=[32,16]", "--out", str(out)], capture_output=True,
                       text=True)  # fmt: skip
    assert r.returncode == 2, r.stderr
    assert "one width" in r.stderr and not out.exists()
