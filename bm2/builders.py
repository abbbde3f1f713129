"""The only place where the Hydra config becomes objects.

Each builder maps a name to a class and passes the same-named config section as keyword arguments; nothing
below this module ever sees a config object, and the config is never mutated.
"""

from __future__ import annotations

import itertools
import logging
import typing as tp
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from .cache import Cache
from .data import Datasets, NormParams, SplitParams, WindowParams, build_datasets
from .features import FeatureStack, build_feature
from .losses import build_loss
from .models import MODELS, build_model
from .preprocessing import PreprocessParams
from .solvers.base import HistoryLink
from .solvers.speech import SpeechSolver
from .studies.base import Recording, Study, get_study_class, study_root

logger = logging.getLogger(__name__)


def _section(cfg: DictConfig, *path: str) -> dict[str, tp.Any]:
    node: tp.Any = cfg
    for p in path:
        node = node.get(p) if node is not None else None
    if node is None:
        return {}
    return tp.cast(dict, OmegaConf.to_container(node, resolve=True))


def build_study(cfg: DictConfig, name: str) -> Study:
    """The study ``name`` with its options from ``studies.<name>`` and its root from ``paths``."""
    cls = get_study_class(name)
    overrides = _section(cfg, "paths", "studies")
    root = study_root(name, cfg.paths.get("data"), overrides.get(name))
    return cls(root, **_section(cfg, "studies", name))  # type: ignore[call-arg]


def select_recordings(cfg: DictConfig, prepare: bool = True) -> list[Recording]:
    """Recordings of every study in ``dset.selections`` (prepared on disk first), capped by ``dset.n_recordings``."""
    selections = list(cfg.dset.selections)
    if not selections:
        raise ValueError("dset.selections is empty: name at least one study")
    recordings: list[Recording] = []
    for name in selections:
        study = build_study(cfg, name)
        if prepare:
            study.prepare()
        recordings.extend(study.iter_recordings())
    n = cfg.dset.get("n_recordings")
    return recordings if n is None else list(itertools.islice(recordings, int(n)))


def build_cache(cfg: DictConfig) -> Cache:
    """The feature / preprocessing cache at ``paths.cache``."""
    return Cache(Path(cfg.paths.cache).expanduser())


def build_features(cfg: DictConfig) -> FeatureStack:
    """The features named in ``dset.features`` with their parameters from ``features.<name>``."""
    return FeatureStack([build_feature(name, **_section(cfg, "features", name)) for name in cfg.dset.features])


def build_all_datasets(cfg: DictConfig) -> Datasets:
    """Train / valid / test datasets for ``cfg``."""
    pre = _section(cfg, "preprocess")
    for key in ("picks", "notch"):
        if key in pre:
            pre[key] = tuple(pre[key] or ())
    return build_datasets(
        select_recordings(cfg), build_cache(cfg), PreprocessParams(**pre), build_features(cfg),
        WindowParams(**_section(cfg, "dset", "window")), SplitParams(**_section(cfg, "dset", "split")),
        NormParams(**_section(cfg, "norm")), seed=int(cfg.seed))


def resolve_device(name: str) -> str:
    """``auto`` becomes ``cuda`` when a GPU is visible, else ``cpu``."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def get_solver(cfg: DictConfig, folder: str | Path, link: HistoryLink) -> SpeechSolver:
    """The solver of ``cfg``: data, model, loss and optimisation settings wired together."""
    # Objects that need no data first, so that a typo fails before minutes of preprocessing.
    loss = build_loss(cfg.loss.name, **_section(cfg, "loss", cfg.loss.name))
    if cfg.model.name not in MODELS:
        raise KeyError(f"unknown model {cfg.model.name!r}; valid names: {sorted(MODELS)}")
    datasets = build_all_datasets(cfg)
    model_kwargs = _section(cfg, "model", cfg.model.name)
    model = build_model(cfg.model.name, out_channels=datasets.feature_dim, n_subjects=datasets.n_subjects,
                        **model_kwargs)
    optim = _section(cfg, "optim")
    optim["betas"] = tuple(optim.get("betas", (0.9, 0.999)))
    solver = SpeechSolver(folder, link, model, loss, datasets, num_workers=int(cfg.num_workers),
                          device=resolve_device(cfg.device), seed=int(cfg.seed),
                          test_ks=tuple(cfg.test.ks), test_batch_size=int(cfg.test.batch_size),
                          task=str(cfg.test.task), **optim)
    solver.extra_checkpoint.update(
        model_spec=getattr(model, "bm2_spec", None),
        loss_spec={"name": cfg.loss.name, "kwargs": _section(cfg, "loss", cfg.loss.name)},
        config=OmegaConf.to_container(cfg, resolve=True))
    return solver
