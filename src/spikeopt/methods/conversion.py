"""ANN -> SNN conversion as a method: train the non-spiking ``model.arch=cnn`` network by plain
backprop (the surrogate update: a ReLU network has no spikes to stand in for), then convert it
at the end of the run (:mod:`spikeopt.nn.convert`, Diehl et al. 2015, Rueckauer et al. 2017)
and evaluate the converted IF network at every ``conversion.timesteps`` T.

The converted network is a normal spikeopt model: the loop writes it with the config that
rebuilds it to the run's ``snn/`` folder, which ``spikeopt.load`` / ``spikeopt export`` read
and any method can fine-tune (docs/conversion.md).
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from spikeopt.config import Config, ConfigError
from spikeopt.functional.loss import Loss, make_loss
from spikeopt.methods.base import Finished, TrainState
from spikeopt.methods.surrogate import Surrogate
from spikeopt.nn.convert import convert, relu_activations, stages
from spikeopt.nn.hw import constrained
from spikeopt.tasks.classification import EVAL_SEED, ClassificationTask
from spikeopt.tasks.encoders import make_encoder, step_shape
from spikeopt.tasks.metrics import evaluate

BALANCE_SEED = 4242  # the generator of the balancing batches: trainer.seed + this
EVAL_VALUES = 2**26  # values of one (B, T, N) layer tensor an SNN evaluation batch may hold


class Conversion(Surrogate):
    """Backprop on the ANN each step; :meth:`finish` converts it and scores it against T."""

    name = "conversion"
    tasks: tuple[str, ...] = ("classification",)  # a static-input ANN, not a language model
    sections: tuple[str, ...] = ("conversion",)

    def init(self, model: nn.Module, cfg: Config) -> TrainState:
        """Refuse a model conversion cannot map (before anything trains), then as surrogate."""
        if cfg.encoder.kind == "sequence":
            raise ConfigError(
                "conversion maps a static-input ANN; encoder.kind=sequence feeds a time series "
                "(use encoder.kind=repeat)"
            )
        stages(model)
        if constrained(model):  # conversion rescales each layer: off the grid, off the signs
            raise ConfigError(
                "method.name=conversion rescales every trained weight by its layer's threshold, "
                "which would leave the hw.* quantisation grid and sign constraints; convert "
                "without them, then fine-tune the converted SNN (its snn/ folder) under hw.*"
            )
        return super().init(model, cfg)

    @torch.no_grad()
    def finish(self, task: object) -> Finished:
        """Convert the trained ANN; ``ann_test_acc`` and ``acc_T<T>`` on the test set."""
        if not isinstance(task, ClassificationTask):
            raise ConfigError("method.name=conversion needs trainer.task=classification")
        cfg, data, device = self.cfg, task.data, task.device
        ann = task.model
        g = torch.Generator().manual_seed(cfg.trainer.seed + BALANCE_SEED)
        noise = torch.Generator(device=device).manual_seed(cfg.trainer.seed + BALANCE_SEED)
        bs = min(cfg.data.batch_size, len(data.x_train))
        frames = []
        for _ in range(cfg.conversion.batches):
            idx = torch.randperm(len(data.x_train), generator=g)[:bs]
            x = task.encode(data.x_train[idx].to(device), noise)
            frames.append(x.mean(1))  # what the CNN sees of an encoded input
        shape = step_shape(cfg.encoder, data.input_shape)
        snn, snn_cfg = convert(ann, cfg, frames, shape, data.n_classes)
        out: dict[str, float] = {}
        ev = torch.Generator(device=device).manual_seed(cfg.trainer.seed + EVAL_SEED)
        ann_eval = evaluate(ann, task.loss, data.x_test, data.y_test, task.encode,
                            cfg.data.eval_batch_size, device, ev, data.n_classes)  # fmt: skip
        out["ann_test_acc"] = ann_eval["acc"]
        loss: Loss = make_loss(snn_cfg.loss, snn_cfg.model.neurons_per_class, snn)
        # (B, T, N) spikes and membranes of every layer are kept: at T = 64 a CIFAR batch of
        # 1000 held 4 GB per tensor, so the batch shrinks with T to a fixed memory budget
        widest = max(a[0].numel() for a in relu_activations(ann, frames[0][:1]))
        for steps in cfg.conversion.timesteps:
            bs_eval = max(1, min(cfg.data.eval_batch_size, EVAL_VALUES // (steps * widest)))
            enc = make_encoder(dataclasses.replace(cfg.encoder, steps=steps))
            ev = torch.Generator(device=device).manual_seed(cfg.trainer.seed + EVAL_SEED)
            r = evaluate(snn, loss, data.x_test, data.y_test, enc, bs_eval, device, ev,
                         data.n_classes)  # fmt: skip
            out[f"acc_T{steps}"] = r["acc"]
        snn_cfg = dataclasses.replace(
            snn_cfg, encoder=dataclasses.replace(cfg.encoder, steps=max(cfg.conversion.timesteps))
        )
        value = out[f"acc_T{snn_cfg.encoder.steps}"]
        return Finished(out, snn.eval(), snn_cfg, "snn", value)
