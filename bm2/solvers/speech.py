"""The brainmagick task: map brain windows to speech features (contrastive or regression), then retrieve.

Train and valid stages minimise the configured loss (CLIP or MSE) between the brain encoder's output and the
speech features of the same window; the test stage ranks all unique test segments for every test window
(:mod:`bm2.evaluation`) and reports segment- and word-level top-k with chance levels.
"""

from __future__ import annotations

import contextlib
import logging
import math
import typing as tp

import torch
from tqdm import tqdm

from .. import distrib
from ..data import Datasets, collate
from ..tasks import get_task
from .base import BaseSolver, HistoryLink

logger = logging.getLogger(__name__)


class SpeechSolver(BaseSolver):
    """Trains a brain encoder against speech features and evaluates retrieval on the test split.

    Parameters
    ----------
    model, loss : the brain encoder and the training objective (``loss(estimate, features)``).
    datasets : the three splits (:func:`bm2.data.build_datasets`).
    batch_size : the **total** batch size; each of ``world_size`` processes takes its share.
    max_batches : cap on training batches per epoch (None = the whole split).
    clip_grad : max gradient norm (0 = no clipping).
    scheduler : None or ``"cosine"`` (cosine decay over ``epochs``).
    amp : mixed precision (bfloat16 autocast) when running on CUDA.
    """

    def __init__(self, folder: tp.Any, link: HistoryLink, model: torch.nn.Module, loss: torch.nn.Module,
                 datasets: Datasets, *, lr: float = 3e-4, betas: tuple[float, float] = (0.9, 0.999),
                 weight_decay: float = 0.0, batch_size: int = 64, epochs: int = 10, max_batches: int | None = None,
                 patience: int | None = 10, clip_grad: float = 0.0, scheduler: str | None = None,
                 amp: bool = True, num_workers: int = 0, device: str = "cpu", seed: int = 0,
                 test_ks: tp.Sequence[int] = (1, 5, 10), test_batch_size: int = 128,
                 task: str = "retrieval") -> None:
        super().__init__(folder, link, epochs=epochs, patience=patience)
        self.device = torch.device(device)
        self.model = model.to(self.device)
        self.loss = loss.to(self.device)
        self.datasets = datasets
        self.per_rank_batch = max(1, batch_size // distrib.world_size())
        self.max_batches = max_batches
        self.clip_grad = clip_grad
        self.num_workers = num_workers
        self.seed = seed
        self.test_ks = tuple(test_ks)
        self.test_batch_size = test_batch_size
        self.task = task
        self.amp = amp and self.device.type == "cuda"
        params = list(self.model.parameters()) + list(self.loss.parameters())
        self.optimizer = torch.optim.Adam(params, lr=lr, betas=betas, weight_decay=weight_decay)
        self.scheduler: torch.optim.lr_scheduler.LRScheduler | None = None
        if scheduler == "cosine":
            self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, T_max=max(epochs, 1))
        elif scheduler not in (None, "none"):
            raise ValueError(f"unknown scheduler {scheduler!r}; use null or 'cosine'")
        self.register_stateful(model=self.model, loss=self.loss, optimizer=self.optimizer)
        if self.scheduler is not None:
            self.register_stateful(scheduler=self.scheduler)
        if distrib.is_distributed():
            self.ddp_model: torch.nn.Module = torch.nn.parallel.DistributedDataParallel(self.model)
        else:
            self.ddp_model = self.model

    # ----------------------------------------------------------------- data
    def _loader(self, split: str, shuffle: bool) -> torch.utils.data.DataLoader:
        dataset = self.datasets[split]
        if len(dataset) == 0:
            raise ValueError(f"the {split} split is empty: change dset.split or select more recordings")
        sampler: torch.utils.data.Sampler | None = None
        generator = torch.Generator().manual_seed(self.seed * 1000 + self.epoch)  # same order after a resume
        if distrib.is_distributed():
            sampler = torch.utils.data.DistributedSampler(dataset, shuffle=shuffle, seed=self.seed,
                                                          drop_last=shuffle)
            sampler.set_epoch(self.epoch)
            shuffle = False
        drop_last = split == "train" and len(dataset) >= 2 * self.per_rank_batch  # CLIP needs full batches
        return torch.utils.data.DataLoader(
            dataset, batch_size=self.per_rank_batch, shuffle=shuffle, sampler=sampler, generator=generator,
            collate_fn=collate, num_workers=self.num_workers, drop_last=drop_last,
            persistent_workers=False, pin_memory=self.device.type == "cuda")

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.amp:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _step_loss(self, batch: dict[str, torch.Tensor], model: torch.nn.Module) -> torch.Tensor:
        with self._autocast():
            est = model(batch["brain"].to(self.device), batch["subject_index"].to(self.device),
                        batch["positions"].to(self.device), batch["mask"].to(self.device))
        return self.loss(est.float(), batch["features"].to(self.device))

    # ----------------------------------------------------------------- stages
    def train_stage(self) -> dict[str, float]:
        self.model.train()
        loader = self._loader("train", shuffle=True)
        total = len(loader) if self.max_batches is None else min(len(loader), self.max_batches)
        loss_sum, count, grad_norm = 0.0, 0, 0.0
        bar = tqdm(loader, total=total, desc=f"train {self.epoch}", leave=False,
                   disable=None if distrib.is_rank_zero() else True)
        for i, batch in enumerate(bar):
            if i >= total:
                break
            loss = self._step_loss(batch, self.ddp_model)
            if not math.isfinite(loss.item()):
                raise FloatingPointError(f"non-finite training loss at epoch {self.epoch}, batch {i}: lower "
                                         "optim.lr or enable optim.clip_grad")
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if self.clip_grad:
                grad_norm += float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip_grad))
            self.optimizer.step()
            loss_sum += loss.item()
            count += 1
            bar.set_postfix(loss=f"{loss_sum / count:.4f}")
        if self.scheduler is not None:
            self.scheduler.step()
        metrics = {"loss": loss_sum / max(count, 1), "lr": self.optimizer.param_groups[0]["lr"]}
        if self.clip_grad:
            metrics["grad_norm"] = grad_norm / max(count, 1)
        return distrib.average_metrics(metrics, count)

    @torch.no_grad()
    def valid_stage(self) -> dict[str, float]:
        self.model.eval()
        loss_sum, count = 0.0, 0
        for batch in self._loader("valid", shuffle=False):
            loss_sum += self._step_loss(batch, self.model).item() * len(batch["brain"])
            count += len(batch["brain"])
        return distrib.average_metrics({"loss": loss_sum / max(count, 1)}, count)

    def test_stage(self) -> dict[str, float]:
        test = self.datasets.test
        if len(test) == 0:
            raise ValueError("the test split is empty: change dset.split or select more recordings")
        task = get_task(self.task)
        return task.evaluate(self.model, test, getattr(self.loss, "scores", None), ks=self.test_ks,
                             batch_size=self.test_batch_size, device=self.device,
                             num_workers=self.num_workers).metrics
