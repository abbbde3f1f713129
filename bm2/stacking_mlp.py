"""The MLP meta-learner of a stack (``stack.meta=mlp``, the default; ``bm2/stacking.py`` says where it sits).

What the original did (DeMEGa, September-Labs/pnpl-2025-experiments, described in ``ANCHORS_WAVE2`` §1.3, "Stage 3
meta-learner"; CC BY-NC, so rebuilt from that description only, none of its code): on the concatenated raw logits of
the M base models (39 M features), BatchNorm -> Linear(39 M -> 512) -> SiLU -> BatchNorm -> Dropout(0.5) ->
Linear(512 -> 39), trained with AdamW and ReduceLROnPlateau (factor 0.5, patience 5); 5 seeds, the softmax of the
best 3 averaged. :class:`MetaMLP` is that network, and those are the defaults of :func:`fit_mlp_meta_learner`.

What the description leaves out, and what bm2 chose (all keyword arguments, ``stack.mlp.*`` in the config):

- **The data.** bm2 fits on the **validation** split's logits only (rows with label -1 left out); the test split
  never fits, stops or selects anything: :func:`fit_mlp_meta_learner` is given no test data, and the fitted
  :class:`MLPMetaLearner` only predicts.
- **What "best 3 of 5 seeds" is scored on, and what the plateau schedule and early stopping watch.** The
  validation items are split once into ``folds`` (5) stratified folds (drawn from ``seed``; the same folds for every
  seed, so the seeds are compared on the same items). For each seed and each fold, a network is trained on the other
  folds; after every epoch its cross-entropy on the held-out fold drives ReduceLROnPlateau and early stopping (best
  state by that loss; stop after ``patience`` = 10 epochs without a gain over ``min_delta`` = 1e-3 nats, at most
  ``epochs`` = 200; the threshold keeps separable logits, whose loss shrinks for ever, from running 200). The loss
  rather than F1-macro because a held-out fold of a grouped validation split has a few items per class, where
  F1-macro moves in steps. A seed's score is the F1-macro of its out-of-fold predictions over the whole validation
  split (ties: lower out-of-fold cross-entropy, then the earlier seed); the ``keep`` (3) best of the ``seeds`` (5)
  seeds ``seed``, ``seed + 1`` ... are kept.
- **The prediction.** A kept seed predicts the mean softmax of its ``folds`` fold networks (each was fitted on
  (folds - 1) / folds of the validation items); the stack predicts the mean of the kept seeds' softmax. The original
  presumably refitted one network per seed; cross-fitting is bm2's way of keeping a held-out score for every seed
  without giving up a fifth of a small validation split.
- **Optimiser settings, batches, loss.** AdamW at ``lr`` 1e-3 with ``weight_decay`` 1e-2 (PyTorch's defaults),
  shuffled mini-batches of ``batch_size`` 64 (a trailing batch of one item joins the previous one: BatchNorm needs
  two), plain cross-entropy on the class ids. The input BatchNorm stands in for a standardisation of the logits.
- **Determinism.** Everything runs on the CPU in one thread (restored afterwards) with the global RNG state forked:
  the same inputs and ``seed`` give the same probabilities, in any process, and the caller's RNG is untouched.
- A class absent from the validation labels is never a target; it keeps the (small) probability the networks give
  it, where the logistic meta-learner gives it 0.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import typing as tp

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F


class MetaMLPError(ValueError):
    """The validation split cannot train the MLP meta-learner as asked; the message says what to change."""


class MetaMLP(nn.Module):
    """DeMEGa's meta-learner network: BatchNorm -> Linear(``n_features`` -> ``hidden``) -> SiLU -> BatchNorm ->
    Dropout(``dropout``) -> Linear(``hidden`` -> ``n_classes``). Input ``[B, n_features]``, output logits."""

    def __init__(self, n_features: int, n_classes: int, hidden: int = 512, dropout: float = 0.5) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.BatchNorm1d(n_features), nn.Linear(n_features, hidden), nn.SiLU(),
                                 nn.BatchNorm1d(hidden), nn.Dropout(dropout), nn.Linear(hidden, n_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``[B, n_classes]``."""
        return self.net(x)


@contextlib.contextmanager
def _deterministic_cpu(seed: int) -> tp.Iterator[None]:
    """One CPU thread and a forked global RNG seeded with ``seed`` (weights, dropout), both restored on exit."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng(devices=[]), torch.enable_grad():
            torch.manual_seed(seed)
            yield
    finally:
        torch.set_num_threads(threads)


def _child_seed(*entropy: int) -> int:
    """A stable 31-bit seed from integers (numpy's SeedSequence, never Python's ``hash``)."""
    return int(np.random.SeedSequence([abs(int(e)) for e in entropy]).generate_state(1)[0] & 0x7FFFFFFF)


def stratified_folds(y: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """``[N]`` fold ids in ``0 .. folds - 1``: each class's items shuffled (``seed``) and dealt round the folds,
    continuing where the previous class stopped, so fold sizes differ by at most one."""
    rng = np.random.default_rng(seed)
    out = np.empty(len(y), dtype=np.int64)
    offset = 0
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        out[idx] = (offset + np.arange(len(idx))) % folds
        offset += len(idx)
    return out


def _batches(n: int, batch_size: int, generator: torch.Generator) -> list[torch.Tensor]:
    order = torch.randperm(n, generator=generator)
    chunks = list(order.split(batch_size))
    if len(chunks) > 1 and len(chunks[-1]) == 1:  # BatchNorm cannot train on one item
        chunks[-2] = torch.cat(chunks[-2:])
        chunks.pop()
    return chunks


def _train_fold(x: torch.Tensor, y: torch.Tensor, x_out: torch.Tensor, y_out: torch.Tensor, n_classes: int,
                seed: int, hidden: int, dropout: float, lr: float, weight_decay: float, batch_size: int, epochs: int,
                patience: int, min_delta: float, lr_factor: float, lr_patience: int) -> MetaMLP:
    """One network trained on ``x``/``y``, its best state by cross-entropy on the held-out ``x_out``/``y_out``."""
    with _deterministic_cpu(seed):
        model = MetaMLP(x.shape[1], n_classes, hidden, dropout)
        optimiser = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
        plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(optimiser, mode="min", factor=lr_factor,
                                                             patience=lr_patience)
        generator = torch.Generator().manual_seed(seed)
        best, best_state, waited = float("inf"), copy.deepcopy(model.state_dict()), 0
        for _ in range(epochs):
            model.train()
            for idx in _batches(len(x), batch_size, generator):
                loss = F.cross_entropy(model(x[idx]), y[idx])
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
            model.eval()
            with torch.no_grad():
                held_out = float(F.cross_entropy(model(x_out), y_out))
            plateau.step(held_out)
            if held_out < best - min_delta:
                best, best_state, waited = held_out, copy.deepcopy(model.state_dict()), 0
            else:
                waited += 1
                if waited >= patience:
                    break
        model.load_state_dict(best_state)
        model.eval()
    return model


def _softmax(models: tp.Sequence[MetaMLP], x: torch.Tensor) -> np.ndarray:
    """The mean softmax of ``models`` on ``x`` (float64)."""
    with torch.no_grad():
        return np.mean([F.softmax(m(x), dim=1).double().numpy() for m in models], axis=0)


@dataclasses.dataclass
class MLPMetaLearner:
    """A fitted MLP meta-learner: ``networks`` (per kept seed, its fold networks), ``seeds`` (all seeds tried),
    ``scores`` and ``losses`` (each seed's out-of-fold F1-macro and cross-entropy on the validation split),
    ``kept`` (the seeds averaged, best first), ``folds`` (each validation item's fold) and ``cv_f1_macro`` (the
    out-of-fold F1-macro of the kept seeds' mean: optimistic, the seeds were chosen on those predictions)."""

    networks: dict[int, list[MetaMLP]]
    seeds: list[int]
    scores: list[float]
    losses: list[float]
    kept: list[int]
    folds: np.ndarray
    cv_f1_macro: float
    n_classes: int

    @property
    def classes_(self) -> np.ndarray:
        """The columns of :meth:`predict_proba` (every class; scikit-learn's attribute name)."""
        return np.arange(self.n_classes)

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """``[N, n_classes]``: the mean softmax of the kept seeds (each the mean of its fold networks)."""
        features = torch.as_tensor(np.asarray(x), dtype=torch.float32)
        with _deterministic_cpu(0):
            return np.mean([_softmax(self.networks[s], features) for s in self.kept], axis=0)

    def describe(self) -> dict[str, tp.Any]:
        """What was fitted, for the history and the tables (JSON-ready)."""
        return {"meta": "mlp", "seeds": list(self.seeds), "kept": list(self.kept),
                "cv_f1_macro_per_seed": [float(s) for s in self.scores], "folds": int(self.folds.max()) + 1,
                "cv_f1_macro": float(self.cv_f1_macro)}


def fit_mlp_meta_learner(x: np.ndarray, y: np.ndarray, n_classes: int, seed: int = 0, seeds: int = 5, keep: int = 3,
                         folds: int = 5, hidden: int = 512, dropout: float = 0.5, lr: float = 1e-3,
                         weight_decay: float = 1e-2, batch_size: int = 64, epochs: int = 200, patience: int = 10,
                         min_delta: float = 1e-3, lr_factor: float = 0.5, lr_patience: int = 5) -> MLPMetaLearner:
    """Fit the MLP meta-learner on the **validation** features ``x`` ``[N, F]`` and class ids ``y`` ``[N]`` (-1:
    left out): ``seeds`` seeds x ``folds`` cross-fitted networks, the ``keep`` best seeds by out-of-fold F1-macro
    (see the module docstring). Never given test data. Raises :class:`MetaMLPError` when the split is too small."""
    from .tasks.classification import core_metrics

    if not 1 <= keep <= seeds:
        raise MetaMLPError(f"stack.mlp.keep={keep} must be between 1 and stack.mlp.seeds={seeds}")
    if folds < 2:
        raise MetaMLPError(f"stack.mlp.folds={folds}: the seeds are scored on held-out folds, use at least 2")
    seen = np.asarray(y) >= 0
    xs, ys = np.asarray(x, dtype=np.float32)[seen], np.asarray(y, dtype=np.int64)[seen]
    fold = stratified_folds(ys, folds, seed)
    sizes = np.bincount(fold, minlength=folds)
    if sizes.min() < 1 or len(ys) - sizes.max() < 2:
        raise MetaMLPError(f"{len(ys)} labelled validation items cannot make {folds} folds with two training items "
                           "each: lower stack.mlp.folds, use stack.meta=logistic or more validation items")
    xt, yt = torch.from_numpy(xs), torch.from_numpy(ys)
    hyper: dict[str, tp.Any] = dict(hidden=hidden, dropout=dropout, lr=lr, weight_decay=weight_decay,
                                    batch_size=batch_size, epochs=epochs, patience=patience, min_delta=min_delta,
                                    lr_factor=lr_factor, lr_patience=lr_patience)
    tried = [seed + i for i in range(seeds)]
    networks: dict[int, list[MetaMLP]] = {}
    oof: dict[int, np.ndarray] = {}
    scores, losses = [], []
    for s in tried:
        probs = np.zeros((len(ys), n_classes))
        networks[s] = []
        for f in range(folds):
            out = torch.from_numpy(fold == f)
            model = _train_fold(xt[~out], yt[~out], xt[out], yt[out], n_classes, _child_seed(s, f), **hyper)
            probs[out.numpy()] = _softmax([model], xt[out])
            networks[s].append(model)
        oof[s] = probs
        scores.append(core_metrics(probs.argmax(axis=1), ys)["f1_macro"])
        losses.append(float(-np.log(np.maximum(probs[np.arange(len(ys)), ys], 1e-12)).mean()))
    ranked = sorted(range(seeds), key=lambda i: (-scores[i], losses[i], i))
    kept = [tried[i] for i in ranked[:keep]]
    ensemble = np.mean([oof[s] for s in kept], axis=0)
    return MLPMetaLearner({s: networks[s] for s in kept}, tried, scores, losses, kept, fold,
                          core_metrics(ensemble.argmax(axis=1), ys)["f1_macro"], n_classes)


__all__ = ["MLPMetaLearner", "MetaMLP", "MetaMLPError", "fit_mlp_meta_learner", "stratified_folds"]
