"""Stacking classifiers: a meta-learner on the concatenated logits of several base XPs (DeMEGa's stack over grouping
levels: one base model per training K).

How the original stacked (DeMEGa, September-Labs/pnpl-2025-experiments, described in ``ANCHORS_WAVE2`` §1.3; CC BY-NC,
rebuilt from that description only): stage 1 trains one base model per grouping level K in {5, 10, 25, 50, 100};
stage 2 concatenates their raw logits (39 x M features); stage 3 trains a meta-learner on them (an MLP: BatchNorm ->
Linear(39M -> 512) -> SiLU -> BatchNorm -> Dropout 0.5 -> Linear(512 -> 39), AdamW with ReduceLROnPlateau, 5 seeds,
softmax of the best 3 averaged). Which split that meta-learner was fitted on, and what chose its best seeds, is not in
the description.

What bm2 does, and where it differs:

- The meta-learner is fitted on the **validation** split's logits only, and scored on the test split: the test split
  never fits or selects anything (the base models selected their best epoch on validation too, so the meta-learner
  sees the logits of models tuned on the same split; this is the usual hold-out stacking, and the test split stays
  clean).
- ``meta="mlp"`` (``stack.meta``, the default: the original's): the MLP above, rebuilt in
  :mod:`bm2.stacking_mlp`, which documents what bm2 chose where the description is silent; in short, the 5 seeds
  are scored by the F1-macro of their out-of-fold predictions in a stratified 5-fold cross-fitting of the
  **validation** split (each fold's network stops early on its held-out fold), the best 3 are kept, and each
  predicts the mean softmax of its fold networks. Deterministic given ``seed`` (a stacking XP's ``seed``).
- ``meta="logistic"``: bm2's alternative (its only meta-learner before), scikit-learn's multinomial
  :class:`~sklearn.linear_model.LogisticRegression` (L2, ``C``: ``stack.C``) on the standardised concatenated raw
  logits. One convex fit, no seeds to choose: the safer choice when the validation split is small (LibriBrain's
  validation run gives a few hundred items once grouped by 100, for a 100 k-parameter MLP). A class absent from the
  validation labels gets probability 0.
- Items are aligned across base models by their identity in ``items.csv`` (``recording_uid``, ``start`` and, for
  grouped items, ``members``), never by row order: the base XPs must share the data, the split, the evaluation
  grouping (``dset.grouping.valid_k`` / ``test_k``) and the seed that draws the evaluation groups.

Entry points: :func:`stack_folders` (XP folders -> :class:`StackResult`), ``python -m scripts.stack`` and stacking
XPs (``stack.bases=[SIG, ...]``, run by ``bm2.train``; ``grids/libribrain/``).
"""

from __future__ import annotations

import dataclasses
import json
import typing as tp
from pathlib import Path

import numpy as np
import pandas as pd

#: the columns of ``items.csv`` that identify an item (a window or a group of windows) across XPs
KEY_COLUMNS = ("recording_uid", "start", "members")
#: the meta-learners (``stack.meta``); the first is the default (the original DeMEGa's)
META_LEARNERS = ("mlp", "logistic")


class StackError(RuntimeError):
    """Stacking cannot proceed; the message says which XP or file, what was found and what to do."""


@dataclasses.dataclass
class SplitLogits:
    """The pooled logits of one XP on one split: ``logits`` ``[N, K]``, ``labels`` ``[N]`` (-1: unseen class),
    ``keys`` ``[N]`` (item identities), ``items`` (``items.csv``), ``names`` (the K class names)."""

    sig: str
    split: str
    logits: np.ndarray
    labels: np.ndarray
    keys: np.ndarray
    items: pd.DataFrame
    names: list[str]

    def take(self, order: np.ndarray) -> SplitLogits:
        """The same items in ``order`` (row indices)."""
        return dataclasses.replace(self, logits=self.logits[order], labels=self.labels[order], keys=self.keys[order],
                                   items=self.items.iloc[order].reset_index(drop=True))


def item_keys(items: pd.DataFrame) -> np.ndarray:
    """One string per row of ``items.csv`` identifying its window or group (:data:`KEY_COLUMNS` present, else the
    dataset ``index``)."""
    columns = [c for c in KEY_COLUMNS if c in items.columns]
    if not columns:
        columns = ["index"]
    parts = [items[c].astype(str).to_numpy() for c in columns]
    return np.array(["|".join(row) for row in zip(*parts)], dtype=object)


def load_split_logits(folder: str | Path, split: str) -> SplitLogits:
    """Read ``logits.npy``, ``items.csv`` and the class names of XP ``folder``'s evaluation of ``split`` (written by
    ``bm2.tasks.evaluate.evaluate_checkpoint``). Raises :class:`StackError` when a file is missing or they disagree."""
    from .tasks.evaluate import eval_folder

    folder = Path(folder)
    out = eval_folder(folder, split)
    sig = folder.name
    missing = [name for name in ("logits.npy", "items.csv", "summary.json") if not (out / name).exists()]
    if missing:
        raise StackError(f"XP {sig}: {', '.join(missing)} missing in {out}: evaluate it with `python -m "
                         f"scripts.run_eval_probs {sig} --split {split}` (a bm2 that saves logits.npy)")
    summary = json.loads((out / "summary.json").read_text())
    if summary.get("task") != "classification":
        raise StackError(f"XP {sig}: stacking needs classification XPs, {out / 'summary.json'} says task "
                         f"{summary.get('task')!r}")
    logits = np.load(out / "logits.npy")
    items = pd.read_csv(out / "items.csv", keep_default_na=False, dtype={"members": str, "recording_uid": str})
    if logits.ndim != 2 or len(logits) != len(items):
        raise StackError(f"XP {sig}: {out / 'logits.npy'} has shape {logits.shape} but items.csv has {len(items)} "
                         "rows; evaluate it again")
    vocabulary = folder / "vocabulary.json"
    names = json.loads(vocabulary.read_text()) if vocabulary.exists() else [str(i) for i in range(logits.shape[1])]
    keys = item_keys(items)
    if len(set(keys)) != len(keys):
        raise StackError(f"XP {sig}: the items of {out / 'items.csv'} are not unique by {KEY_COLUMNS}")
    return SplitLogits(sig, split, logits.astype(np.float64), items["label"].to_numpy(dtype=np.int64), keys, items,
                       [str(n) for n in names])


def align(bases: tp.Sequence[SplitLogits]) -> list[SplitLogits]:
    """The bases with their items in the first base's order. Raises :class:`StackError` when the bases do not
    hold the same items with the same labels and classes (another grouping, seed or data)."""
    if not bases:
        raise StackError("no base XP to stack")
    first = bases[0]
    position = {key: i for i, key in enumerate(first.keys)}
    out = [first]
    for other in bases[1:]:
        if other.names != first.names:
            raise StackError(f"XPs {first.sig} and {other.sig} have different classes ({len(first.names)} vs "
                             f"{len(other.names)}, or another order): stack XPs trained on the same data and labels")
        extra = [k for k in other.keys if k not in position]
        if extra or len(other.keys) != len(first.keys):
            raise StackError(
                f"the {first.split} items of XPs {first.sig} ({len(first.keys)}) and {other.sig} "
                f"({len(other.keys)}) differ ({len(extra)} of {other.sig}'s are not {first.sig}'s, e.g. "
                f"{extra[:1]}): the base XPs must share the data, the split, the evaluation grouping "
                "(dset.grouping.valid_k / test_k) and the seed")
        order = np.argsort([position[k] for k in other.keys])
        aligned = other.take(order)
        if not np.array_equal(aligned.labels, first.labels):
            raise StackError(f"the {first.split} items of XPs {first.sig} and {other.sig} match but their labels "
                             "differ: the XPs were trained with other vocabularies (dset.label.*)")
        out.append(aligned)
    return out


def features(bases: tp.Sequence[SplitLogits]) -> np.ndarray:
    """``[N, K * M]``: the raw logits of the M aligned bases side by side (base order)."""
    return np.concatenate([b.logits for b in bases], axis=1)


def _check_classes(y: np.ndarray) -> np.ndarray:
    """The rows of ``y`` with a label (>= 0); :class:`StackError` with fewer than two classes among them."""
    seen = y >= 0
    if len(np.unique(y[seen])) < 2:
        raise StackError(f"the meta-learner needs at least two classes in the validation labels, found "
                         f"{np.unique(y[seen]).tolist()}: lower dset.grouping.valid_k or use more validation data")
    return seen


def fit_meta_learner(x: np.ndarray, y: np.ndarray, C: float = 1.0, max_iter: int = 2000) -> tp.Any:
    """The logistic meta-learner (``stack.meta=logistic``): a scikit-learn pipeline (standardisation, multinomial L2
    logistic regression of inverse strength ``C``) fitted on ``x`` ``[N, F]`` and class ids ``y`` ``[N]`` (rows with
    label -1 are left out). Raises :class:`StackError` with fewer than two classes."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    seen = _check_classes(y)
    model = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=max_iter))
    model.fit(x[seen], y[seen])
    return model


def fit_meta(x: np.ndarray, y: np.ndarray, n_classes: int, meta: str = "mlp", C: float = 1.0, seed: int = 0,
             mlp: tp.Mapping[str, tp.Any] | None = None) -> tp.Any:
    """The meta-learner ``meta`` (:data:`META_LEARNERS`) fitted on the **validation** features ``x`` ``[N, F]`` and
    labels ``y`` (-1: left out): ``"mlp"`` (default, the original's) is :func:`bm2.stacking_mlp.fit_mlp_meta_learner`
    seeded with ``seed`` and the keyword arguments ``mlp`` (``stack.mlp``); ``"logistic"`` is
    :func:`fit_meta_learner` with ``C``. Either one has ``classes_`` and ``predict_proba``. Raises
    :class:`StackError`."""
    if meta not in META_LEARNERS:
        raise StackError(f"unknown meta-learner stack.meta={meta!r}: use one of {', '.join(META_LEARNERS)}")
    if meta == "logistic":
        return fit_meta_learner(x, y, C=C)
    from .stacking_mlp import MetaMLPError, fit_mlp_meta_learner

    _check_classes(y)
    try:
        return fit_mlp_meta_learner(x, y, n_classes, seed=seed, **dict(mlp or {}))
    except MetaMLPError as exc:
        raise StackError(str(exc)) from exc


def describe_meta(meta: tp.Any) -> dict[str, tp.Any]:
    """What a fitted meta-learner is (JSON-ready): ``{"meta": "mlp", "kept": [...] ...}`` or
    ``{"meta": "logistic", "C": ...}``."""
    if hasattr(meta, "describe"):
        return dict(meta.describe())
    return {"meta": "logistic", "C": float(meta[-1].C)}


def meta_probs(model: tp.Any, x: np.ndarray, n_classes: int) -> np.ndarray:
    """``[N, n_classes]`` class probabilities of the fitted meta-learner (0 for classes it never saw)."""
    probs = np.zeros((len(x), n_classes))
    probs[:, model.classes_] = model.predict_proba(x)
    return probs


@dataclasses.dataclass
class StackResult:
    """One stack: ``table`` (one row per base XP and one for the stack: validation and test F1-macro, test balanced
    accuracy and top-1, as fractions), the stack's full test result (``bm2.tasks.classification``) and the
    fitted meta-learner (:func:`describe_meta` says which)."""

    table: pd.DataFrame
    result: tp.Any
    meta: tp.Any

    def markdown(self) -> str:
        """The table in percent, with the chance levels of the test split."""
        m = self.result.metrics
        lines = ["| model | K | XP | valid F1-macro % | test F1-macro % | test balanced acc. % | test top-1 % |",
                 "|---|---:|---|---:|---:|---:|---:|"]
        for row in self.table.itertuples():
            k = "" if pd.isna(row.k) else str(int(row.k))
            lines.append(f"| {row.model} | {k} | {row.sig} | {100 * row.valid_f1_macro:.1f} | "
                         f"{100 * row.test_f1_macro:.1f} | {100 * row.test_balanced_accuracy:.1f} | "
                         f"{100 * row.test_top1:.1f} |")
        lines.append(f"| chance | | | | {100 * m['chance_f1_macro']:.1f} | {100 * m['chance_balanced_accuracy']:.1f}"
                     f" | {100 * m['chance_top1']:.1f} |")
        valid_n = int(self.table.attrs.get("n_valid", 0))
        return "\n".join(lines) + (f"\n{int(m['n_scored'])} test items, {valid_n} validation items (the meta-learner's "
                                   f"training set: the stack's validation score is in-sample), "
                                   f"{int(m['n_classes'])} classes; meta-learner: {self.meta_summary()}")

    def meta_summary(self) -> str:
        """One line on the meta-learner: which one, and for the MLP the seeds kept and their cross-validated score."""
        d = describe_meta(self.meta)
        if d["meta"] == "logistic":
            return f"logistic regression (C = {d['C']:g})"
        scores = ", ".join(f"{s}: {100 * f:.1f}" for s, f in zip(d["seeds"], d["cv_f1_macro_per_seed"]))
        return (f"MLP, seeds {', '.join(map(str, d['kept']))} kept of {len(d['seeds'])} by {d['folds']}-fold "
                f"cross-validated F1-macro on validation ({scores} %; kept seeds together "
                f"{100 * d['cv_f1_macro']:.1f} %)")

    def save(self, folder: str | Path, meta: dict[str, tp.Any] | None = None) -> None:
        """Write ``stack.csv`` and ``stack.md`` into ``folder`` and the stack's test evaluation into
        ``folder/eval/`` (``items.csv``, ``probs.npy``, ``summary.json`` ...: what the tables and reports read)."""
        from .tasks.base import atomic_write

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write(folder / "stack.csv", lambda f: self.table.to_csv(f, index=False))
        atomic_write(folder / "stack.md", lambda f: f.write((self.markdown() + "\n").encode()))
        self.result.save(folder / "eval", meta)


def _scores(logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    from .tasks.classification import classification_metrics

    return classification_metrics(logits, labels, n_boot=0)


def stack(valid: tp.Sequence[SplitLogits], test: tp.Sequence[SplitLogits], C: float = 1.0,
          levels: tp.Sequence[float | None] | None = None, labels: tp.Sequence[str] | None = None, meta: str = "mlp",
          seed: int = 0, mlp: tp.Mapping[str, tp.Any] | None = None) -> StackResult:
    """Fit the meta-learner ``meta`` (see :func:`fit_meta`: ``"mlp"``, the original's, seeded with ``seed``,
    options ``mlp``; or ``"logistic"`` with ``C``) on the bases' ``valid`` logits, score it and each base on their
    ``test`` logits (both lists in the same base order; items are aligned here). The test labels are read only to
    score. ``levels`` (the bases' training K) and ``labels`` (their names) go into the table."""
    from .tasks.classification import evaluate_classification

    if len(valid) != len(test):
        raise StackError(f"{len(valid)} validation but {len(test)} test evaluations")
    valid, test = align(valid), align(test)
    for v, t in zip(valid, test):
        if v.sig != t.sig:
            raise StackError(f"validation and test bases are not in the same order ({v.sig} vs {t.sig})")
    names = test[0].names
    if valid[0].names != names:
        raise StackError(f"XP {valid[0].sig}: its validation and test classes differ")
    model = fit_meta(features(valid), valid[0].labels, len(names), meta=meta, C=C, seed=seed, mlp=mlp)
    probs = meta_probs(model, features(test), len(names))
    valid_probs = meta_probs(model, features(valid), len(names))
    rows = []
    levels = list(levels) if levels is not None else [None] * len(test)
    labels = list(labels) if labels is not None else [f"base {i + 1}" for i in range(len(test))]
    for v, t, k, label in zip(valid, test, levels, labels):
        vm, tm = _scores(v.logits, v.labels), _scores(t.logits, t.labels)
        rows.append({"model": label, "k": k, "sig": t.sig, "valid_f1_macro": vm["f1_macro"],
                     "test_f1_macro": tm["f1_macro"], "test_balanced_accuracy": tm["balanced_accuracy"],
                     "test_top1": tm["top1"]})
    segments = test[0].items.drop(columns=[c for c in ("label", "label_name", "prediction", "prediction_name",
                                                        "p_true", "correct") if c in test[0].items.columns])
    # log-probabilities: the evaluation's softmax gives the meta-learner's probabilities back
    result = evaluate_classification(np.log(np.maximum(probs, 1e-12)), test[0].labels, segments, names, n_boot=0,
                                     group_by=())
    result.logits = None  # a stack is not a base of another stack
    vm = _scores(valid_probs, valid[0].labels)
    rows.append({"model": "stack", "k": None, "sig": "", "valid_f1_macro": vm["f1_macro"],
                 "test_f1_macro": result.metrics["f1_macro"],
                 "test_balanced_accuracy": result.metrics["balanced_accuracy"], "test_top1": result.metrics["top1"]})
    table = pd.DataFrame(rows)
    table.attrs["n_valid"] = int((valid[0].labels >= 0).sum())
    return StackResult(table, result, model)


def check_finished(folder: str | Path) -> dict[str, tp.Any]:
    """The checkpoint of the base XP in ``folder`` once it has finished (tested); :class:`StackError` otherwise."""
    from .solvers.base import CheckpointError, load_checkpoint

    folder = Path(folder)
    sig = folder.name
    if (folder / "stack.csv").exists():
        raise StackError(f"XP {sig} is a stacking XP, not a base model: name the XPs it stacks instead")
    if not folder.is_dir():
        raise StackError(f"base XP {sig}: no folder {folder}; sign it (`dora grid ... --dry_run --init`) and train "
                         f"it (`dora run -f {sig}`), or check $BM2_XP_DIR")
    try:
        ckpt = load_checkpoint(folder / "checkpoint.th")
    except CheckpointError as exc:
        raise StackError(f"base XP {sig} has not finished: {exc}. Train it first: `dora run -f {sig}`") from exc
    history = ckpt.get("history") or []
    if not (history and "test" in history[-1]):
        raise StackError(f"base XP {sig} has not finished ({len(history)} epochs, not tested yet): run "
                         f"`dora run -f {sig}` to the end (or wait for its job) before stacking")
    return ckpt


def _current_logits(out: Path, ckpt: dict[str, tp.Any]) -> bool:
    """Whether ``out`` holds logits of the XP's current checkpoint, evaluated as trained: written after as many
    epochs as the checkpoint holds (a continued or retrained XP is evaluated again) and without ``--override``."""
    if not (out / "logits.npy").exists() or not (out / "summary.json").exists():
        return False
    meta = json.loads((out / "summary.json").read_text()).get("meta") or {}
    return meta.get("epochs_trained") == len(ckpt.get("history") or []) and not meta.get("overrides")


def stack_folders(folders: tp.Sequence[str | Path], C: float = 1.0, device: str = "auto", paths: tp.Any = None,
                  evaluate: bool = True, meta: str = "mlp", seed: int = 0,
                  mlp: tp.Mapping[str, tp.Any] | None = None) -> StackResult:
    """Stack the finished base XPs in ``folders`` (order = feature order) with the meta-learner ``meta`` (``C``,
    ``seed``, ``mlp``: see :func:`stack`). Each one's validation and test logits are read from its ``eval/`` folder;
    with ``evaluate``, those missing are computed from its checkpoint first (``paths``: the data paths to use, see
    ``evaluate_checkpoint``). Raises :class:`StackError`."""
    from .tasks.evaluate import EvalError, eval_folder, evaluate_checkpoint

    if len(folders) < 2:
        raise StackError(f"stacking needs at least two base XPs, got {[Path(f).name for f in folders]}")
    valid: list[SplitLogits] = []
    test: list[SplitLogits] = []
    levels: list[float | None] = []
    labels: list[str] = []
    for folder in map(Path, folders):
        ckpt = check_finished(folder)
        cfg = ckpt["config"]
        if cfg.get("test", {}).get("task") != "classification":
            raise StackError(f"base XP {folder.name} is a {cfg.get('test', {}).get('task')!r} XP: stacking needs "
                             "classification XPs")
        for split, out in (("valid", valid), ("test", test)):
            if evaluate and not _current_logits(eval_folder(folder, split), ckpt):
                try:
                    evaluate_checkpoint(folder, device, split=split, paths=paths)
                except EvalError as exc:
                    raise StackError(str(exc)) from exc
            out.append(load_split_logits(folder, split))
        levels.append(int(cfg.get("dset", {}).get("grouping", {}).get("k", 1)))
        labels.append(str(cfg.get("model", {}).get("name", "model")))
    return stack(valid, test, C=C, levels=levels, labels=labels, meta=meta, seed=seed, mlp=mlp)


def run_stack_xp(cfg: tp.Any, xp: tp.Any) -> StackResult:
    """The body of a stacking XP (``stack.bases`` set; called by ``bm2.train``): stack the base XPs named by
    signature (in ``xp``'s Dora folder) with :func:`meta_options` of ``cfg``, write the table (``results.md``,
    ``stack.md``, ``stack.csv``), the stack's test evaluation (``eval/``) and a one-entry history (``test``: the
    stack's metrics; ``stack``: the table; ``meta``: :func:`describe_meta`)."""
    folders = [Path(xp.folder).parent / str(sig) for sig in cfg.stack.bases]
    result = stack_folders(folders, device=str(cfg.device), paths=cfg.paths, **meta_options(cfg))
    bases = [str(s) for s in cfg.stack.bases]
    result.save(xp.folder, {"sig": str(xp.sig), "argv": list(xp.argv), "stack_of": bases, "seed": int(cfg.seed),
                            "selections": list(cfg.dset.selections), "model": "stack", "loss": "meta-learner",
                            "split": "test", "meta_learner": describe_meta(result.meta)})
    (Path(xp.folder) / "results.md").write_text(result.markdown() + "\n")
    metrics = {k: float(v) for k, v in result.result.metrics.items() if isinstance(v, (int, float))}
    table = result.table.astype(object).where(result.table.notna(), None).to_dict(orient="records")
    xp.link.update_history([{"test": metrics, "stack": table, "meta": describe_meta(result.meta)}])
    return result


def meta_options(cfg: tp.Any) -> dict[str, tp.Any]:
    """The meta-learner keyword arguments of :func:`stack_folders` from an XP config: ``meta`` (``stack.meta``,
    ``"mlp"`` when the key is absent), ``C`` (``stack.C``), ``seed`` (the XP's ``seed``) and ``mlp``
    (``stack.mlp``)."""
    section = cfg.stack
    mlp = section.get("mlp") or {}
    return {"meta": str(section.get("meta", "mlp")), "C": float(section.get("C", 1.0)), "seed": int(cfg.seed),
            "mlp": {str(k): v for k, v in dict(mlp).items()}}


__all__ = ["KEY_COLUMNS", "META_LEARNERS", "SplitLogits", "StackError", "StackResult", "align", "check_finished",
           "describe_meta", "features", "fit_meta", "fit_meta_learner", "item_keys", "load_split_logits",
           "meta_options", "meta_probs", "run_stack_xp", "stack", "stack_folders"]
