"""A config turned into a run, before anything trains or is written: task, method, state.

``trainer.task`` names the task (:mod:`spikeopt.tasks.classification`,
:mod:`spikeopt.tasks.control` or :mod:`spikeopt.tasks.language`); ``method.name`` the
method, which must list that task among the ones it can train (``Method.tasks``). Whether
the method runs a population (``Method.population``) is read from the class before either
is built: it decides what a control epoch is (an update on sampled episodes, or a
generation). Every bad setting raises here, so a run that starts has nothing left to refuse.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from spikeopt import config as C
from spikeopt.builders import Builders, model_builders
from spikeopt.functional.loss import Loss
from spikeopt.methods import METHODS, Method, TrainState, make_method
from spikeopt.methods.base import forward_loss
from spikeopt.tasks.base import Task
from spikeopt.tasks.classification import ClassificationTask
from spikeopt.tasks.control import ControlTask
from spikeopt.tasks.datasets import Dataset
from spikeopt.tasks.language import LanguageTask

TASKS: dict[str, type[ClassificationTask] | type[ControlTask] | type[LanguageTask]] = {
    "classification": ClassificationTask,
    "control": ControlTask,
    "language": LanguageTask,
}


@dataclass
class Experiment:
    """Everything a config builds, before anything is trained or written."""

    cfg: C.Config
    task: Task
    method: Method
    state: TrainState
    device: torch.device

    @property
    def model(self) -> nn.Module:
        """The network being trained (the task's, and the method state's)."""
        return self.task.model

    @property
    def loss(self) -> Loss | None:
        """The task's differentiable loss (None for control)."""
        return self.task.loss

    @property
    def classification(self) -> ClassificationTask:
        """The task, when it is classification; a ConfigError otherwise."""
        if not isinstance(self.task, ClassificationTask):
            raise C.ConfigError(f"this needs trainer.task=classification, not {self.task.kind}")
        return self.task

    @property
    def data(self) -> Dataset:
        """The classification task's dataset."""
        return self.classification.data

    @property
    def encode(self) -> Callable[[Tensor, torch.Generator | None], Tensor]:
        """The classification task's input encoder."""
        return self.classification.encode


def pick_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cuda:N`` -> the N-th GPU, which must exist."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = int(name.partition(":")[2] or 0)
        if index >= count:
            have = (
                f"only {count} CUDA device(s) (cuda:0 .. cuda:{count - 1})"
                if count
                else ("no CUDA device")
            )
            raise C.ConfigError(f"trainer.device={name} but this machine has {have}; use cpu, "
                                "auto or an index that exists")  # fmt: skip
    return torch.device(name)


COMMON_SECTIONS = ("model", "neuron", "method", "optim", "sched", "trainer", "early_stop", "hw")


def used_sections(cfg: C.Config) -> list[str]:
    """The config sections a run of ``cfg`` reads: every run's, its task's and its method's
    (what ``spikeopt show`` prints; ``--all`` prints the rest too)."""
    C.check_choices(cfg.trainer)
    C.check_choices(cfg.method)
    task, method = TASKS[cfg.trainer.task], METHODS[cfg.method.name]
    used = {*COMMON_SECTIONS, *task.sections, *method.sections}
    return [f.name for f in dataclasses.fields(cfg) if f.name in used]


def method_class(cfg: C.Config) -> Any:
    """The class ``method.name`` names, refused (naming the methods that can) when it cannot
    train ``trainer.task``."""
    C.check_choices(cfg.trainer)
    C.check_choices(cfg.method)
    kind, cls = cfg.trainer.task, METHODS[cfg.method.name]
    if kind not in cls.tasks:
        valid = [n for n, c in METHODS.items() if kind in getattr(c, "tasks", ())]
        raise C.ConfigError(
            f"method.name={cfg.method.name} cannot train trainer.task={kind}; "
            f"use one of {', '.join(valid)}"
        )
    return cls


def make_task(
    cfg: C.Config, device: torch.device, population: bool, builders: Builders | None = None
) -> Task:
    """The task ``trainer.task`` names, with any user builders it can use."""
    b = model_builders(cfg, builders)
    if cfg.trainer.task == "control":
        if b.data or b.loss:
            raise C.ConfigError(
                "Builders.data and Builders.loss are classification builders; a control task "
                "has an environment (env.*) and no loss: give Builders(model=...) only"
            )
        return ControlTask(cfg, device, population, b.model)
    if cfg.trainer.task == "language":
        if b.data or b.loss or b.model:
            raise C.ConfigError("trainer.task=language reads lang.corpus and builds model.arch "
                                "itself; it takes no Builders")  # fmt: skip
        return LanguageTask(cfg, device)
    return ClassificationTask(cfg, device, b.model, b.data, b.loss)


def planned_rows(cfg: C.Config) -> int:
    """How many metrics rows a full run of ``cfg`` writes (what a trial reports)."""
    population = bool(method_class(cfg).population)  # checks trainer.task too
    return TASKS[cfg.trainer.task].planned_rows(cfg, population)


def build(cfg: C.Config, builders: Builders | None = None) -> Experiment:
    """Build task (data or environment, model, loss, objective), method and state."""
    C.check_choices(cfg)  # a bad name in any section fails here, before any data is read
    C.check_ranges(cfg)
    device = pick_device(cfg.trainer.device)
    cls = method_class(cfg)
    task = make_task(cfg, device, bool(cls.population), builders)
    method = make_method(cfg, task.loss, task.objective)
    state = method.init(task.model, cfg)
    if cfg.trainer.compile:  # BPTT trains model + loss as one graph
        state.forward = torch.compile(forward_loss)
    return Experiment(cfg, task, method, state, device)
