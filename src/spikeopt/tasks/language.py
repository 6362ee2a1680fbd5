"""Character-level language modelling (``trainer.task=language``): next-character prediction
on a text corpus, scored in bits per character on the held-out end of the text.

Why a task of its own and not classification over next-character targets: classification
labels a whole sequence once (``y`` (B,), its readouts pool over time), while a language model
is scored at every position (``y`` (B, T)) and its test split is one long text, not samples.
On the :class:`~spikeopt.tasks.base.Task` protocol the loop, the surrogate method
(``backprop``'s accuracy is an argmax over the last axis, so (B, T) targets work unchanged),
``metrics.csv``, TensorBoard, checkpoints, exact resume and ``best.pt`` run as they are; the
one addition is :meth:`LanguageTask.files`, extra run files the loop writes atomically at the
end (``samples.txt``).

Training (truncated BPTT): each step is ``data.batch_size`` windows of ``lang.seq_len``
characters at random offsets of the training split, every window starting from a zero state;
the offsets come from a generator seeded by ``(trainer.seed, epoch)``, so a resumed run draws
the same ones. Testing: the test split in consecutive windows of ``seq_len`` characters, each
read after the ``seq_len`` characters before it (a warm-up that is not scored), so every
scored character has at least ``seq_len`` characters of context and each is scored once.

The headline ``metric`` (what ``best.pt`` and ``spikeopt tune`` maximise by default) is
``test_acc``, next-character accuracy, because the loop keeps the epoch whose metric is
highest; ``test_bpc`` (lower is better) is in every row and in ``summary.json``
(``spikeopt tune --metric test_bpc --mode min`` tunes it).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from spikeopt import config as C
from spikeopt.functional.loss import Loss, rate_penalty
from spikeopt.nn.language import build_language_model
from spikeopt.population import Source
from spikeopt.tasks.base import Batch, Row, Step, loss_gradient
from spikeopt.tasks.classification import generator
from spikeopt.tasks.corpus import Corpus, load_corpus

if TYPE_CHECKING:
    from matplotlib.figure import Figure

LN2 = math.log(2.0)


def bits_per_char(logits: Tensor, targets: Tensor) -> float:
    """Mean cross-entropy of ``targets`` (...,) under ``logits`` (..., V), in bits."""
    return float(F.cross_entropy(logits.flatten(0, -2), targets.flatten())) / LN2


class NextCharLoss(Loss):
    """Cross-entropy (nats) of the readout's logits (B, T, V) against the next characters
    (B, T), plus the optional firing-rate regulariser; the scores are the logits."""

    def __call__(self, spikes: Any, mems: Any, y: Tensor) -> tuple[Tensor, Tensor]:
        """Loss (mean over every position) and the logits."""
        logits = spikes[-1]
        loss = F.cross_entropy(logits.flatten(0, 1), y.flatten())
        if self.rate_reg > 0 and len(spikes) > 1:
            loss = loss + self.rate_reg * rate_penalty(spikes[:-1], self.rate_target)
        return loss, logits

    def per_sample(self, spikes: Any, mems: Any, y: Tensor) -> tuple[Tensor, Tensor]:
        """Each window's mean cross-entropy (B,) and the batch-level rest."""
        logits = spikes[-1]
        samples = F.cross_entropy(logits.transpose(1, 2), y, reduction="none").mean(-1)
        shared = samples.new_zeros(())
        if self.rate_reg > 0 and len(spikes) > 1:
            shared = shared + self.rate_reg * rate_penalty(spikes[:-1], self.rate_target)
        return samples, shared


class LanguageObjective:
    """The centre's metrics and BPTT gradient; no population method trains this task."""

    def __init__(self, loss: NextCharLoss) -> None:
        self.loss = loss

    def fitness(self, model: nn.Module, source: Source, batch: Any) -> Tensor:
        """Refused: only gradient methods list ``language`` among their tasks."""
        raise C.ConfigError("trainer.task=language trains by method.name=surrogate only")

    def centre(self, model: nn.Module, batch: tuple[Tensor, Tensor]) -> dict[str, float]:
        """Loss and next-character accuracy of the model on ``batch``."""
        x, y = batch
        with torch.no_grad():
            spikes, mems = model(x)
            loss, logits = self.loss(spikes, mems, y)
        return {"loss": float(loss), "acc": float((logits.argmax(-1) == y).float().mean())}

    def gradient(self, model: nn.Module, batch: tuple[Tensor, Tensor]) -> list[Tensor]:
        """BPTT gradient of the loss on ``batch``."""
        return loss_gradient(model, self.loss, batch)

    def chunk_for(self, model: nn.Module, source: Any, batch: Any) -> int:
        """No population is evaluated: grouping cannot matter."""
        return 0

    def chunked(self, chunk: int) -> LanguageObjective:
        """This objective (it evaluates no population)."""
        return self


def windows(ids: Tensor, starts: Tensor, length: int) -> tuple[Tensor, Tensor]:
    """Inputs ``ids[s : s + length]`` and targets ``ids[s + 1 : s + length + 1]`` per start."""
    idx = starts[:, None] + torch.arange(length + 1)
    seq = ids[idx]
    return seq[:, :-1], seq[:, 1:]


@torch.no_grad()
def sample(model: nn.Module, corpus: Corpus, prompt: str, n: int, temperature: float,
           seed: int, context: int, device: torch.device) -> str:  # fmt: skip
    """``prompt`` and ``n`` characters drawn one at a time from the model's next-character
    distribution (logits / ``temperature``), each given the last ``context`` characters."""
    if not prompt:
        raise C.ConfigError("lang.prompt is empty; the sampler needs at least one character")
    was = model.training
    model.eval()
    g = torch.Generator(device="cpu").manual_seed(seed)
    ids = corpus.encode(prompt).tolist()
    for _ in range(n):
        x = torch.tensor([ids[-context:]], device=device)
        logits = model(x)[0][-1][0, -1].float().cpu() / temperature
        ids.append(int(torch.multinomial(torch.softmax(logits, -1), 1, generator=g)))
    model.train(was)
    return corpus.decode(torch.tensor(ids))


class LanguageTask:
    """Next-character prediction on the :class:`~spikeopt.tasks.base.Task` protocol."""

    kind = "language"
    sections = ("lang", "data", "loss")  # data: batch sizes; loss: the rate regulariser
    metric = "test_acc"
    key = "epoch"
    shown: tuple[str, ...] = ("train_bpc", "test_bpc", "test_acc")

    def __init__(self, cfg: C.Config, device: torch.device) -> None:
        """Read the corpus, build the model and the loss; every bad setting raises here."""
        C.check_choices(cfg.lang)
        if cfg.model.module:
            raise C.ConfigError("model.module (your own model) is for classification and "
                                "control; trainer.task=language builds model.arch")  # fmt: skip
        self.cfg, self.device, L = cfg, device, cfg.lang
        self.corpus = load_corpus(L)
        self.seq_len = L.seq_len
        for name, split in (("training", self.corpus.train), ("test", self.corpus.test)):
            if len(split) < 2 * L.seq_len + 2:
                raise C.ConfigError(f"the {name} split has {len(split)} characters, too few "
                                    f"for lang.seq_len={L.seq_len}; lower it")  # fmt: skip
        torch.manual_seed(cfg.trainer.seed)
        self.model = build_language_model(cfg, len(self.corpus.vocab)).to(device)
        self.loss = NextCharLoss("next-char", 1, cfg.loss.rate_reg, cfg.loss.rate_target)
        self.objective = LanguageObjective(self.loss)
        self.epochs = cfg.trainer.epochs
        self.batch_size = cfg.data.batch_size
        per_pass = math.ceil(len(self.corpus.train) / (self.batch_size * self.seq_len))
        self.steps = cfg.trainer.steps_per_epoch or per_pass

    @staticmethod
    def planned_rows(cfg: C.Config, population: bool) -> int:
        """The metrics rows a full run writes: one per epoch."""
        return cfg.trainer.epochs

    def batches(self, epoch: int) -> Iterator[Batch]:
        """The epoch's windows ``(x (B, T), y (B, T))`` of the training split."""
        cfg, ids, t = self.cfg, self.corpus.train, self.seq_len
        fixed = cfg.trainer.overfit_batch
        g = generator(cfg.trainer.seed, 0 if fixed else epoch, 0, torch.device("cpu"))
        high = len(ids) - t - 1
        for _ in range(self.steps):
            if fixed:  # the first batch of epoch 0, over and over (a sanity mode)
                g = generator(cfg.trainer.seed, 0, 0, torch.device("cpu"))
            x, y = windows(ids, torch.randint(0, high + 1, (self.batch_size,), generator=g), t)
            yield Batch((x.to(self.device), y.to(self.device)))

    @torch.no_grad()
    def test_metrics(self) -> dict[str, float]:
        """Loss (nats), bits per character and accuracy on the test split (see the module)."""
        ids, t = self.corpus.test, self.seq_len
        starts = torch.arange(0, len(ids) - 2 * t, t)
        was = self.model.training
        self.model.eval()
        total = correct = count = 0.0
        for chunk in starts.split(self.cfg.data.eval_batch_size):
            x, y = windows(ids, chunk, 2 * t)
            logits = self.model(x.to(self.device))[0][-1][:, t:]
            y = y[:, t:].to(self.device)
            total += float(F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="sum"))
            correct += float((logits.argmax(-1) == y).sum())
            count += y.numel()
        self.model.train(was)
        return {"test_loss": total / count, "test_bpc": total / count / LN2,
                "test_acc": correct / count}  # fmt: skip

    def evaluate(self, epoch: int, steps: list[Step], head: Row) -> list[Row]:
        """One row: the loop's columns, the steps' mean metrics (and bpc), the test split's."""
        row: Row = {"epoch": epoch + 1, **head}
        for k in sorted({k for _, m in steps for k in m}):
            vals = [m[k] for _, m in steps if k in m]
            row[f"train_{k}"] = sum(vals) / len(vals)
        if "train_loss" in row:
            row["train_bpc"] = row["train_loss"] / LN2
        row.update(self.test_metrics())
        return [row]

    def summary(self, rows: list[Row]) -> Row:
        """Final and best test bits per character, accuracy, corpus sizes."""
        last = rows[-1] if rows else {}
        best = min(rows, key=lambda r: r["test_bpc"]) if rows else {}
        return {
            "test_bpc": last.get("test_bpc"),
            "train_bpc": last.get("train_bpc"),
            "test_acc": last.get("test_acc"),
            "test_loss": last.get("test_loss"),
            "best_test_bpc": best.get("test_bpc"),
            "best_epoch": best.get("epoch"),
            "epochs": len(rows),
            "vocab": len(self.corpus.vocab),
            "train_chars": len(self.corpus.train),
            "test_chars": len(self.corpus.test),
        }

    def files(self) -> dict[str, str]:
        """Extra run files: ``samples.txt``, text sampled from the final model."""
        L = self.cfg.lang
        if L.sample_chars == 0:
            return {}
        text = sample(self.model, self.corpus, L.prompt, L.sample_chars, L.temperature,
                      L.sample_seed, 2 * self.seq_len, self.device)  # fmt: skip
        return {"samples.txt": text}

    def curves(self, rows: list[Row], summary: Row, title: str) -> Figure:
        """Bits per character (train, test) and test accuracy per epoch."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
        epochs = [r["epoch"] for r in rows]
        for key in ("train_bpc", "test_bpc"):
            axes[0].plot(epochs, [r.get(key, math.nan) for r in rows], marker="o", ms=3, label=key)
        axes[1].plot(epochs, [r["test_acc"] for r in rows], marker="o", ms=3, label="test_acc")
        for ax, name in zip(axes, ("bits per character", "next-character accuracy")):
            ax.set_xlabel("epoch")
            ax.set_ylabel(name)
            ax.grid(alpha=0.3)
            ax.legend()
        fig.suptitle(title or f"{self.cfg.lang.corpus} ({self.cfg.model.arch})")
        fig.tight_layout()
        return fig

    def example(self, n: int) -> Tensor:
        """The first ``n`` training windows (n, T): a model's input."""
        return windows(self.corpus.train, torch.arange(n) * self.seq_len, self.seq_len)[0]


__all__ = ["LanguageObjective", "LanguageTask", "NextCharLoss", "bits_per_char", "sample"]
