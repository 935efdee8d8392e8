"""Run configurations: one validated, hashable description of a training run, and the presets.

A :class:`RunConfig` says everything that determines a run's numbers (task, model size, data,
loss, optimiser, eta, rho, seed, steps, the step-indexed measurement schedule, the solver and the
numeric mode). Invalid configurations are rejected in :meth:`RunConfig.validate` *before any
compute*, with the field name and the allowed values in the message.

Presets (:func:`preset_config`):

* ``smoke`` -- seconds; used by the tests.
* ``cpu`` -- the book on two CPU cores: small models and data subsets chosen so that, within a
  few minutes, GD's sharpness reaches ``2/eta`` and SAM's reaches and then tracks the SAM-edge.
* ``paper`` -- the official code's settings (``image_classification.py`` and ``transformer.py`` of
  https://github.com/google-deepmind/sam_edge), for a GPU.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Any

from samedge_lib.theory.rules import ASCENTS, ascent_of

# Allowed values: the vocabulary of the run record, the one contract between the engine that writes runs and the
# readers. The engine implements each name (the models of samedge_lib.engine.models.MODEL_FOR_TASK, the losses of
# samedge_lib.engine.losses.LOSSES, the products of samedge_lib.core.hessian, the ascents of
# samedge_lib.theory.rules.ASCENTS); tests/test_allowed_values.py checks that each name here is implemented there
# and that each works, so the record can be read without importing torch.
TASKS: tuple[str, ...] = ("mnist", "cifar10", "shakespeare")
LOSSES: tuple[str, ...] = ("mse_mean", "mse_half_sum", "cross_entropy")
#: Hessian-vector product methods (their definitions: :mod:`samedge_lib.core.hessian`).
HVP_METHODS: tuple[str, ...] = ("exact", "exact_fresh", "forward_over_reverse", "finite_difference")
OPTIMIZERS = tuple(ASCENTS)  # ("gd", "sam", "usam"): one entry per ascent of samedge_lib.theory.rules
DTYPES = ("float32", "float64")
DEVICES = ("auto", "cpu", "cuda")
MEASURE_DATA = ("batch", "fixed", "both")
PRESETS = ("smoke", "cpu", "paper")

#: The model sizes a configuration may set, per task: a subset of what the task's model constructor in
#: :mod:`samedge_lib.engine.models` accepts (seeds, input and output sizes are not the configuration's to change).
MODEL_KEYS = {
    "mnist": ("depth", "width"),
    "cifar10": ("num_blocks", "layers_per_block", "feature_multiplier"),
    "shakespeare": ("num_layers", "num_heads", "key_size", "d_model", "seq_len", "widening_factor"),
}


#: Fields added after runs were stored, with their defaults: they enter the identity hash only when set.
LATER_FIELDS: dict[str, Any] = {
    "momentum": 0.0,
    "nesterov": False,
    "sam_start": 0,
    "measure_after_switch": 0,
    "micro_batch": None,
    "batch_sharpness": False,
    "noise_every": 0,
    "noise_batches": 50,
    "hutchinson_probes": 10,
    "drift_every": 0,
}


def _plain_zeros(obj: Any) -> Any:
    """``obj`` with every ``-0.0`` replaced by ``0.0`` (nothing else changes, so no other identity hash moves)."""
    if isinstance(obj, dict):
        return {k: _plain_zeros(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_plain_zeros(v) for v in obj]
    return 0.0 if isinstance(obj, float) and obj == 0 else obj


class ConfigError(ValueError):
    """A run configuration field has a value that cannot be used."""


class UnknownFieldError(ConfigError, TypeError):
    """A field name :class:`RunConfig` does not have (also a ``TypeError``, as any unknown keyword argument is)."""


def check_field_names(names: Any, where: str) -> None:
    """Raise :class:`UnknownFieldError` for the first name that is not a field of :class:`RunConfig`, with the
    closest field ("did you mean") and the list of fields, as the command line's ``--set`` does.
    """
    known = [f.name for f in dataclasses.fields(RunConfig)]
    for name in names:
        if name not in known:
            close = difflib.get_close_matches(str(name), known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise UnknownFieldError(f"{where}: unknown field {name!r}{hint}; the fields are: {', '.join(known)}")


def _choice(name: str, value: Any, allowed: tuple) -> None:
    if value not in allowed:
        raise ConfigError(f"{name}={value!r} is not allowed; choose one of: {', '.join(map(repr, allowed))}")


def _positive(name: str, value: Any, *, integer: bool = False, allow_zero: bool = False) -> None:
    ok_type = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok_type:
        raise ConfigError(f"{name}={value!r} must be {'an integer' if integer else 'a number'}")
    if not math.isfinite(value):  # inf passes "> 0" and later divides into NaN; NaN fails every comparison
        raise ConfigError(f"{name}={value!r} must be a finite number {'>= 0' if allow_zero else '> 0'}")
    if value < 0 or (value == 0 and not allow_zero):
        raise ConfigError(f"{name}={value!r} must be {'>= 0' if allow_zero else '> 0'}")


@dataclass(frozen=True)
class RunConfig:
    """Everything that determines a training run's results.

    Attributes:
        task: ``"mnist"`` (MLP), ``"cifar10"`` (CNN) or ``"shakespeare"`` (character Transformer).
        model: keyword overrides for the task's model (see :data:`MODEL_KEYS`); empty = paper size.
        n_train: number of training examples used (first N); ``None`` = all. Image tasks only.
        n_test: number of test examples used for test metrics; ``None`` = all available.
        loss: ``"mse_mean"`` (the official reduction: mean over N x classes), ``"mse_half_sum"`` or
            ``"cross_entropy"`` (the Transformer).
        optimizer: ``"gd"`` (rho must be 0), ``"sam"`` (normalised, ``+1e-5``) or ``"usam"`` (unnormalised).
        eta: step size. rho: SAM radius (``r`` for USAM).
        momentum: heavy-ball coefficient ``beta`` in ``[0, 1)``, in ``torch.optim.SGD``'s convention
            (``v <- beta v + s``, ``w <- w - eta v``, with ``s`` the (SAM) gradient and ``v`` starting at 0);
            0 = no momentum.
        nesterov: Nesterov's variant (``w <- w - eta (s + beta v)``, as ``SGD(nesterov=True)``); needs momentum > 0.
        sam_start: SAM (or USAM) switches on at this step; the steps before it are GD (with the same momentum).
            0 = SAM from the first step.
        measure_after_switch: also measure at each of the first this many steps from ``sam_start`` on (how fast
            SAM leaves GD's edge); needs ``sam_start > 0``.
        batch_size: ``None`` = full batch; else minibatch size (the Transformer: 128 sequences).
        seed: seeds initialisation, data order and the solvers' random starts.
        steps: number of updates.
        measure_every: a measurement every this many steps (step-indexed; step 0 and the last step included).
        k: number of top Hessian eigenvalues tracked.
        hvp: Hessian-vector-product method of the tracker.
        lanczos_tol: relative residual at which the tracker's Lanczos stops (all k pairs).
        lanczos_max_iter: cap on products per check; a check that hits it is flagged ``lanczos_converged=False``.
        official_every: also run the paper's estimator (finite-difference power iteration) every this many
            measurements; 0 = never.
        measure_data: minibatch tasks: measure on the current ``"batch"``, a ``"fixed"`` evaluation batch,
            or ``"both"``.
        dtype: parameter and data dtype. tf32: allow TF32 matmuls/convolutions on CUDA.
        device: ``"auto"`` (CUDA if available), ``"cpu"`` or ``"cuda"``.
        checkpoint_every: also commit (checkpoint + tables + status) every this many steps; 0 = no step cadence.
        checkpoint_seconds: commit at the first step boundary after this many seconds since the last commit, or
            after 50 times the last commit's own duration if that is longer, so committing never costs more than
            2 % of the run (``tools/commit_cost.py`` measures a commit per task and preset); 0 = no time cadence.
            A run also commits when it ends, stops, fails or is interrupted.
        grad_chunk: full-batch gradients computed in chunks of this many examples (memory); ``None`` = one pass.
        max_loss: the run stops as diverged if the training loss exceeds this (or is NaN/inf).
        name: optional human label; not part of the identity hash.
        micro_batch: m-SAM (Foret et al.'s m-sharpness; image tasks, ``optimizer="sam"``): the update's batch is cut
            into micro-batches of this many examples, each with its own ascent step, reshuffled every step; every
            check also measures the stability operator ``A_m`` (:mod:`samedge_lib.core.stochastic`). ``None`` = SAM.
        batch_sharpness: at every check also measure the SAM batch sharpness ``Q`` (one Hessian-vector product per
            data) and the cosine between the update about to be taken and the next one (oscillation sign).
        noise_every: every this many checks, measure the gradient noise on the training set: ``tr Sigma`` from
            per-example gradients, the mean ``||g_B||^2`` of ``noise_batches`` random batches of the run's batch size,
            and Hutchinson's ``tr H`` with ``hutchinson_probes`` probes (image tasks); 0 = never.
        drift_every: every this many checks, the two-step drift of the next two updates against
            ``-grad lambda_1`` (Bartlett, Long & Bousquet 2023); 0 = never.

    """

    task: str
    eta: float
    rho: float = 0.0
    optimizer: str = "gd"
    model: dict = field(default_factory=dict)
    n_train: int | None = None
    n_test: int | None = None
    loss: str = "mse_mean"
    batch_size: int | None = None
    seed: int = 0
    steps: int = 1000
    measure_every: int = 50
    k: int = 1
    hvp: str = "exact"
    lanczos_tol: float = 1e-3
    lanczos_max_iter: int = 80
    official_every: int = 0
    measure_data: str = "batch"
    dtype: str = "float32"
    tf32: bool = False
    device: str = "auto"
    checkpoint_every: int = 0
    checkpoint_seconds: float = 30.0
    grad_chunk: int | None = None
    max_loss: float = 1e6
    momentum: float = 0.0
    nesterov: bool = False
    sam_start: int = 0
    measure_after_switch: int = 0
    name: str = ""
    micro_batch: int | None = None
    batch_sharpness: bool = False
    noise_every: int = 0
    noise_batches: int = 50
    hutchinson_probes: int = 10
    drift_every: int = 0

    def validate(self) -> RunConfig:
        """Raise :class:`ConfigError` naming the first bad field and its allowed values; return self."""
        _choice("task", self.task, TASKS)
        _choice("optimizer", self.optimizer, OPTIMIZERS)
        _choice("loss", self.loss, LOSSES)
        _choice("hvp", self.hvp, HVP_METHODS)
        _choice("dtype", self.dtype, DTYPES)
        _choice("device", self.device, DEVICES)
        _choice("measure_data", self.measure_data, MEASURE_DATA)
        _positive("eta", self.eta)
        _positive("rho", self.rho, allow_zero=True)
        ascent = ascent_of(self.optimizer)
        if not ascent.has_radius and self.rho != 0:
            raise ConfigError(f"optimizer='gd' needs rho=0, got rho={self.rho}; use optimizer='sam' for rho > 0")
        if ascent.has_radius and self.rho == 0:
            raise ConfigError(f"optimizer={self.optimizer!r} needs rho > 0; use optimizer='gd' for rho = 0")
        if not isinstance(self.model, dict):
            raise ConfigError(f"model must be a dict of model sizes, got {self.model!r}")
        bad = sorted(set(self.model) - set(MODEL_KEYS[self.task]))
        if bad:
            raise ConfigError(
                f"model keys {bad} are not allowed for task {self.task!r}; choose from {MODEL_KEYS[self.task]}"
            )
        for key, value in self.model.items():
            _positive(f"model[{key!r}]", value, integer=True)
        if (self.task == "shakespeare") != (self.loss == "cross_entropy"):
            allowed = ("cross_entropy",) if self.task == "shakespeare" else ("mse_mean", "mse_half_sum")
            raise ConfigError(f"loss={self.loss!r} does not fit task {self.task!r}; choose one of: {allowed}")
        if self.task == "shakespeare" and self.batch_size is None:
            raise ConfigError("task 'shakespeare' is trained on minibatches: set batch_size (the paper: 128)")
        if self.task != "shakespeare" and self.measure_data != "batch" and self.batch_size is None:
            raise ConfigError(
                f"measure_data={self.measure_data!r} needs minibatches (image tasks: the stepped minibatch and the "
                "full batch); set batch_size, or use measure_data='batch' for a full-batch run"
            )
        for name in ("n_train", "n_test", "batch_size", "grad_chunk"):
            value = getattr(self, name)
            if value is not None:
                _positive(name, value, integer=True)
        for name in ("seed", "official_every", "checkpoint_every"):
            _positive(name, getattr(self, name), integer=True, allow_zero=True)
        for name in ("steps", "measure_every", "k", "lanczos_max_iter"):
            _positive(name, getattr(self, name), integer=True)
        _positive("checkpoint_seconds", self.checkpoint_seconds, allow_zero=True)
        self._validate_stochastic()
        _positive("lanczos_tol", self.lanczos_tol)
        _positive("max_loss", self.max_loss)
        if not isinstance(self.tf32, bool):
            raise ConfigError(f"tf32 must be true or false, got {self.tf32!r}")
        self._validate_variants()
        self._validate_solver()
        return self

    def _validate_solver(self) -> None:
        """What the tracker's Lanczos needs of its settings (the model's dimension is checked by the engine)."""
        if self.lanczos_max_iter < self.k:
            raise ConfigError(
                f"k={self.k} is more than lanczos_max_iter={self.lanczos_max_iter}: Lanczos needs at least k "
                f"Hessian-vector products per check to find k eigenvalues; set k <= {self.lanczos_max_iter} (the "
                f"presets track 1 to 3; k is at most the model's parameter count) or lanczos_max_iter >= {self.k}"
            )

    def _validate_variants(self) -> None:
        """Momentum, Nesterov and a late switch to SAM: the combinations the update rule defines."""
        _positive("momentum", self.momentum, allow_zero=True)
        if self.momentum >= 1:
            raise ConfigError(
                f"momentum={self.momentum!r} must lie in [0, 1) (beta >= 1 makes the velocity grow without bound)"
            )
        if not isinstance(self.nesterov, bool):
            raise ConfigError(f"nesterov must be true or false, got {self.nesterov!r}")
        if self.nesterov and self.momentum == 0:
            raise ConfigError("nesterov=true needs momentum > 0 (e.g. momentum=0.9); without momentum it is plain SAM")
        for name in ("sam_start", "measure_after_switch"):
            _positive(name, getattr(self, name), integer=True, allow_zero=True)
        if self.sam_start > 0 and not ascent_of(self.optimizer).has_radius:
            raise ConfigError(f"sam_start={self.sam_start} needs optimizer 'sam' or 'usam' (GD switches nothing on)")
        if self.sam_start >= self.steps:
            raise ConfigError(f"sam_start={self.sam_start} must be below steps={self.steps}, or SAM never runs")
        if self.measure_after_switch > 0 and self.sam_start == 0:
            raise ConfigError("measure_after_switch > 0 needs sam_start > 0 (the step at which SAM switches on)")

    def _validate_stochastic(self) -> None:
        """The fields of stochastic SAM's measurements and of m-SAM (see the class docstring)."""
        for name in ("noise_every", "drift_every"):
            _positive(name, getattr(self, name), integer=True, allow_zero=True)
        for name in ("noise_batches", "hutchinson_probes"):
            _positive(name, getattr(self, name), integer=True)
        if not isinstance(self.batch_sharpness, bool):
            raise ConfigError(f"batch_sharpness must be true or false, got {self.batch_sharpness!r}")
        per_example = self.task in ("mnist", "cifar10")  # the Transformer's loss is not vmapped per example
        if self.noise_every and not per_example:
            raise ConfigError(f"noise_every needs per-example gradients, which task {self.task!r} lacks; set it to 0")
        lookahead = self.batch_sharpness or self.drift_every or self.micro_batch is not None
        if lookahead and (self.momentum > 0 or self.sam_start > 0):
            raise ConfigError(
                "batch_sharpness, drift_every and micro_batch apply to momentum-free runs that are SAM from step 0 "
                "(their look-ahead and m-SAM's update do not carry a velocity or a switch); set momentum=0 and "
                "sam_start=0, or leave them at their defaults"
            )
        if self.micro_batch is None:
            return
        _positive("micro_batch", self.micro_batch, integer=True)
        if not ascent_of(self.optimizer).micro_batches:
            raise ConfigError(f"micro_batch (m-SAM) needs optimizer='sam', got optimizer={self.optimizer!r}")
        if not per_example:
            raise ConfigError(f"micro_batch (m-SAM) applies to the image tasks, not to {self.task!r}")
        batch = self.batch_size if self.batch_size is not None else self.n_train
        if batch is not None and batch % self.micro_batch:
            what = "batch_size" if self.batch_size is not None else "n_train (the full batch)"
            raise ConfigError(f"micro_batch={self.micro_batch} must divide {what}={batch}")

    # -- identity -------------------------------------------------------------------------
    def to_dict(self) -> dict:
        """Plain-JSON form (round-trips through :meth:`from_dict`)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> RunConfig:
        """Build from :meth:`to_dict` output, rejecting unknown fields by name."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown config fields {unknown}; known fields: {sorted(known)}")
        return cls(**data).validate()

    def identity(self) -> str:
        """A short hash of every field that affects results (``name``, ``device`` and checkpointing excluded).

        The fields of :data:`LATER_FIELDS` enter the hash only when they differ from their defaults, so a
        configuration that does not use them keeps the identity (and run folder) it had before they existed.
        """
        d = _plain_zeros(self.to_dict())  # -0.0 is the run of 0.0 (``--rho -0.0`` is ``--rho 0``)
        for key in ("name", "checkpoint_every", "checkpoint_seconds", "device"):
            d.pop(key)
        for key, default in LATER_FIELDS.items():
            if d[key] == default:
                d.pop(key)
        blob = json.dumps(d, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:10]

    def run_name(self) -> str:
        """Folder name of the run: readable prefix + identity hash."""
        label = f"{self.optimizer}-rho{self.rho:g}" if ascent_of(self.optimizer).has_radius else self.optimizer
        if self.micro_batch is not None:
            label = f"msam{self.micro_batch}-rho{self.rho:g}"
        if self.momentum > 0:
            label += f"-{'nesterov' if self.nesterov else 'hb'}{self.momentum:g}"
        if self.sam_start > 0:
            label += f"-from{self.sam_start}"
        return f"{self.task}-{label}-eta{self.eta:g}-{self.identity()}"

    def replace(self, **changes: Any) -> RunConfig:
        """A validated copy with some fields changed."""
        check_field_names(changes, "RunConfig.replace")
        return dataclasses.replace(self, **changes).validate()


# --------------------------------------------------------------------------------------------
# Presets. The `paper` values are the official code's defaults (image_classification.py, transformer.py);
# where the paper's value is UNVERIFIED (CIFAR eta/rho, measurement cadence) the choice is documented here and
# in the book, and every field can be overridden.
# --------------------------------------------------------------------------------------------

_PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "mnist": {
        "paper": dict(eta=0.01, n_train=None, model={}, steps=20000, measure_every=100, k=1),
        # cpu: 1000 examples, a 3-layer width-128 MLP and a large step (2/eta = 1.6, just above the initial
        # sharpness ~1.44) so that GD reaches its edge within ~200 steps and SAM's edge is crossed at once.
        "cpu": dict(
            eta=1.25,
            n_train=1000,
            n_test=2000,
            model=dict(depth=3, width=128),
            steps=600,
            measure_every=20,
            k=3,
            official_every=5,
        ),
        "smoke": dict(
            eta=0.05, n_train=256, n_test=256, model=dict(depth=3, width=32), steps=30, measure_every=10, k=2
        ),
    },
    "cifar10": {
        # eta/rho for CIFAR are UNVERIFIED in the paper; eta=0.001 follows a third-party run of the official code.
        "paper": dict(eta=0.001, n_train=1000, model={}, steps=20000, measure_every=100, k=1),
        # cpu: half the channels on the first 256 images (second derivatives through convolutions are slow on
        # a CPU); eta = 0.01 puts 2/eta = 200 below the sharpness GD settles at (~230), so GD sits at its edge.
        # 150 steps: every run is at its edge from the check at step 25, and each claim's verdict on 250-step
        # runs was the same on their first 150 steps (the extra 100 steps cost 5 of CI's 40 minutes).
        "cpu": dict(
            eta=0.01,
            n_train=256,
            n_test=1000,
            model=dict(feature_multiplier=8),
            steps=150,
            measure_every=25,
            k=2,  # the top two eigenvalues crowd at the edge on this network (chapter 4 measures lambda_2/lambda_1)
            official_every=5,
        ),
        "smoke": dict(
            eta=0.005,
            n_train=128,
            n_test=128,
            model=dict(feature_multiplier=4),
            steps=30,
            measure_every=10,
            k=2,
        ),
    },
    "shakespeare": {
        "paper": dict(eta=0.1, batch_size=128, loss="cross_entropy", model={}, steps=20000, measure_every=200, k=1),
        # cpu: 2 layers, width 64, batches of 32 sequences; eta = 0.1 as the paper (2/eta = 20).
        "cpu": dict(
            eta=0.1,
            batch_size=32,
            loss="cross_entropy",
            model=dict(num_layers=2, num_heads=4, key_size=16, d_model=64),
            steps=250,
            measure_every=25,
            k=1,
            official_every=5,
            measure_data="both",
        ),
        "smoke": dict(
            eta=0.1,
            batch_size=8,
            loss="cross_entropy",
            model=dict(num_layers=1, num_heads=2, key_size=8, d_model=16, seq_len=16),
            steps=20,
            measure_every=10,
            k=1,
            measure_data="both",
        ),
    },
}


#: The radius the official code's README and the paper's main figures use (Figures 3 and 4 of
#: https://arxiv.org/abs/2309.12488); a chapter's main statements are about it.
PAPER_RHO = 0.1

#: The rho values each chapter sweeps (GD, rho = 0, is always added). The paper's README uses rho = 0.1.
SWEEP_RHOS: dict[str, dict[str, tuple[float, ...]]] = {
    "mnist": {"paper": (0.03, 0.1, 0.3), "cpu": (0.03, 0.1, 0.3), "smoke": (0.1,)},
    "cifar10": {"paper": (0.03, 0.1, 0.3), "cpu": (0.03, 0.1, 0.3), "smoke": (0.1,)},
    "shakespeare": {"paper": (0.03, 0.1, 0.3), "cpu": (0.03, 0.1, 0.3), "smoke": (0.1,)},
}


def preset_config(task: str, preset: str, rho: float = 0.0, **overrides: Any) -> RunConfig:
    """The configuration of ``task`` at ``preset`` with radius ``rho`` (0 = GD), plus any overrides.

    The optimiser follows from ``rho`` (``gd`` for 0, ``sam`` otherwise) unless given explicitly.
    """
    _choice("task", task, TASKS)
    _choice("preset", preset, PRESETS)
    fields = dict(_PRESETS[task][preset])
    fields["model"] = dict(fields.get("model", {}))
    if preset == "paper":
        fields.setdefault("device", "auto")
    else:
        fields.setdefault("device", "cpu")
    fields.update(task=task, rho=float(rho) + 0.0, optimizer="gd" if rho == 0 else "sam")  # + 0.0: -0.0 is 0.0
    check_field_names(overrides, "preset_config")
    fields.update(overrides)
    return RunConfig(**fields).validate()


# --------------------------------------------------------------------------------------------
# The stochastic-SAM chapter ("Beyond the paper"): MNIST on the cpu preset's model and data (eta = 1.25, so
# 2/eta = 1.6; n = 1000), SAM at several batch sizes with SGD baselines, and m-SAM on the full batch.
# --------------------------------------------------------------------------------------------

#: Per preset: the base MNIST preset, the grids (batch sizes of SAM and of SGD, m-SAM's micro-batch sizes on the full
#: batch) and the run settings. ``paper`` is the chapter's full design on the same model (it has no paper-scale
#: counterpart: the paper does not vary the batch); ``cpu`` is the book's, cut to fit its build budget.
STOCHASTIC_PRESETS: dict[str, dict[str, Any]] = {
    "smoke": dict(
        base="smoke",
        rho=0.1,
        batch_sizes=(256, 32),
        sgd_batch_sizes=(32,),
        micro_batches=(64,),
        run=dict(steps=10, measure_every=5, noise_every=2, drift_every=1, noise_batches=4, hutchinson_probes=2),
    ),
    # cpu: the design's predictions at three batch sizes and two micro-batch sizes, in 400 steps (when this preset
    # was chosen, every verdict on the design's 600-step runs was the same on their first 400 steps).
    "cpu": dict(
        base="cpu",
        rho=0.1,
        batch_sizes=(1000, 100, 25),
        sgd_batch_sizes=(1000, 25),
        micro_batches=(100, 25),
        run=dict(steps=400, measure_every=20, noise_every=5, drift_every=1),
    ),
    "paper": dict(
        base="cpu",
        rho=0.1,
        batch_sizes=(1000, 250, 100, 50, 25),
        sgd_batch_sizes=(1000, 25),
        micro_batches=(100, 25),
        run=dict(steps=600, measure_every=20, noise_every=5, drift_every=1),
    ),
}


def stochastic_config(
    preset: str, *, batch_size: int, rho: float, micro_batch: int | None = None, **overrides: Any
) -> RunConfig:
    """One run of the stochastic-SAM chapter: MNIST at ``STOCHASTIC_PRESETS[preset]``, batch ``batch_size``.

    ``batch_size`` equal to the training set is the full batch (``batch_size=None`` in the run); a smaller one is
    measured on the stepped minibatch and on the full batch (``measure_data="both"``). Every check measures ``Q``
    and the oscillation sign, every ``noise_every``-th the gradient noise; SAM runs also the drift. ``rho = 0`` is
    SGD; ``micro_batch`` makes it m-SAM.
    """
    _choice("preset", preset, PRESETS)
    spec = STOCHASTIC_PRESETS[preset]
    fields: dict[str, Any] = dict(spec["run"])
    n = _PRESETS["mnist"][spec["base"]]["n_train"]
    _positive("batch_size", batch_size, integer=True)
    if batch_size > n:
        raise ConfigError(f"batch_size={batch_size} exceeds the {n} training examples of the {preset} preset")
    minibatch = batch_size < n
    fields.update(
        batch_size=batch_size if minibatch else None,
        measure_data="both" if minibatch else "batch",
        k=1,
        official_every=0,
        batch_sharpness=True,
        micro_batch=micro_batch,
    )
    if rho == 0:
        fields["drift_every"] = 0  # SGD's two steps have no ascent part: the residual is zero
    fields.update(overrides)
    return preset_config("mnist", spec["base"], rho=rho, **fields)
