"""The one training solver for every task: the batch loop, the step, validation metrics and the test stage.

The loop (epochs, best state, early stopping, atomic checkpoints, resume) is :class:`bm2.solvers.base.BaseSolver`;
this class adds what every task shares: one step (``run_model`` -> objective terms -> weighted loss -> update)
used by train and valid alike, optimiser groups and schedules (:mod:`bm2.solvers.optim`), gradient clipping,
an optional EMA of the weights, frozen sub-modules (chained XPs), the task's validation metrics (so the best
state can be chosen by accuracy or F1-macro) and the task's test evaluation. The test split is never used to
select anything: it is evaluated once, on the best state. With ``test_each_epoch`` (``test.each_epoch``) the
task's quick test metrics of every epoch are also recorded (history stage ``test_epoch``), only so that reports can
show a published, optimistic selection rule (e.g. Du-IN's: the best validation epoch, ties broken by test
accuracy) in a column of its own; they select nothing.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import typing as tp

import torch
from tqdm import tqdm

from .. import distrib
from ..data import Datasets, collate
from ..data.loader import BatchLoader, BufferPool
from ..objectives import Objective, TermMeans
from ..tasks import Task, run_model
from ..tasks.classification import addon_metrics
from ..tasks.inference import InferenceAddOns
from ..utils.precision import autocast, autocast_dtype
from .base import BaseSolver, CheckpointError, HistoryLink
from .optim import build_ema, build_optimizer, build_scheduler, param_groups

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class OptimParams:
    """Optimisation settings (``optim.*`` in the config); defaults reproduce brainmagick's Adam recipe.

    ``best_metric``: ``loss`` or a validation metric of the task (``accuracy``, ``balanced_accuracy``,
    ``f1_macro``, ``pearson`` ...); None takes the task's default (:attr:`bm2.tasks.Task.best`).
    ``amp``: bfloat16 autocast on CUDA; ``amp_cpu``: also on CPUs with native bf16 (detected; float32 elsewhere).
    Losses and scores stay float32 either way (:mod:`bm2.utils.precision`).
    ``compile``: the training forward goes through ``torch.compile`` (inductor; its first steps compile, tens of
    seconds; validation, test and the saved weights use the uncompiled model). Measured 1.1x the eager step for
    the convolution-bound paper-size SimpleConv on the 2-core CPU (README, Performance).
    """

    lr: float = 3e-4
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    batch_size: int = 64
    epochs: int = 12
    max_batches: int | None = None
    patience: int | None = 10
    clip_grad: float = 0.0
    scheduler: str | None = None
    amp: bool = True
    amp_cpu: bool = False
    compile: bool = False
    name: str = "adam"
    lr_mult: dict = dataclasses.field(default_factory=dict)
    no_decay_norm_bias: bool = False
    scheduler_per_step: bool = False
    warmup: float = 0.0
    min_lr_ratio: float = 0.0
    ema: float = 0.0
    swa: bool = False
    swa_start: int = 1
    best_metric: str | None = None
    best_mode: str | None = None


def _flatten(tree: dict, prefix: str = "") -> dict[str, tp.Any]:
    out: dict[str, tp.Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(_flatten(value, name + "."))
        else:
            out[name] = value
    return out


def _ignored(key: str, patterns: tp.Sequence[str]) -> bool:
    import fnmatch

    return any(fnmatch.fnmatch(key, p) or key.startswith(p + ".") for p in patterns)


class Solver(BaseSolver):
    """Trains ``model`` with ``objective`` on ``datasets`` and evaluates it with ``task``.

    Parameters
    ----------
    model : a registered model (``run_model`` calls it with the batch keys it declares).
    objective : ``(batch, outputs) -> terms`` (:mod:`bm2.objectives`).
    datasets : the three splits (:func:`bm2.data.build_datasets`), with the targets the task needs.
    task : the task (:mod:`bm2.tasks`): validation metrics and test evaluation.
    optim : :class:`OptimParams`; ``batch_size`` is the **total** over processes.
    frozen : module-name prefixes whose parameters are not trained (and which stay in eval mode).
    num_workers, loader : ``threads``: :class:`bm2.data.loader.BatchLoader` with ``num_workers`` threads filling
        recycled buffers (0: in this thread); ``processes``: torch's ``DataLoader`` with ``num_workers`` worker
        processes. Both yield the same batches in the same order.
    inference : test-time add-on variants (:func:`bm2.tasks.inference.variants`: denoising, TTA); the test stage
        reports each one's metrics next to the plain ones, under the variant's suffix (``f1_macro_tta`` ...).
    test_each_epoch : also record the task's quick test metrics after every epoch (stage ``test_epoch``; never
        used for selection or stopping).
    batch_sampler : a sampler of training batches (lists of indices, with ``set_epoch``), e.g.
        :class:`bm2.data.samplers.ClassStructuredBatchSampler`, built with this process's rank under DDP (each
        rank its own share of the epoch's batches); None: shuffled batches of ``batch_size``.

    An objective with a ``set_epoch(epoch)`` method is told the epoch before each train and valid stage (the
    codebook objective's warm-up).
    """

    def __init__(self, folder: tp.Any, link: HistoryLink, model: torch.nn.Module, objective: Objective,
                 datasets: Datasets, task: Task, optim: OptimParams = OptimParams(), *, num_workers: int = 0,
                 loader: str = "threads", device: str = "cpu", seed: int = 0, test_ks: tp.Sequence[int] = (1, 5, 10),
                 test_batch_size: int = 128, frozen: tp.Sequence[str] = (),
                 inference: tp.Sequence[InferenceAddOns] = (), test_each_epoch: bool = False,
                 batch_sampler: tp.Any | None = None) -> None:
        best_metric, best_mode = task.best if optim.best_metric is None else (optim.best_metric, optim.best_mode)
        best_mode = best_mode or ("min" if best_metric == "loss" else "max")
        super().__init__(folder, link, epochs=optim.epochs, patience=optim.patience,
                         best_metric=("valid", best_metric), best_mode=best_mode)
        self.device = torch.device(device)
        self.model = model.to(self.device)
        self.objective = objective.to(self.device)
        self.datasets = datasets
        self.task = task
        self.optim = optim
        self.per_rank_batch = max(1, optim.batch_size // distrib.world_size())
        if loader not in ("threads", "processes"):
            raise ValueError(f"loader={loader!r}: valid values are 'threads' and 'processes'")
        self.num_workers = num_workers
        self.loader = loader
        self.seed = seed
        self.test_ks = tuple(test_ks)
        self.test_batch_size = test_batch_size
        self.frozen = tuple(frozen)
        self.inference = tuple(inference)
        self.test_each_epoch = bool(test_each_epoch)
        self.batch_sampler = batch_sampler
        # the loaders' batch buffers, kept for the whole run and shared by the training and validation loaders
        # (which never run at once): a pool per loader would fault the pages of its buffers in at every epoch
        self._pool = BufferPool(max_per_shape=max(num_workers, 1) * BatchLoader.PREFETCH + 2)
        self.ignore_config: tuple[str, ...] = ("dora", "slurm")  # plus dora.exclude (set by the builder)
        self.amp_dtype = autocast_dtype(self.device, cuda=optim.amp, cpu=optim.amp and optim.amp_cpu)
        self.amp = self.amp_dtype is not None
        for name, param in self.model.named_parameters():
            if any(name == f or name.startswith(f + ".") for f in self.frozen):
                param.requires_grad_(False)
        groups = param_groups({"": self.model, "objective": self.objective}, optim.lr, optim.weight_decay,
                              optim.lr_mult, optim.no_decay_norm_bias)
        betas = (float(optim.betas[0]), float(optim.betas[1]))
        self.optimizer = build_optimizer(groups, optim.name, optim.lr, betas, optim.weight_decay)
        steps = self._steps_per_epoch()
        self.scheduler = build_scheduler(self.optimizer, optim.scheduler, optim.epochs, steps,
                                         optim.scheduler_per_step, optim.warmup, optim.min_lr_ratio)
        self.ema = build_ema(self.model, optim.ema)
        if optim.swa and self.ema is not None:
            raise ValueError("optim.swa and optim.ema both average the weights: choose one")
        # SWA: a uniform average of the weights at the end of each epoch from optim.swa_start (BatchNorm statistics
        # averaged alongside, use_buffers=True, rather than recomputed with a pass over the data)
        self.swa = torch.optim.swa_utils.AveragedModel(self.model, use_buffers=True) if optim.swa else None
        self.register_stateful(model=self.model, loss=self.objective, optimizer=self.optimizer)
        if self.scheduler is not None:
            self.register_stateful(scheduler=self.scheduler)
        if self.ema is not None:
            self.register_stateful(ema=self.ema)
        if self.swa is not None:
            self.register_stateful(swa=self.swa)
        if distrib.is_distributed():
            self.ddp_model: torch.nn.Module = torch.nn.parallel.DistributedDataParallel(self.model)
        else:
            self.ddp_model = self.model
        # the same parameters: saving, averaging and evaluation keep using self.model
        self.train_model = tp.cast(torch.nn.Module, torch.compile(self.ddp_model)) if optim.compile else self.ddp_model
        logger.info("training forward in %s on %s%s", "bfloat16 autocast" if self.amp else "float32", self.device,
                    "; torch.compile (optim.compile): the first steps compile, tens of seconds the first time "
                    "(torch's inductor cache: TORCHINDUCTOR_CACHE_DIR, by default /tmp/torchinductor_$USER)"
                    if optim.compile else "")
        units = ("thread", "threads") if loader == "threads" else ("worker process", "worker processes")
        path = getattr(datasets.train, "brain_window_path", None)  # SegmentDataset's; not grouped h5 datasets'
        logger.info("loader: %d %s%s", num_workers, units[num_workers != 1],
                    f"; brain windows by the {path()}" if path is not None else "")
        self.extra_checkpoint["data"] = {"fingerprint": datasets.fingerprint, "n_recordings": len(datasets.recordings),
                                         "vocabulary": datasets.vocabulary, "targets": list(datasets.targets)}

    # ----------------------------------------------------------------- state
    def check_resume(self, state: dict[str, tp.Any]) -> None:
        """Refuse to resume a checkpoint written on other data (another dataset under the same overrides)."""
        saved = (state.get("data") or {}).get("fingerprint")
        mine = self.extra_checkpoint["data"]["fingerprint"]
        if saved is not None and saved != mine:
            n_saved = (state.get("data") or {}).get("n_recordings")
            raise CheckpointError(
                f"{self.checkpoint_path} was trained on other data ({n_saved} recordings, fingerprint {saved}) than "
                f"the data selected now ({len(self.datasets.recordings)} recordings, fingerprint {mine}): an XP never "
                "resumes on other data. Run it as its own XP by giving the dataset a name that enters the signature "
                "(e.g. `studies.bids.name=MYDATA`, or `dset.name=MYDATA`), or start this one over with "
                "`dora run --clear`")

        self._check_config(state)

    def _check_config(self, state: dict[str, tp.Any]) -> None:
        """Refuse to resume when the configuration that trained the checkpoint differs from today's (a default or a
        recipe changed under the same signature): keys in ``ignore_config`` (paths, devices ...) may differ."""
        saved, mine = state.get("config"), self.extra_checkpoint.get("config")
        if not isinstance(saved, dict) or not isinstance(mine, dict):
            return
        old, new = _flatten(saved), _flatten(mine)
        # Keys added since (new keys default to the old behaviour) are not a change; a changed value is.
        changed = sorted(k for k in set(old) & set(new) if old[k] != new[k] and not _ignored(k, self.ignore_config))
        if changed:
            show = ", ".join(f"{k}: {old[k]!r} -> {new[k]!r}" for k in changed[:5])
            raise CheckpointError(
                f"{self.checkpoint_path} was trained with another configuration under the same signature ({show}"
                f"{' ...' if len(changed) > 5 else ''}): a default or a recipe changed since. Resuming would mix "
                "both; start this XP over with `dora run --clear ...`, or keep the old behaviour with explicit "
                "overrides")

    def eval_model(self) -> torch.nn.Module:
        """The weights evaluated and kept as best: the EMA or the SWA average when enabled (SWA once it has
        averaged an epoch), else the model."""
        if self.ema is not None:
            return self.ema.module
        if self.swa is not None and int(self.swa.n_averaged) > 0:
            return self.swa.module
        return self.model

    def copy_best_state(self) -> dict[str, tp.Any]:
        return {k: v.detach().cpu().clone() for k, v in self.eval_model().state_dict().items()}

    def load_best_state(self, state: dict[str, tp.Any]) -> None:
        self.model.load_state_dict(state)
        for average in (self.ema, self.swa):
            if average is not None:
                average.module.load_state_dict(state)

    def write_manifest(self) -> None:
        """Write the split manifest (``split.csv``: which recording / block / window went where) and the label
        vocabulary (``vocabulary.json``) into the XP folder, atomically; rank 0 only."""
        if not distrib.is_rank_zero():
            return
        import json

        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / "split.csv"
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        self.datasets.manifest().to_csv(tmp, index=False)
        os.replace(tmp, path)
        if self.datasets.vocabulary is not None:
            vocab = self.folder / "vocabulary.json"
            tmp = vocab.with_name(f".{vocab.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(self.datasets.vocabulary, indent=1))
            os.replace(tmp, vocab)

    def run(self) -> dict:
        self.write_manifest()
        return super().run()

    # ----------------------------------------------------------------- data
    def _steps_per_epoch(self) -> int:
        if self.batch_sampler is not None:
            n = len(self.batch_sampler)
            return n if self.optim.max_batches is None else min(n, self.optim.max_batches)
        n = len(self.datasets.train) // max(1, self.per_rank_batch * distrib.world_size())
        n = max(1, n)
        return n if self.optim.max_batches is None else min(n, self.optim.max_batches)

    def _loader(self, split: str, shuffle: bool) -> BatchLoader | torch.utils.data.DataLoader:
        dataset = self.datasets[split]
        if shuffle and hasattr(dataset, "set_epoch"):
            dataset.set_epoch(self.epoch)  # dset.grouping.dynamic: groups redrawn, seeded by the epoch
        if len(dataset) == 0:
            raise ValueError(f"the {split} split is empty: change dset.split or select more recordings")
        if split == "train" and shuffle and self.batch_sampler is not None:
            self.batch_sampler.set_epoch(self.epoch)
            if self.loader == "threads":
                return BatchLoader(dataset, batch_sampler=self.batch_sampler, num_workers=self.num_workers,
                                   pool=self._pool)
            return torch.utils.data.DataLoader(dataset, batch_sampler=self.batch_sampler, collate_fn=collate,
                                               num_workers=self.num_workers, persistent_workers=False,
                                               pin_memory=self.device.type == "cuda")
        sampler: torch.utils.data.Sampler | None = None
        generator = torch.Generator().manual_seed(self.seed * 1000 + self.epoch)  # same order after a resume
        if distrib.is_distributed():
            sampler = torch.utils.data.DistributedSampler(dataset, shuffle=shuffle, seed=self.seed,
                                                          drop_last=shuffle)
            sampler.set_epoch(self.epoch)
            shuffle = False
        drop_last = split == "train" and len(dataset) >= 2 * self.per_rank_batch  # CLIP needs full batches
        if self.loader == "threads":
            return BatchLoader(dataset, batch_size=self.per_rank_batch, shuffle=shuffle, sampler=sampler,
                               generator=generator, drop_last=drop_last, num_workers=self.num_workers,
                               pool=self._pool)
        return torch.utils.data.DataLoader(
            dataset, batch_size=self.per_rank_batch, shuffle=shuffle, sampler=sampler, generator=generator,
            collate_fn=collate, num_workers=self.num_workers, drop_last=drop_last,
            persistent_workers=False, pin_memory=self.device.type == "cuda")

    def _autocast(self) -> contextlib.AbstractContextManager:
        return autocast(self.device, self.amp_dtype)

    def _terms(self, batch: dict[str, torch.Tensor], model: torch.nn.Module) -> dict[str, torch.Tensor]:
        with self._autocast():
            outputs = run_model(model, batch, self.device)
        return self.objective(batch, outputs)  # in float32: objectives cast the outputs

    def _tell_epoch(self) -> None:
        set_epoch = getattr(self.objective, "set_epoch", None)
        if callable(set_epoch):
            set_epoch(self.epoch)

    def _set_train_mode(self) -> None:
        self.model.train()
        for name, module in self.model.named_modules():
            if name and any(name == f or name.startswith(f + ".") for f in self.frozen):
                module.eval()  # frozen: no dropout, no BatchNorm statistics update

    # ----------------------------------------------------------------- stages
    def train_stage(self) -> dict[str, float]:
        self._tell_epoch()
        self._set_train_mode()
        loader = self._loader("train", shuffle=True)
        total = len(loader) if self.optim.max_batches is None else min(len(loader), self.optim.max_batches)
        sums: dict[str, float] = {}
        count, grad_norm = 0, 0.0
        bar = tqdm(loader, total=total, desc=f"train {self.epoch}", leave=False,
                   disable=None if distrib.is_rank_zero() else True)
        for i, batch in enumerate(bar):
            if i >= total:
                break
            terms = self._terms(batch, self.train_model)
            loss = self.objective.total(terms)
            if not math.isfinite(loss.item()):
                raise FloatingPointError(f"non-finite training loss at epoch {self.epoch}, batch {i}: lower "
                                         "optim.lr or enable optim.clip_grad")
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if self.optim.clip_grad:
                grad_norm += float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.optim.clip_grad))
            self.optimizer.step()
            if self.ema is not None:
                self.ema.update_parameters(self.model)
            if self.scheduler is not None and self.optim.scheduler_per_step:
                self.scheduler.step()
            sums["loss"] = sums.get("loss", 0.0) + loss.item()
            for name, value in terms.items():
                if name != "loss" and len(terms) > 1:
                    sums[name] = sums.get(name, 0.0) + float(value.detach())
            count += 1
            bar.set_postfix(loss=f"{sums['loss'] / count:.4f}")
        if self.scheduler is not None and not self.optim.scheduler_per_step:
            self.scheduler.step()
        if self.swa is not None and self.epoch >= self.optim.swa_start:
            self.swa.update_parameters(self.model)
        metrics = {k: v / max(count, 1) for k, v in sums.items()}
        metrics["lr"] = self.optimizer.param_groups[0]["lr"]
        if self.optim.clip_grad:
            metrics["grad_norm"] = grad_norm / max(count, 1)
        return distrib.average_metrics(metrics, count)

    def _accumulator(self, split: str) -> tp.Any:
        """The task's streaming validation metrics (None for tasks without: retrieval)."""
        try:
            return self.task.accumulator(self.datasets[split])
        except NotImplementedError:
            return None

    @torch.no_grad()
    def valid_stage(self) -> dict[str, float]:
        self._tell_epoch()
        model = self.eval_model()
        model.eval()
        means = TermMeans(self.objective, every_term=False)
        accumulator = self._accumulator("valid")
        for batch in self._loader("valid", shuffle=False):
            with self._autocast():
                outputs = run_model(model, batch, self.device)
            if accumulator is not None:
                accumulator.update(batch, outputs)  # the task's metrics from the same forward pass
            means.update(self.objective(batch, outputs), len(batch["brain"]))
        metrics, count = means.compute(), means.count
        if accumulator is not None:
            # Computed on this process's share of the split (under DDP, averaged across processes below).
            metrics.update({k: float(v) for k, v in accumulator.compute().items() if isinstance(v, (int, float))})
        metrics = distrib.average_metrics(metrics, count)
        if self.best_metric[1] not in metrics and accumulator is None:
            # retrieval: its test metrics on the valid split, when the best epoch is selected on them
            metrics.update(self.task_metrics("valid", quick=True))
        if self.best_metric[1] not in metrics:
            raise KeyError(f"optim.best_metric={self.best_metric[1]!r} is not a validation metric of task "
                           f"{self.task.name!r}; available: {sorted(metrics)}")
        return metrics

    def task_metrics(self, split: str, **kwargs: tp.Any) -> dict[str, float]:
        """The task's metrics of the evaluated model on ``split``."""
        result = self.task.evaluate(self.eval_model(), self.datasets[split],
                                    getattr(self.objective, "scores", None), ks=self.test_ks,
                                    batch_size=self.test_batch_size, device=self.device,
                                    num_workers=self.num_workers, train=self.datasets.train,
                                    objective=self.objective, **kwargs)
        return {k: float(v) for k, v in result.metrics.items() if isinstance(v, (int, float))}

    def monitor_stages(self) -> dict[str, dict[str, float]]:
        """``test_epoch``: the task's quick test metrics of this epoch's model when ``test_each_epoch``."""
        if not self.test_each_epoch or len(self.datasets.test) == 0:
            return {}
        return {"test_epoch": self.task_metrics("test", quick=True)}

    def test_stage(self) -> dict[str, float]:
        if len(self.datasets.test) == 0:
            raise ValueError("the test split is empty: change dset.split or select more recordings")
        metrics = self.task_metrics("test")
        for addons in self.inference:
            variant = self.task_metrics("test", addons=addons)
            metrics = addon_metrics(metrics, variant, addons.suffix)
            logger.info("test with %s: F1-macro %.1f%% (without: %.1f%%), balanced accuracy %.1f%% (without: %.1f%%)",
                        addons.describe(), 100 * variant["f1_macro"], 100 * metrics["f1_macro"],
                        100 * variant["balanced_accuracy"], 100 * metrics["balanced_accuracy"])
        return metrics

    def test_settings(self) -> dict[str, tp.Any]:
        """The inference add-ons' settings (``{}`` without any), recorded next to the test metrics."""
        settings: dict[str, tp.Any] = {}
        for addons in self.inference:
            settings.update(addons.settings())
        return settings
