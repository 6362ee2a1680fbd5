"""Run configuration: nested dataclasses, one documented field per key a user can type.

A run is ``recipe defaults <- YAML file <- key=value overrides``. Every key is dotted
(``optim.lr``), every field carries a one-line doc (``spikeopt show`` prints it), and a
bad key or value raises :class:`ConfigError` naming the key and what would be valid.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import yaml

# ---------------------------------------------------------------- named choices
# Every key that names one of a fixed set of things is typed by one of these, written once:
# `spikeopt show` lists the values from here, :func:`check_choices` validates them, and
# tests/test_config.py holds each equal to the keys of the registry that implements it.

# data, encoder, env: tasks/ (readers.DATASET_READERS, datasets.AUGMENTATIONS, ENCODERS, ENVS)
DatasetName = Literal[
    "digits", "mnist1d", "mnist", "fashion", "cifar10", "shd", "nmnist", "dvsgesture"
]
Augmentation = Literal["none", "flip", "flip-crop"]
EncoderKind = Literal["repeat", "rate", "deterministic", "latency", "sequence", "events"]
EnvName = Literal["chemotaxis", "foraging", "cartpole", "acrobot"]
# model, policy: nn/ (models.ARCHS, OUTPUT_LAYERS; layers.POOLS, NORMS, INITS; policies.*)
Arch = Literal["mlp", "conv", "rsnn", "cnn", "s5", "gru"]
Pool = Literal["avg", "max", "none"]
Norm = Literal["none", "batch"]
OutputLayer = Literal["lif", "li"]
InitScheme = Literal["default", "kaiming", "xavier", "fluct"]
PolicyReadout = Literal["membrane", "rate"]
ObsEncoding = Literal["raw", "signed"]
# neuron, loss: functional/ (neuron.RESETS, SURROGATES, LOSSES, composite.TERMS)
ResetMode = Literal["subtract", "zero"]
SurrogateName = Literal["sigmoid", "fast_sigmoid", "arctan", "boxcar", "triangle"]
LossName = Literal["ce_count", "mse_count", "ce_mean", "ce_max", "ce_final"]
LossTerm = Literal["ce", "mse", "rate", "wlimit", "magnitude", "topology"]
# es: population/ (noise.MODES, SHAPINGS, vmap.RANDOMNESS) and methods/ (strategy, cma_es)
PerturbationMode = Literal["lowrank", "full", "table"]
ShapingName = Literal["centered_rank", "nes_utility", "zscore", "raw"]
VmapRandomness = Literal["same", "different"]
SigmaSchedule = Literal["constant", "exponential", "linear"]
CmaDiagonal = Literal["auto", "true", "false"]
# method, nodepert, rl, optim: methods/ (METHODS, nodepert.*, reinforce.*, base.OPTIMIZERS)
MethodName = Literal[
    "surrogate", "es", "nodepert", "reinforce", "snes", "cma", "hybrid", "guided-es", "conversion"
]
NodeSigmaMode = Literal["relative", "absolute"]
NodeNoiseMode = Literal["held", "step"]
NodeConvMode = Literal["weight", "node", "sample", "auto"]
NodeSplit = Literal["joint", "layer"]
NodeCredit = Literal["auto", "activity", "noise", "mixed"]
RLNormalize = Literal["returns", "advantages", "none"]
RLBaseline = Literal["ema", "none"]
OptimName = Literal["adam", "adamw", "sgd"]
# sched, trainer, early_stop, neuron.alpha_schedule: train/ (schedules, experiment, loop)
LRSchedule = Literal["none", "step", "multistep", "cosine", "plateau", "exponential"]
AlphaSchedule = Literal["constant", "linear", "cosine", "exp", "step"]
TaskKind = Literal["classification", "control", "language"]
CorpusName = Literal["pydoc-topics"]  # lang.corpus: tasks/corpus.CORPORA
NonFiniteAction = Literal["stop", "skip"]
EarlyStopMode = Literal["none", "threshold", "patience"]
Goal = Literal["max", "min"]


class ConfigError(ValueError):
    """A configuration key or value that cannot be used; the message says how to fix it."""


def doc(default: Any, text: str) -> Any:
    """A dataclass field with a default value and its one-line documentation."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata={"doc": text})
    return field(default=default, metadata={"doc": text})


@dataclass
class DataConfig:
    """Which dataset, which subset, how it is batched."""

    name: DatasetName = doc("digits", "dataset")
    root: str = doc(
        "", "folder or tarball with the dataset files (mnist, fashion, cifar10, shd, nmnist, ...)"
    )
    source: str = doc("auto", "cifar10 source: auto | pickle | folder | hf")
    n_train: int = doc(0, "class-balanced training subset size (0 = the whole split)")
    n_test: int = doc(0, "class-balanced test subset size (0 = the whole split)")
    subset_seed: int = doc(0, "seed that picks the fixed subsets")
    batch_size: int = doc(128, "training minibatch size")
    eval_batch_size: int = doc(1000, "batch size for evaluation passes")
    normalize: bool = doc(False, "standardise inputs per channel with training-set statistics")
    augment: Augmentation = doc("none", "training augmentation for images")
    cache_dir: str = doc("", "cache for decoded arrays ('' = $SPIKEOPT_CACHE or ~/.cache/spikeopt)")
    window: float = doc(
        0.0, "events: ms of each recording binned into encoder.steps frames (0 = the dataset's)"
    )
    downsample: int = doc(0, "events: camera pixels per frame pixel (0 = the dataset's: gesture 4)")
    time_axis: int | None = doc(
        None, "encoder.kind=events on your own arrays: the axis of a sample that is time (0, -1)"
    )


@dataclass
class EncoderConfig:
    """How a static input becomes a spike train of ``steps`` time steps."""

    kind: EncoderKind = doc("repeat", "how a sample becomes an input train")
    steps: int = doc(16, "time steps T per sample (ignored by 'sequence', which uses the data's)")
    gain: float = doc(1.0, "input scale (rate: spike probability = gain * x, clipped to [0, 1])")
    window: int = doc(1, "sequence: each step sees the last `window` samples (a tapped delay line)")
    hold: int = doc(1, "sequence: time steps each sample is held for (T = length * hold)")


@dataclass
class ModelConfig:
    """Architecture of the spiking network."""

    arch: Arch = doc(
        "mlp", "network architecture (cnn: the non-spiking baseline; s5, gru: language only)"
    )
    module: str = doc(
        "", "your own model, 'package.module:factory' (imported; docs/own-model.md); '' = arch"
    )
    hidden: list[int] = doc([128], "sizes of the dense hidden layers")
    channels: list[int] = doc([32, 64], "conv: output channels of each conv layer")
    kernel_size: int = doc(3, "conv: kernel size (padding keeps the spatial size)")
    pool: Pool = doc("avg", "conv: pooling after each conv block")
    cnn_pool: Pool = doc("max", "cnn: pooling after each conv block (conversion needs avg)")
    norm: Norm = doc("none", "conv: normalisation of conv currents")
    readout: OutputLayer = doc("lif", "output layer: spiking (lif) or a leaky integrator (li)")
    readout_tau: float = doc(0.0, "time constant of the output layer (0 = neuron.tau_m)")
    neurons_per_class: int = doc(1, "population coding: output neurons per class")
    init: InitScheme = doc("default", "weight init (fluct: fluctuation-driven, from real data)")
    fluct_xi: float = doc(
        2.0, "fluct: free membrane mean sits this many standard deviations below threshold"
    )
    fluct_alpha: float = doc(
        0.9, "fluct: share of the membrane variance from feed-forward inputs (rest recurrent)"
    )
    fluct_batches: int = doc(4, "fluct: training batches the input statistics are measured on")
    out_scale: float = doc(1.0, "multiplier on the output layer's initial weights")
    dropout: float = doc(0.0, "dropout on hidden spikes (same mask at every time step)")


@dataclass
class NeuronConfig:
    """LIF dynamics and the surrogate spike function."""

    tau_m: float = doc(20.0, "membrane time constant (in units of dt)")
    dt: float = doc(1.0, "integration time step")
    v_threshold: float = doc(1.0, "firing threshold")
    v_reset: float = doc(0.0, "membrane value after a spike (reset='zero')")
    v_rest: float = doc(0.0, "resting potential the membrane decays to")
    reset: ResetMode = doc("subtract", "reset after a spike")
    detach_reset: bool = doc(True, "stop gradients through the reset term")
    learn_tau: bool = doc(False, "make tau_m a learnable parameter per neuron")
    learn_threshold: bool = doc(False, "make v_threshold a learnable parameter per neuron")
    surrogate: SurrogateName = doc("fast_sigmoid", "surrogate spike function")
    alpha: float | None = doc(None, "surrogate sharpness (null = the surrogate's default)")
    alpha_schedule: AlphaSchedule = doc("constant", "surrogate sharpness schedule over epochs")
    alpha_end: float | None = doc(None, "sharpness at the last epoch (null = alpha)")
    alpha_step_every: int = doc(10, "step schedule: epochs between sharpness changes")


@dataclass
class ConversionConfig:
    """method.name=conversion: the ANN it trains becomes an IF/LIF network (docs/conversion.md)."""

    percentile: float = doc(99.9, "each layer's scale: this percentile of its ReLU activations")
    batches: int = doc(10, "training minibatches the activation percentiles are measured on")
    timesteps: list[int] = doc([4, 8, 16, 32, 64], "T the converted network is evaluated at")
    tau_m: float = doc(0.0, "membrane time constant of the converted neurons (0 = IF, no leak)")


@dataclass
class MethodConfig:
    """Which training method runs the update."""

    name: MethodName = doc("surrogate", "training method")


@dataclass
class ESConfig:
    """Evolution strategies: population, perturbations, fitness shaping, sigma schedule."""

    population: int = doc(64, "members per generation (even: antithetic pairs +eps, -eps)")
    sigma: float = doc(0.05, "perturbation scale: std of the noise added to each weight")
    rank: int = doc(1, "rank r of low-rank perturbations sigma * A B^T (mode=lowrank)")
    mode: PerturbationMode = doc(
        "lowrank", "perturbations of weight matrices (table: full-rank, from a shared table)"
    )
    table_size: int = doc(0, "mode=table: normals in the shared noise table (0 = 2^22 or more)")
    shaping: ShapingName = doc("centered_rank", "fitness shaping")
    sigma_schedule: SigmaSchedule = doc("constant", "sigma per iteration")
    sigma_decay: float = doc(0.999, "exponential: sigma multiplier per iteration")
    sigma_steps: int = doc(1000, "linear: iterations to go from sigma to sigma_floor")
    sigma_floor: float = doc(0.001, "smallest sigma the exponential and linear schedules reach")
    max_update: float = doc(0.0, "cap on the L2 norm of each applied parameter change (0 = off)")
    chunk: int = doc(0, "members per batched pass (0 = automatic from es.memory_mb)")
    memory_mb: float = doc(1024.0, "memory budget of one chunk when es.chunk=0")
    vmap_randomness: VmapRandomness = doc("same", "random ops in vmap-evaluated models")
    noise_seed: int = doc(0, "seed of the perturbation noise (combined with trainer.seed)")
    workers: int = doc(0, "Ray actors that evaluate the population (0 = in this process)")
    worker_cpus: float = doc(1.0, "CPUs each Ray actor reserves (es.workers > 0)")
    ray_address: str = doc("", "Ray cluster to join ('' = local or current, 'auto' = running)")
    sigma_lr: float = doc(0.0, "snes: learning rate of the per-parameter sigmas (0 = default)")
    cma_diagonal: CmaDiagonal = doc("auto", "cma: diagonal covariance (auto: above 2000 params)")
    cosine_every: int = doc(
        0, "log the cosine between the ES estimate and the surrogate gradient every k steps"
    )


@dataclass
class NodePertConfig:
    """Node perturbation: noise on the synaptic currents, credited sample by sample."""

    sigma: float = doc(0.1, "current noise std, relative to each layer's current std (see mode)")
    sigma_mode: NodeSigmaMode = doc(
        "relative", "relative: sigma x the layer's current std on the batch; absolute: sigma"
    )
    noise: NodeNoiseMode = doc("held", "held: one draw per sample for the sequence; step: per step")
    conv: NodeConvMode = doc(
        "auto",
        "noise of conv layers: node (their currents), sample (per-sample kernel noise), auto "
        "(sample where the kernel has fewer weights than the current has values per sample, "
        "else node) or weight (ES weight noise, es.*)",
    )
    split: NodeSplit = doc(
        "joint", "joint: every pair perturbs every layer; layer: each pair one layer, ~sqrt(dim)"
    )
    credit: NodeCredit = doc(
        "auto",
        "activity: per-sample least squares of loss on each layer's measured current change; "
        "noise: on the injected noise; mixed: activity on dense and recurrent layers, noise on "
        "conv layers; auto: activity for nets with no conv node layer, up to 128 members, in "
        "this process, else noise",
    )
    ridge: float = doc(0.1, "activity: ridge of the least squares, x the changes' mean square")
    block: int = doc(
        1, "conv node noise: one draw per channel and block x block patch of positions (1: each)"
    )


@dataclass
class HybridConfig:
    """The 0+1 hybrid: surrogate gradient plus the ES correction orthogonal to it."""

    lam: float = doc(0.1, "weight of the ES correction g_orth (0 = exactly the surrogate method)")
    normalize: bool = doc(
        False, "lam is a fraction of the surrogate step: lam_eff = lam * |g_s| / |g_orth|"
    )
    shaping: ShapingName = doc(
        "raw", "shaping of the ES estimate (raw keeps it in loss-gradient units, like g_s)"
    )


@dataclass
class GuidedConfig:
    """Guided ES: search covariance (alpha/n) I + ((1-alpha)/k) U U^T from surrogate gradients."""

    alpha: float = doc(0.5, "share of the search variance in the full space (1 = plain ES)")
    k: int = doc(4, "surrogate gradients kept: U is an orthonormal basis of the last k")
    warmup_steps: int = doc(0, "plain BPTT steps before the guided ES phase (surrogate-then-ES)")


@dataclass
class EnvConfig:
    """Control tasks: which environment and preset (docs/control.md lists every rule)."""

    name: EnvName = doc("chemotaxis", "environment")
    preset: str = doc("legacy-static-medium", "chemotaxis/foraging preset (docs/control.md)")
    max_steps: int = doc(0, "step budget per episode (0 = the preset's)")


@dataclass
class PolicyConfig:
    """How a network acts: observation -> constant input current -> logits over actions."""

    readout: PolicyReadout = doc("membrane", "logits: mean output membrane, or spike rate")
    logit_scale: float = doc(1.0, "multiplier on the readout before the softmax")
    obs_scale: list[float] = doc([], "per-dimension observation scale ([] = 1 for all)")
    obs_encoding: ObsEncoding = doc("raw", "signed: each value split into relu(x), relu(-x)")


@dataclass
class RLConfig:
    """Episodes, returns, baseline and entropy schedule of control runs (REINFORCE and ES)."""

    episodes: int = doc(100, "reinforce: training episodes per session")
    batch_episodes: int = doc(1, "episodes per update (reinforce) or per member (es)")
    generations: int = doc(100, "es: generations per session")
    gamma: float = doc(0.99, "discount factor of the returns")
    normalize: RLNormalize = doc(
        "returns",
        "returns: standardise returns, then subtract the baseline (the predecessor); "
        "advantages: subtract the baseline, then divide by the returns' std",
    )
    baseline: RLBaseline = doc("ema", "baseline subtracted from returns")
    baseline_ema: float = doc(0.05, "ema baseline: weight of the newest mean return")
    entropy_start: float = doc(0.15, "entropy bonus weight at episode 0")
    entropy_end: float = doc(0.01, "entropy bonus weight after entropy_episodes")
    entropy_episodes: int = doc(50, "episodes over which the entropy weight decays linearly")
    lr_decay: float = doc(0.015, "learning rate shrinks by this fraction every episode")
    eval_episodes: int = doc(20, "evaluation episodes after training (eval_return)")
    eval_greedy: bool = doc(True, "evaluate with the most likely action instead of sampling")
    baseline_episodes: int = doc(200, "episodes run for the random and greedy baselines")
    converge_window: int = doc(20, "our convergence: window of the rolling success rate")
    converge_level: float = doc(0.8, "our convergence: success rate every later window keeps")


@dataclass
class LangConfig:
    """Character-level language modelling (trainer.task=language; docs/language.md)."""

    corpus: CorpusName = doc("pydoc-topics", "text: the standard library's pydoc_data.topics")
    test_fraction: float = doc(0.1, "share of the text held out at its end as the test split")
    seq_len: int = doc(64, "characters per training window (truncated BPTT length)")
    states: int = doc(64, "s5: complex diagonal states per layer")
    sample_chars: int = doc(500, "characters sampled into samples.txt at the end of a run")
    prompt: str = doc("The ", "text the sample continues (characters outside the vocabulary: unk)")
    temperature: float = doc(1.0, "sampling temperature (logits / temperature)")
    sample_seed: int = doc(0, "seed of the sampler's generator")


@dataclass
class OptimConfig:
    """The torch optimizer that applies every method's update."""

    name: OptimName = doc("adam", "torch optimizer")
    lr: float = doc(1e-3, "learning rate")
    weight_decay: float = doc(0.0, "weight decay")
    momentum: float = doc(0.9, "sgd momentum")
    betas: list[float] = doc([0.9, 0.999], "adam/adamw betas")
    clip_value: float = doc(0.0, "clip each gradient entry to [-v, v] (0 = off)")
    clip_norm: float = doc(0.0, "clip the global gradient norm (0 = off)")


@dataclass
class SchedConfig:
    """Learning-rate schedule, stepped once per epoch."""

    name: LRSchedule = doc("none", "learning-rate schedule")
    step_size: int = doc(10, "step: epochs between decays")
    milestones: list[int] = doc([], "multistep: epochs at which to decay")
    gamma: float = doc(0.1, "decay factor (step, multistep, exponential, plateau)")
    min_lr: float = doc(0.0, "cosine: final learning rate; plateau: lower bound")
    patience: int = doc(5, "plateau: epochs without improvement before decaying")
    metric: str = doc("test_loss", "plateau: metric to watch (minimised)")


@dataclass
class TrainerConfig:
    """The loop: how long, where, how reproducibly."""

    epochs: int = doc(10, "number of epochs (evaluation, checkpoint and log every epoch)")
    steps_per_epoch: int = doc(0, "method steps per epoch (0 = one pass over the training set)")
    seed: int = doc(0, "seed for init, shuffling and encoder noise")
    device: str = doc("auto", "where to train: auto (CUDA when available), cpu, cuda or cuda:N")
    compile: bool = doc(False, "torch.compile the model (slow first epoch, faster after)")
    progress: bool = doc(True, "show a progress bar")
    overfit_batch: bool = doc(
        False, "train on one fixed batch every step (does the loss fall? a sanity mode)"
    )
    eval_train: bool = doc(
        False, "also evaluate on the whole (fixed) training set each epoch: train_eval_*"
    )
    task: TaskKind = doc("classification", "what is trained")
    forward_check: bool = doc(
        False, "one forward pass: layer shapes and a finite loss, no training (snn-forward)"
    )
    nonfinite: NonFiniteAction = doc(
        "stop",
        "a step that leaves a NaN/inf weight or loss is undone; then stop the run, or skip "
        "the step and go on",
    )


@dataclass
class LossConfig:
    """Readout and loss on the output layer."""

    name: LossName = doc("ce_count", "readout and loss of the output layer")
    rate_reg: float = doc(0.0, "weight of the firing-rate regulariser on hidden layers")
    rate_target: float = doc(0.05, "target firing rate per hidden layer (spikes per step)")
    mse_on: float = doc(1.0, "mse_count: target firing rate of the correct class")
    mse_off: float = doc(0.0, "mse_count: target firing rate of the other classes")
    terms: list[LossTerm] = doc([], "composite loss: the terms summed ([] = loss.name)")
    ce_weight: float = doc(1.0, "composite: weight of the cross-entropy term (readout: loss.name)")
    mse_weight: float = doc(1.0, "composite: weight of the population MSE term (mse_on/mse_off)")
    rate_weight: float = doc(0.1, "composite: weight of the firing-rate target term")
    rate_targets: list[float] = doc([], "composite: rate per hidden layer ([] = rate_target)")
    wlimit_weight: float = doc(1.0, "composite: weight of the weight-magnitude term")
    wlimit: float = doc(1.0, "composite: weights with |w| above this are penalised")
    magnitude_weight: float = doc(1.0, "composite: weight of the run-weight magnitude term")
    topology_weight: float = doc(1.0, "composite: weight (lam) of the sign-topology term")


@dataclass
class MetricConfig:
    """What is measured at evaluation."""

    per_class_recall: bool = doc(False, "log recall of every class")
    recall_class: int = doc(-1, "log recall_<c>, the recall of this one class (-1 = off)")


@dataclass
class HWConfig:
    """Hardware constraints: quantised weights and sign constraints (docs/hardware.md)."""

    weight_bits: int | None = doc(
        None, "bits per weight, symmetric uniform with a max-|w| scale (2..8; null = float)"
    )
    layer_bits: list[int] = doc(
        [], "bits per weight layer in model order, over weight_bits ([] = all alike; 0 = float)"
    )
    per_channel: bool = doc(False, "one scale per output channel instead of one per weight tensor")
    sign_anneal: bool = doc(
        False, "w = |v| tanh(alpha u_block): one sign per row block, hardened over training"
    )
    sign_block: int = doc(16, "entries per row block (one row's consecutive inputs; 0 = row)")
    sign_alpha_start: float = doc(1.0, "sign annealing: alpha at epoch 0 (nwave.alpha_start)")
    sign_alpha_end: float = doc(50.0, "sign annealing: alpha at the end (nwave.alpha_end)")
    sign_total_epochs: int = doc(
        0, "sign annealing: epochs from start to end alpha (nwave.total_epochs; 0 = all)"
    )
    dale: bool = doc(False, "Dale's law: each presynaptic neuron's outgoing weights keep one sign")
    magnitude_limit: float = doc(1.0, "loss term magnitude: |w| above this is penalised")


@dataclass
class EarlyStopConfig:
    """Stop when a logged metric reaches a threshold or stops improving."""

    mode: EarlyStopMode = doc("none", "when to stop early")
    metric: str = doc("test_acc", "any column of metrics.csv")
    goal: Goal = doc("max", "which direction of the metric is better")
    threshold: float = doc(1.0, "threshold: stop once the metric is at least this good")
    patience: int = doc(10, "patience: epochs without improvement before stopping")
    min_delta: float = doc(0.0, "patience: smallest change that counts as improvement")


@dataclass
class Config:
    """A whole run; each attribute is a namespace of dotted keys."""

    data: DataConfig = field(default_factory=DataConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    neuron: NeuronConfig = field(default_factory=NeuronConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    env: EnvConfig = field(default_factory=EnvConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    rl: RLConfig = field(default_factory=RLConfig)
    lang: LangConfig = field(default_factory=LangConfig)
    es: ESConfig = field(default_factory=ESConfig)
    nodepert: NodePertConfig = field(default_factory=NodePertConfig)
    hybrid: HybridConfig = field(default_factory=HybridConfig)
    guided: GuidedConfig = field(default_factory=GuidedConfig)
    conversion: ConversionConfig = field(default_factory=ConversionConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    sched: SchedConfig = field(default_factory=SchedConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    metric: MetricConfig = field(default_factory=MetricConfig)
    early_stop: EarlyStopConfig = field(default_factory=EarlyStopConfig)
    hw: HWConfig = field(default_factory=HWConfig)


# ---------------------------------------------------------------- keys and types


def _fields(cls: type) -> dict[str, dataclasses.Field[Any]]:
    return {f.name: f for f in dataclasses.fields(cls)}


_HINTS: dict[type, dict[str, Any]] = {}  # resolved once per class: every builder checks its section


def _hints(cls: type) -> dict[str, Any]:
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls)
    return _HINTS[cls]


def choices(tp: Any) -> tuple[str, ...]:
    """The names a ``Literal`` annotation (or a list of one) allows; () for any other type."""
    if typing.get_origin(tp) is list:
        tp = typing.get_args(tp)[0]
    return typing.get_args(tp) if typing.get_origin(tp) is Literal else ()


def key_docs(cfg: Config | None = None) -> dict[str, tuple[Any, str]]:
    """Every dotted key with its current value and its one-line doc (a named choice's doc
    ends with the names it allows)."""
    cfg = cfg or Config()
    out: dict[str, tuple[Any, str]] = {}
    for section in dataclasses.fields(cfg):
        sub = getattr(cfg, section.name)
        hints = _hints(type(sub))
        for f in dataclasses.fields(sub):
            text = f.metadata.get("doc", "")
            valid = choices(hints[f.name])
            if valid:
                text = f"{text}; one of: {' | '.join(valid)}"
            out[f"{section.name}.{f.name}"] = (getattr(sub, f.name), text)
    return out


def _choice_fields(cls: type) -> list[tuple[str, tuple[str, ...]]]:
    """(field, valid names) of every named choice of a section class."""
    return [(name, valid) for name, tp in _hints(cls).items() if (valid := choices(tp))]


def check_choices(section: Any) -> None:
    """Check every named choice of one config section (or of every section of a Config).

    Values are not checked when they are set (``apply`` takes any string): a section is
    checked where it is consumed -- its builder calls this -- and ``train.experiment.build``
    checks the whole config before anything is written. The error is :func:`choose`'s.
    """
    if isinstance(section, Config):
        for f in dataclasses.fields(section):
            check_choices(getattr(section, f.name))
        return
    prefix = {tp: name for name, tp in _hints(Config).items()}.get(type(section))
    if prefix is None:
        raise TypeError(
            f"check_choices() takes a config section or a Config, not {type(section)!r}"
        )
    for name, valid in _choice_fields(type(section)):
        value = getattr(section, name)
        for item in value if isinstance(value, list) else [value]:
            choose(f"{prefix}.{name}", item, valid)


def _at_least(low: float) -> Callable[[Any], bool]:
    return lambda v: v >= low  # NaN compares False: refused


def _positive(v: Any) -> bool:
    return v > 0  # NaN compares False: refused (inf passes; the loop's guard catches it)


def _finite_positive(v: Any) -> bool:
    return math.isfinite(v) and v > 0


def _finite_at_least_0(v: Any) -> bool:
    return math.isfinite(v) and v >= 0


def _each(test: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda vs: all(test(v) for v in vs)


# Key -> (test, the valid range in words): numbers no run can use, refused before anything is
# read or written (train.experiment.build calls check_ranges). Method-specific ranges (es.sigma,
# es.population, ...) are checked by the method that reads them.
_DEVICE = re.compile(r"auto|cpu|cuda(:[0-9]+)?")

RANGES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "trainer.device": (lambda v: _DEVICE.fullmatch(v) is not None, "auto, cpu, cuda or cuda:N"),
    "data.n_train": (_at_least(0), ">= 0 (0 = the whole split)"),
    "data.n_test": (_at_least(0), ">= 0 (0 = the whole split)"),
    "data.batch_size": (_at_least(1), ">= 1"),
    "data.eval_batch_size": (_at_least(1), ">= 1"),
    "encoder.steps": (_at_least(1), ">= 1"),
    "data.window": (_finite_at_least_0, ">= 0 ms (0 = the dataset's window)"),
    "data.downsample": (_at_least(0), ">= 0 (0 = the dataset's factor)"),
    "encoder.window": (_at_least(1), ">= 1"),
    "encoder.hold": (_at_least(1), ">= 1"),
    "encoder.gain": (_finite_positive, "a finite number > 0"),
    "model.hidden": (_each(_at_least(1)), "sizes >= 1 ([] for none)"),
    "model.channels": (_each(_at_least(1)), "channel counts >= 1"),
    "model.kernel_size": (_at_least(1), ">= 1"),
    "model.neurons_per_class": (_at_least(1), ">= 1"),
    "model.readout_tau": (_finite_at_least_0, ">= 0 (0 = neuron.tau_m)"),
    "model.fluct_batches": (_at_least(1), ">= 1"),
    "model.dropout": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "neuron.tau_m": (_finite_positive, "a finite number > 0 (in units of dt)"),
    "neuron.dt": (_finite_positive, "a finite number > 0"),
    "neuron.v_threshold": (math.isfinite, "a finite number"),
    "optim.lr": (_positive, "> 0"),
    "optim.weight_decay": (_finite_at_least_0, ">= 0"),
    "optim.momentum": (_finite_at_least_0, ">= 0"),
    "optim.clip_value": (_finite_at_least_0, ">= 0 (0 = off)"),
    "optim.clip_norm": (_finite_at_least_0, ">= 0 (0 = off)"),
    "trainer.epochs": (_at_least(1), ">= 1"),
    "trainer.steps_per_epoch": (_at_least(0), ">= 0 (0 = one pass over the training set)"),
    "es.rank": (_at_least(1), ">= 1"),
    "nodepert.ridge": (_finite_positive, "a finite number > 0"),
    "es.chunk": (_at_least(0), ">= 0 (0 = automatic)"),
    "es.memory_mb": (_finite_positive, "> 0"),
    "es.workers": (_at_least(0), ">= 0 (0 = in this process)"),
    "rl.gamma": (lambda v: 0 <= v <= 1, "in [0, 1]"),
    "rl.episodes": (_at_least(1), ">= 1"),
    "rl.generations": (_at_least(1), ">= 1"),
    "rl.batch_episodes": (_at_least(1), ">= 1"),
    "conversion.percentile": (lambda v: 0 < v <= 100, "in (0, 100]"),
    "conversion.batches": (_at_least(1), ">= 1"),
    "conversion.timesteps": (
        lambda vs: len(vs) > 0 and all(v >= 1 for v in vs),
        "T >= 1, at least one",
    ),
    "conversion.tau_m": (_finite_at_least_0, ">= 0 (0 = IF, no leak)"),
    "lang.test_fraction": (lambda v: 0 < v < 1, "in (0, 1)"),
    "lang.seq_len": (_at_least(2), ">= 2"),
    "lang.states": (_at_least(1), ">= 1"),
    "lang.sample_chars": (_at_least(0), ">= 0 (0 = no samples.txt)"),
    "lang.temperature": (_finite_positive, "a finite number > 0"),
    "hw.weight_bits": (lambda v: v is None or 2 <= v <= 8, "an integer in 2..8, or null (float)"),
    "hw.layer_bits": (_each(lambda v: v == 0 or 2 <= v <= 8), "bits in 2..8, or 0 (float)"),
    "hw.sign_block": (_at_least(0), ">= 0 (0 = the whole row)"),
    "hw.sign_alpha_start": (_finite_positive, "a finite number > 0"),
    "hw.sign_alpha_end": (_finite_positive, "a finite number > 0"),
    "hw.sign_total_epochs": (_at_least(0), ">= 0 (0 = trainer.epochs)"),
    "hw.magnitude_limit": (_finite_positive, "a finite number > 0"),
}


def check_ranges(cfg: Config) -> None:
    """Refuse any :data:`RANGES` key whose value no run can use, naming it and its range."""
    for key, (test, valid) in RANGES.items():
        section, name = key.split(".")
        value = getattr(getattr(cfg, section), name)
        if not test(value):
            raise ConfigError(f"{key}={value!r} is out of range: it must be {valid}")


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is list:
        return f"list of {_type_name(typing.get_args(tp)[0])}"
    if origin is Literal:
        return "str"
    return "null" if tp is type(None) else getattr(tp, "__name__", str(tp))


# A number in exponent notation without a dot, which YAML 1.1 (safe_load) leaves a string.
_FLOAT = re.compile(r"[-+]?[0-9]+(\.[0-9]*)?[eE][-+]?[0-9]+")


def _coerce(key: str, value: Any, tp: Any) -> Any:
    """Check ``value`` against the annotation ``tp``; ints are accepted for floats."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            try:
                return _coerce(key, value, arg)
            except ConfigError:
                continue
    elif origin is list:
        (item,) = typing.get_args(tp)
        if isinstance(value, (int, float, str)) and not isinstance(value, bool):
            value = [value]  # a scalar where a list is expected: a list of one
        if isinstance(value, (list, tuple)):
            return [_coerce(key, v, item) for v in value]
    elif tp is type(None):
        if value is None:
            return None
    elif tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str) and _FLOAT.fullmatch(value.strip()):
            return float(value)  # YAML 1.1 reads 1e-9 (no dot) as a string
    elif (tp is str or origin is Literal) and isinstance(value, str):
        return value  # a named choice is checked where it is used (check), not here
    raise ConfigError(
        f"{key}: expected {_type_name(tp)}, got {value!r} ({type(value).__name__}); "
        f"e.g. `{key}={_example(tp)}`"
    )


def _example(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return _example(typing.get_args(tp)[0])
    if origin is list:
        return f"[{_example(typing.get_args(tp)[0])}]"
    if origin is Literal:
        return str(typing.get_args(tp)[0])
    return {bool: "true", int: "3", float: "0.5", str: "name"}.get(tp, "null")


def _unknown(key: str, valid: list[str]) -> ConfigError:
    near = difflib.get_close_matches(key, valid, n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(near)}?" if near else ""
    return ConfigError(f"unknown config key '{key}'{hint} (`spikeopt show RECIPE` lists all keys)")


def set_key(cfg: Config, key: str, value: Any) -> None:
    """Set one dotted key on ``cfg`` in place, checking the key and the value's type."""
    valid = list(key_docs(cfg))
    parts = key.split(".")
    if len(parts) != 2 or parts[0] not in _fields(Config):
        raise _unknown(key, valid)
    section = getattr(cfg, parts[0])
    hints = _hints(type(section))
    if parts[1] not in hints:
        raise _unknown(key, valid)
    setattr(section, parts[1], _coerce(key, value, hints[parts[1]]))


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mapping -> dotted keys (``{'optim': {'lr': 1}}`` -> ``{'optim.lr': 1}``)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        name = f"{prefix}{k}"
        if isinstance(v, dict) and "." not in name:
            out.update(flatten(v, name + "."))
        else:
            out[name] = v
    return out


def apply(cfg: Config, values: dict[str, Any]) -> Config:
    """A copy of ``cfg`` with nested or dotted ``values`` applied; ``cfg`` is unchanged."""
    new = copy_config(cfg)
    for key, value in flatten(values).items():
        set_key(new, key, value)
    return new


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``['optim.lr=0.01', 'model.hidden=[64,64]']`` -> dotted dict, values parsed as YAML."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override '{item}' is not key=value (e.g. optim.lr=0.01)")
        try:
            out[key.strip()] = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as err:
            raise ConfigError(f"{key}: cannot parse value {raw!r}: {err}") from None
    return out


class _UniqueKeyLoader(yaml.SafeLoader):
    """safe_load that refuses a key given twice in one mapping (YAML keeps the last silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        """The mapping, after checking that no key repeats."""
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)  # type: ignore[no-untyped-call]
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} appears twice in one mapping", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_yaml(path: str) -> dict[str, Any]:
    """Read a YAML config file (safe_load) into a nested dict."""
    try:
        with open(path, encoding="utf-8") as fh:
            data = yaml.load(fh, Loader=_UniqueKeyLoader)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except IsADirectoryError:
        raise ConfigError(f"config file {path} is a directory; give a YAML file") from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"config file {path} is not UTF-8 text ({err.reason} at byte "
                          f"{err.start}); save it as UTF-8") from None  # fmt: skip
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {path} is not valid YAML: {err}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"config file {path} must hold a mapping of keys, got {type(data).__name__}"
        )
    return data


def to_dict(cfg: Config) -> dict[str, Any]:
    """The config as a nested plain dict (what config.yaml holds)."""
    return dataclasses.asdict(cfg)


def copy_config(cfg: Config) -> Config:
    """A deep copy of ``cfg``."""
    return from_dict(to_dict(cfg))


def from_dict(d: dict[str, Any]) -> Config:
    """Build a Config from a nested dict, every key checked."""
    cfg = Config()
    for key, value in flatten(d).items():
        set_key(cfg, key, value)
    return cfg


def dump_yaml(cfg: Config) -> str:
    """The config as YAML text."""
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


def choose(key: str, value: str, valid: typing.Iterable[str]) -> str:
    """Check a named choice; the error lists the valid names."""
    valid = list(valid)
    if value not in valid:
        near = difflib.get_close_matches(value, valid, n=1) if isinstance(value, str) else []
        hint = f" (did you mean '{near[0]}'?)" if near else ""
        raise ConfigError(f"{key}: unknown value '{value}'{hint}; valid: {', '.join(valid)}")
    return value
