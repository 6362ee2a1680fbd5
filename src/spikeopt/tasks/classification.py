"""Classification: a dataset, an input encoder, minibatches per epoch, test-set evaluation.

An epoch is ``trainer.steps_per_epoch`` method steps (default: one pass over the training
set), each on one encoded minibatch; its row is the steps' mean metrics (``train_*``) and the
test split's (``test_*``, with per-layer activity health). Every random draw comes from a
generator seeded by ``(trainer.seed, epoch, purpose)``, so a run resumed at epoch ``e``
replays exactly what an uninterrupted one would have, and the test encoding is the same every
epoch (evaluation is a function of the weights only).

Population methods score members with :class:`ClassificationObjective`: ``-loss`` on one
minibatch that every member shares (common random numbers).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from spikeopt import config as C
from spikeopt.functional.loss import Loss, make_loss
from spikeopt.nn import build_model, fluct_init
from spikeopt.nn.quant import apply_hw
from spikeopt.population import Source, evaluate_samples, members_per_pass
from spikeopt.population import evaluate as population_fitness
from spikeopt.tasks.base import Batch, ModelFn, Row, Step, call_factory, check_model, loss_gradient
from spikeopt.tasks.datasets import (
    EVENT_DATASETS,
    Dataset,
    as_signal,
    augment,
    load_dataset,
)
from spikeopt.tasks.encoders import as_frames, make_encoder, step_shape
from spikeopt.tasks.energy import energy_keys
from spikeopt.tasks.metrics import evaluate

if TYPE_CHECKING:
    from matplotlib.figure import Figure

EVAL_SEED = 12345  # the test encoding's generator: trainer.seed + this, every epoch
FLUCT_STREAM = 3  # the generator stream model.init=fluct draws its batches from


class ClassificationObjective:
    """Fitness = -loss on one minibatch that every member shares (common random numbers)."""

    def __init__(self, loss: Loss, cfg: C.ESConfig) -> None:
        self.loss, self.cfg = loss, cfg

    def fitness(self, model: nn.Module, source: Source, batch: tuple[Tensor, Tensor]) -> Tensor:
        """Chunked, batched population evaluation (:func:`spikeopt.population.evaluate`)."""
        c = self.cfg
        return population_fitness(
            model, source, batch, self.loss, c.chunk, c.memory_mb, c.vmap_randomness
        )

    def sample_losses(
        self,
        model: nn.Module,
        source: Source,
        batch: tuple[Tensor, Tensor],
        activity: list[Tensor] | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Every member's loss per sample (P, B) and its batch-level rest (P,) (per-sample
        credit: :func:`spikeopt.population.evaluate_samples`, which also fills ``activity``)."""
        c = self.cfg
        return evaluate_samples(model, source, batch, self.loss, c.chunk, c.memory_mb, activity)

    def chunk_for(self, model: nn.Module, source: Source, batch: tuple[Tensor, Tensor]) -> int:
        """Members per batched pass of the in-process evaluation (shards align to it: the
        same shapes give bit-identical fitness)."""
        return members_per_pass(model, batch[0], source, self.cfg.chunk, self.cfg.memory_mb)

    def chunked(self, chunk: int) -> ClassificationObjective:
        """This objective evaluating in chunks of exactly ``chunk`` members."""
        return ClassificationObjective(self.loss, dataclasses.replace(self.cfg, chunk=chunk))

    def centre(self, model: nn.Module, batch: tuple[Tensor, Tensor]) -> dict[str, float]:
        """Loss, accuracy and hidden firing rates of the centre (updates batch-norm stats)."""
        x, y = batch
        with torch.no_grad():
            spikes, mems = model(x)
            loss, scores = self.loss(spikes, mems, y)
        out = {"loss": float(loss), "acc": float((scores.argmax(-1) == y).float().mean())}
        for i, s in enumerate(spikes[:-1]):
            out[f"layer{i}_rate"] = float(s.mean())
        return out

    def gradient(self, model: nn.Module, batch: tuple[Tensor, Tensor]) -> list[Tensor]:
        """BPTT surrogate gradient of the loss (model left in its mode, grads untouched)."""
        return loss_gradient(model, self.loss, batch)


def generator(seed: int, epoch: int, stream: int, device: torch.device) -> torch.Generator:
    """A generator for one (seed, epoch, purpose): no RNG state needs saving to resume."""
    g = torch.Generator(device=device)
    g.manual_seed((seed * 1_000_003 + epoch * 101 + stream) % (2**63))
    return g


class ClassificationTask:
    """Image and sequence classification on the :class:`~spikeopt.tasks.base.Task` protocol."""

    kind = "classification"
    sections = ("data", "encoder", "loss", "metric")  # the config sections it reads
    metric = "test_acc"
    key = "epoch"
    shown: tuple[str, ...] = ("train_loss", "train_acc", "test_loss", "test_acc")

    def __init__(
        self,
        cfg: C.Config,
        device: torch.device,
        model_fn: ModelFn | None = None,
        data_fn: Callable[[C.Config], Dataset] | None = None,
        loss_fn: Callable[[C.Config], Loss] | None = None,
    ) -> None:
        """Load the data and build encoder, model and loss; every bad setting raises here."""
        C.check_choices(cfg.data)  # also when a user's data builder stands in for load_dataset
        self.cfg, self.device = cfg, device
        self.encode = make_encoder(cfg.encoder)
        if cfg.encoder.kind in ("rate", "deterministic", "latency") and cfg.data.normalize:
            raise C.ConfigError(
                f"encoder.kind={cfg.encoder.kind} reads inputs as probabilities in [0, 1]; "
                "set data.normalize=false (or use encoder.kind=repeat)"
            )
        events = cfg.encoder.kind == "events"
        if cfg.data.name in EVENT_DATASETS and not events and not data_fn:
            raise C.ConfigError(
                f"data.name={cfg.data.name} holds event recordings, binned into encoder.steps "
                "frames: set encoder.kind=events"
            )
        data = data_fn(cfg) if data_fn else load_dataset(cfg.data, cfg.encoder.steps)
        if events:  # time is an axis of the data: said, never guessed (issue 16)
            data = as_frames(data, cfg.data.time_axis)
        elif data.frames:
            raise C.ConfigError(f"data.name={cfg.data.name} is binned event frames (T, ...): "
                                "set encoder.kind=events")  # fmt: skip
        if cfg.encoder.kind == "sequence" and not data.sequence:
            raise C.ConfigError(
                f"encoder.kind=sequence reads each sample as a time series, but data.name="
                f"{cfg.data.name} holds static samples; use encoder.kind=repeat (or rate, ...)"
            )
        if (
            cfg.model.arch == "conv"
            and len(data.input_shape) == 1
            and cfg.encoder.kind != "sequence"
        ):
            data = as_signal(data)  # a 1-D conv over the whole series at every step
        if cfg.metric.recall_class >= data.n_classes:
            raise C.ConfigError(
                f"metric.recall_class={cfg.metric.recall_class}: classes are "
                f"0..{data.n_classes - 1}"
            )
        self.data = data
        torch.manual_seed(cfg.trainer.seed)
        shape = step_shape(cfg.encoder, data.input_shape)
        if model_fn:  # a user model: its output contract is checked on a real batch first
            self.model = call_factory(model_fn, cfg, shape, data.n_classes).to(device)
            n_out = data.n_classes * cfg.model.neurons_per_class
            check_model(self.model, self.example(2), n_out)
        else:
            self.model = build_model(cfg, shape, data.n_classes).to(device)
        if cfg.model.init == "fluct":  # data-driven: measured on real training batches
            self._fluct_init()
        apply_hw(self.model, cfg)  # after any init: the quantiser wraps the final weights
        self.loss: Loss = (
            loss_fn(cfg)
            if loss_fn
            else make_loss(cfg.loss, cfg.model.neurons_per_class, self.model, cfg.hw)
        )
        self.objective = ClassificationObjective(self.loss, cfg.es)
        if cfg.trainer.compile:  # evaluation runs the compiled model (training: see build)
            self.model.compile()
        self.epochs = cfg.trainer.epochs
        self.batch_size = min(cfg.data.batch_size, len(data.x_train))
        self.steps = cfg.trainer.steps_per_epoch or math.ceil(len(data.x_train) / self.batch_size)

    def _fluct_init(self) -> None:
        """``model.init=fluct``: :func:`spikeopt.nn.init.fluct_init` on the first
        ``model.fluct_batches`` training minibatches of a generator of their own (so the rest
        of the run draws exactly what it would have)."""
        m, x = self.cfg.model, self.data.x_train
        bs = min(self.cfg.data.batch_size, len(x))
        g = generator(self.cfg.trainer.seed, 0, FLUCT_STREAM, torch.device("cpu"))
        noise = generator(self.cfg.trainer.seed, 0, FLUCT_STREAM, self.device)
        batches = [self.encode(x[torch.randperm(len(x), generator=g)[:bs]].to(self.device), noise)
                   for _ in range(max(1, m.fluct_batches))]  # fmt: skip
        fluct_init(self.model, batches, m.fluct_xi, m.fluct_alpha, m.fluct_batches)

    @staticmethod
    def planned_rows(cfg: C.Config, population: bool) -> int:
        """The metrics rows a full run writes: one per epoch."""
        return cfg.trainer.epochs

    def batches(self, epoch: int) -> Iterator[Batch]:
        """The epoch's encoded training minibatches ``(x (B, T, ...), y (B,))``."""
        cfg, x, y, bs = self.cfg, self.data.x_train, self.data.y_train, self.batch_size
        seed, fixed = cfg.trainer.seed, cfg.trainer.overfit_batch
        order = generator(seed, epoch, 0, torch.device("cpu"))
        noise = generator(seed, epoch, 1, self.device)
        if fixed:  # the first batch of epoch 0, over and over: same samples, noise, no augment
            first = generator(seed, 0, 0, torch.device("cpu"))
            perm = torch.randperm(len(x), generator=first)[:bs].repeat(self.steps)
        else:
            passes = math.ceil(self.steps * bs / len(x))
            perm = torch.cat([torch.randperm(len(x), generator=order) for _ in range(passes)])
        for i in range(self.steps):
            if fixed:
                noise.manual_seed(seed + 777)
            idx = perm[i * bs : (i + 1) * bs]
            xb = x[idx]
            if cfg.data.augment != "none" and not fixed:
                xb = augment(xb, cfg.data.augment, order)
            yield Batch((self.encode(xb.to(self.device), noise), y[idx].to(self.device)))

    def _evaluate(self, x: Tensor, y: Tensor, recall: bool, recall_class: int) -> dict[str, float]:
        """Loss, accuracy and activity on (x, y), encoded as the test set is every epoch."""
        cfg = self.cfg
        g = torch.Generator(device=self.device).manual_seed(cfg.trainer.seed + EVAL_SEED)
        return evaluate(self.model, self.loss, x, y, self.encode, cfg.data.eval_batch_size,
                        self.device, g, self.data.n_classes, recall, recall_class)  # fmt: skip

    def evaluate(self, epoch: int, steps: list[Step], head: Row) -> list[Row]:
        """One row: the loop's columns, the steps' mean metrics and the test set's."""
        sums: dict[str, float] = {}
        counts: dict[str, int] = {}
        for _, metrics in steps:
            for k, v in metrics.items():  # a key may be reported every k-th step only
                sums[k] = sums.get(k, 0.0) + v
                counts[k] = counts.get(k, 0) + 1
        m, d = self.cfg.metric, self.data
        test = self._evaluate(d.x_test, d.y_test, m.per_class_recall, m.recall_class)
        if self.cfg.trainer.eval_train:  # the fixed training subset, encoded as the test set is
            on_train = self._evaluate(d.x_train, d.y_train, False, -1)
            test.update({f"train_eval_{k}": on_train[k] for k in ("loss", "acc")})
        row: Row = {"epoch": epoch + 1, **head}
        row.update({f"train_{k}": v / counts[k] for k, v in sums.items()})
        row.update(
            {f"test_{k}" if k in ("loss", "acc", "wta_acc") else k: v for k, v in test.items()}
        )
        return [row]

    def summary(self, rows: list[Row]) -> Row:
        """DESIGN.md's classification keys: final and best test accuracy, and more; the energy
        proxy of the final model (:mod:`spikeopt.tasks.energy`)."""
        last = rows[-1] if rows else {}
        best = max(rows, key=lambda r: r["test_acc"]) if rows else {}
        return {
            "test_acc": last.get("test_acc"),
            "train_acc": last.get("train_acc"),
            "test_loss": last.get("test_loss"),
            "best_test_acc": best.get("test_acc"),
            "best_epoch": best.get("epoch"),
            "epochs": len(rows),
            **energy_keys(last),
        }

    def curves(self, rows: list[Row], summary: Row, title: str) -> Figure:
        """Loss and accuracy per epoch, train and test."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
        epochs = [r["epoch"] for r in rows]
        for ax, kind in zip(axes, ("loss", "acc")):
            for split in ("train", "test"):
                key = f"{split}_{kind}"
                ys = [r.get(key, float("nan")) for r in rows]
                if any(isinstance(v, float) and math.isfinite(v) for v in ys):
                    ax.plot(epochs, ys, marker="o", ms=3, label=key)
            ax.set_xlabel("epoch")
            ax.set_ylabel(kind)
            ax.grid(alpha=0.3)
            ax.legend()
        fig.suptitle(title or self.cfg.data.name)
        fig.tight_layout()
        return fig

    def example(self, n: int) -> Tensor:
        """The first ``n`` training samples, encoded (without a generator): a model's input."""
        return self.encode(self.data.x_train[:n].to(self.device), None)


__all__ = ["ClassificationObjective", "ClassificationTask", "generator"]
