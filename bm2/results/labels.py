"""Labels of XPs (rows of the tables) from their summaries and configs."""

from __future__ import annotations

import os
import typing as tp
from pathlib import Path

if tp.TYPE_CHECKING:
    from omegaconf import DictConfig

from .load import CHANCE_ROW, KNOWN_LABELS, Labeler, Result, ResultsError


# ------------------------------------------------------------------------------------------------ labels

def argv_value(argv: tp.Sequence[str], key: str) -> str | None:
    """Value of the last ``key=value`` override in ``argv`` (``+``/``++`` prefixes allowed), else None."""
    value = None
    for arg in argv:
        name, sep, val = str(arg).lstrip("+").partition("=")
        if sep and name == key:
            value = val
    return value


def is_random(meta: dict[str, tp.Any]) -> bool:
    """True for an untrained baseline: no epoch, or ``optim.max_batches=0`` (no update) in its argv."""
    if int(meta.get("epochs_trained", 1)) == 0:
        return True
    return argv_value(meta.get("argv") or [], "optim.max_batches") in ("0", "0.0")


def _feature_label(features: tp.Sequence[str]) -> str:
    names = []
    for feat in features:
        low = str(feat).lower()
        names.append("wav2vec 2.0" if "wav2vec" in low else str(feat))
    return " + ".join(names) or "?"


def default_label(result: Result) -> str:
    """Model / objective label of the paper's main table, e.g. ``mel regression`` or ``mel + contrastive``;
    ``<task> (<loss>)`` for the tasks other than retrieval, e.g. ``classification (cross_entropy)``."""
    meta = result["meta"]
    if is_random(meta):
        return "random"
    feats = _feature_label(meta.get("features") or [])
    loss = str(meta.get("loss", "?"))
    task = str(result.get("task", "retrieval"))
    if task != "retrieval":
        label = f"{task} ({loss})"
    else:
        label = {"mse": f"{feats} regression", "clip": f"{feats} + contrastive"}.get(loss, f"{feats} + {loss}")
    model = meta.get("model")
    if model and model != "simpleconv":  # the paper's model needs no mention; others do
        label += f" ({model}{_nsd_setting(result) if model == 'nsd' else ''})"
    return label


def _nsd_setting(result: Result) -> str:
    """`` e2a lstm causal`` for a Neural Speech Decoding XP (stage, ECoG decoder, causal), "" without a config:
    its a2a and e2a XPs, and each decoder, are different models of one study."""
    try:
        stage = str(_config_value(result, "model.nsd.stage"))
        decoder = f" {_config_value(result, 'model.nsd.decoder')}" if stage == "e2a" else ""
        causal = " causal" if _config_value(result, "model.nsd.causal") else ""
    except ResultsError:
        return ""
    return f" {stage}{decoder}{causal}"


def xp_config(folder: str | Path) -> DictConfig:
    """Full config of an XP (Hydra's ``.hydra/config.yaml``, else the checkpoint's), paths from the environment."""
    from omegaconf import OmegaConf

    folder = Path(folder)
    hydra = folder / ".hydra" / "config.yaml"
    if hydra.exists():
        cfg = OmegaConf.load(hydra)
    else:
        from ..solvers.base import load_checkpoint

        cfg = OmegaConf.create(load_checkpoint(folder / "checkpoint.th")["config"])
    # data may have moved since training: the current environment wins
    for key, var in (("data", "BM2_DATA"), ("cache", "BM2_CACHE")):
        if os.environ.get(var) and "paths" in cfg:
            cfg.paths[key] = os.environ[var]
    return tp.cast("DictConfig", cfg)


def _config_value(result: Result, key: str) -> tp.Any:
    if key in result["meta"]:
        return result["meta"][key]
    value = argv_value(result["meta"].get("argv") or [], key)
    if value is not None:
        return value
    from omegaconf import OmegaConf

    try:
        cfg = xp_config(result["folder"])
    except Exception as exc:  # noqa: BLE001  (no config at all: say which key could not be found)
        raise ResultsError(f"label key {key!r}: not in the summary of XP {result['sig']} and its config is "
                           f"unreadable ({exc})") from exc
    value = OmegaConf.select(cfg, key, default="__missing__", throw_on_resolution_failure=False)
    if isinstance(value, str) and value == "__missing__":
        raise ResultsError(f"label key {key!r} is neither a summary field ({sorted(result['meta'])}) nor a config "
                           f"key of XP {result['sig']}; use dotted config keys such as optim.lr")
    return OmegaConf.to_container(value) if OmegaConf.is_config(value) else value


def config_value(result: Result, key: str) -> tp.Any:
    """The value of ``key`` for an XP: a summary meta field, else its command-line override, else its config
    (dotted keys such as ``dset.split.fold``); :class:`ResultsError` naming the key when none has it."""
    return _config_value(result, key)


def label_from_keys(keys: tp.Sequence[str]) -> Labeler:
    """A labeler showing ``key=value`` for each key (summary meta fields or dotted config keys)."""
    keys = list(keys)
    if not keys:
        return default_label

    def label(result: Result) -> str:
        parts = []
        for key in keys:
            value = _config_value(result, key)
            if isinstance(value, (list, tuple)):
                value = "+".join(map(str, value))
            parts.append(f"{key}={value}")
        return ", ".join(parts)

    return label


def _labeler(label: Labeler | tp.Sequence[str] | None) -> Labeler:
    if label is None:
        return default_label
    if callable(label):
        return label
    return label_from_keys(list(label))


def order_labels(labels: tp.Iterable[str]) -> list[str]:
    """Distinct labels, the paper's known rows first, then alphabetically; the chance row last."""
    unique = list(dict.fromkeys(str(x) for x in labels))
    known = [x for x in KNOWN_LABELS if x in unique]
    rest = sorted(x for x in unique if x not in KNOWN_LABELS and x != CHANCE_ROW)
    return known + rest + ([CHANCE_ROW] if CHANCE_ROW in unique else [])


