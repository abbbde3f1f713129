"""The only place where the Hydra config becomes objects.

Each builder maps a name to a class and passes the same-named config section as keyword arguments; nothing
below this module ever sees a config object, and the config is never mutated.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import typing as tp
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from .cache import Cache
from .data import AugmentParams, CropParams, Datasets, NormParams, SplitParams, WindowParams, build_datasets
from .data.grouped_h5 import GroupedParams, grouped_datasets
from .data.grouping import GroupingParams, group_datasets
from .features import FeatureStack, build_feature
from .features.praat import PraatParams
from .models import MODELS, build_model, data_kwargs_for
from .objectives import Objective, build_objective
from .preprocessing import PreprocessParams
from .solvers.base import HistoryLink
from .solvers.chain import ChainError, load_from_parent, parent_state
from .solvers.solver import OptimParams, Solver
from .studies.base import Recording, Study, UnknownSubjectError, get_study_class, study_root
from .targets import LabelParams, SpeechParams
from .tasks import Task, get_task
from .tasks.inference import DenoiseParams, InferenceAddOns, TTAParams, variants

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


def select_continuous(cfg: DictConfig, recordings: tp.Sequence[Recording]) -> list[Recording] | None:
    """The continuous recordings (:meth:`~bm2.studies.base.Study.iter_continuous`) of the subjects of
    ``recordings``, or None (logged, naming the subjects without any) when some subject has none: pre-training
    then reads the epochs instead, for every subject alike."""
    wanted = {(r.study, r.subject) for r in recordings}
    found: list[Recording] = []
    for name in cfg.dset.selections:
        found += [r for r in build_study(cfg, name).iter_continuous() if (r.study, r.subject) in wanted]
    missing = sorted(wanted - {(r.study, r.subject) for r in found})
    if missing:
        shown = ", ".join(f"{study}/{subject}" for study, subject in missing[:10])
        logger.info("dset.crops: no continuous recording for %d of %d subjects (%s%s): pre-training on the windows "
                    "of dset.window (the epochs) instead of crops", len(missing), len(wanted), shown,
                    " ..." if len(missing) > 10 else "")
        return None
    return found


def build_cache(cfg: DictConfig) -> Cache:
    """The feature / preprocessing cache at ``paths.cache``."""
    return Cache(Path(cfg.paths.cache).expanduser())


def build_features(cfg: DictConfig) -> FeatureStack:
    """The features named in ``dset.features`` with their parameters from ``features.<name>``."""
    return FeatureStack([build_feature(name, **_section(cfg, "features", name)) for name in cfg.dset.features])


def build_task(cfg: DictConfig) -> Task:
    """The task named ``test.task`` (retrieval, classification, detection, reconstruction)."""
    return get_task(str(cfg.test.get("task", "retrieval")))


def build_inference(cfg: DictConfig, task: Task | None = None, force: tp.Sequence[str] = ()
                    ) -> tuple[InferenceAddOns, ...]:
    """The test-time add-on variants of ``test.denoise`` and ``test.tta`` (each enabled one, then both together).

    ``force`` (``denoise`` / ``tta``) switches those on whatever their ``enabled`` says (offline evaluation of an
    XP; keys missing from an older XP's config take the defaults). Raises ``ValueError`` when one is on for a task
    other than classification.
    """
    test = cfg.get("test") or {}
    params: dict[str, tp.Any] = {}
    for name, cls in (("denoise", DenoiseParams), ("tta", TTAParams)):
        section = _section(cfg, "test", name) if name in test else {}
        if name in force:
            section["enabled"] = True
        params[name] = cls(**section) if section else None
    out = variants(params["denoise"], params["tta"])
    task = task or build_task(cfg)
    if out and task.name != "classification":
        raise ValueError(f"test.denoise / test.tta apply to test.task=classification, not {task.name}: switch them "
                         "off (enabled=false)")
    return out


def build_loss_objective(cfg: DictConfig) -> Objective:
    """The objective ``loss.name`` with its section ``loss.<name>`` and the term weights ``loss.weights``."""
    name = str(cfg.loss.name)
    return build_objective(name, weights=_section(cfg, "loss", "weights") or None, **_section(cfg, "loss", name))


def _same_subject(wanted: tp.Any, subject: str) -> bool:
    text = str(wanted)
    return text == subject or (text.isdigit() and subject.isdigit() and int(text) == int(subject))


def select_subjects(datasets: Datasets, subjects: tp.Sequence[tp.Any] | None) -> Datasets:
    """``datasets`` with only the windows of ``subjects`` (ids as the studies name them; ``1`` matches ``"001"``)
    in each split, **after** the split was made on every selected recording (``dset.subjects``).

    Everything else stays as built on all recordings: the split of each window, the vocabulary, the scalers and
    the subject indices (the model keeps one subject layer per recording subject). So a classifier fine-tuned on
    one subject after a multi-subject pre-training sees the same test windows, and the same subject index, as
    that pre-training had set aside. Raises :class:`~bm2.studies.base.UnknownSubjectError` (a ``ValueError``)
    naming the available subjects when one matches none.
    """
    if not subjects:
        return datasets
    available = sorted({r.subject for r in datasets.recordings})
    unknown = [s for s in subjects if not any(_same_subject(s, a) for a in available)]
    if unknown:
        raise UnknownSubjectError(f"dset.subjects: {unknown} match no subject of the selected recordings; available: "
                         f"{available} (studies {sorted({r.study for r in datasets.recordings})})")
    keep = {a for a in available if any(_same_subject(s, a) for s in subjects)}

    def only(ds: tp.Any) -> tp.Any:
        rows = ds.segments["subject"].astype(str).isin(keep).to_numpy()
        return type(ds)(ds.recordings, ds.segments[rows], ds.window, ds.norm, ds.feature_scaler, ds.targets,
                        ds.vocabulary, augment=ds.augment, seed=ds.seed)

    out = dataclasses.replace(datasets, train=only(datasets.train), valid=only(datasets.valid),
                              test=only(datasets.test))
    logger.info("dset.subjects=%s: %s windows kept (train / valid / test)", sorted(keep),
                " / ".join(str(len(out[s])) for s in ("train", "valid", "test")))
    return out


def build_all_datasets(cfg: DictConfig, targets: tp.Sequence[str] | None = None) -> Datasets:
    """Train / valid / test datasets for ``cfg``, with the targets of its task (or ``targets``), restricted to the
    windows of ``dset.subjects`` when set (:func:`select_subjects`)."""
    pre = _section(cfg, "preprocess")
    for key in ("picks", "notch"):
        if key in pre:
            pre[key] = tuple(pre[key] or ())
    split = _section(cfg, "dset", "split")
    for key in ("valid_recordings", "test_recordings"):
        if key in split:
            split[key] = tuple(split[key] or ())
    speech = _section(cfg, "dset", "speech")
    if "kinds" in speech:
        speech["kinds"] = tuple(speech["kinds"])
    task = build_task(cfg)
    if targets is None:
        targets = task.targets
    # targets the model or objective reads besides the task's, e.g. the on-stage mask `speech` of Neural Speech
    # Decoding's losses (dset.extra_targets)
    targets = tuple(dict.fromkeys([*targets, *(cfg.dset.get("extra_targets") or ())]))
    grouped = GroupedParams(**_section(cfg, "dset", "grouped"))
    if grouped.active:  # LibriBrain's pre-averaged files instead of windows of the selected studies
        return _grouped_h5_datasets(cfg, grouped, targets)
    recordings = select_recordings(cfg)
    window, split_params = WindowParams(**_section(cfg, "dset", "window")), SplitParams(**split)
    crops = CropParams(**_section(cfg, "dset", "crops"))
    if crops.active:
        if task.name != "pretraining":
            raise ValueError(f"dset.crops cuts unlabelled crops of continuous recordings for pre-training, but "
                             f"test.task={task.name}: use it with test.task=pretraining (recipe=duin_vqvae / "
                             "duin_mae) or set dset.crops.length=null")
        continuous = select_continuous(cfg, recordings)
        if continuous is not None:
            recordings, window, split_params = continuous, crops.window(), crops.split(split_params.seed)
            targets = tuple(t for t in targets if t != "label")  # crops have no class (pre-training reads none)
            logger.info("dset.crops: pre-training on %g-s crops every %g s of %d continuous recordings",
                        window.tmax - window.tmin, window.stride, len(recordings))
    datasets = build_datasets(
        recordings, build_cache(cfg), PreprocessParams(**pre), build_features(cfg), window, split_params,
        NormParams(**_section(cfg, "norm")), seed=int(cfg.seed), targets=targets,
        label=LabelParams(**_section(cfg, "dset", "label")), speech=SpeechParams(**speech),
        augment=AugmentParams(**_section(cfg, "dset", "augment")),
        praat=PraatParams(**_section(cfg, "features", "praat")) if "praat" in targets else None)
    datasets = select_subjects(datasets, cfg.dset.get("subjects"))
    return group_datasets(datasets, GroupingParams(**_section(cfg, "dset", "grouping")), seed=int(cfg.seed))


def _grouped_h5_datasets(cfg: DictConfig, grouped: GroupedParams, targets: tp.Sequence[str]) -> Datasets:
    """``dset.grouped``: the datasets of LibriBrain's grouped h5 files under ``paths.libribrain_grouped`` (null: the
    ``grouped`` folder of the libribrain2025 root); errors for tasks without class labels and for ``dset.grouping``,
    which would average the averages again."""
    if tuple(targets) != ("label",):
        raise ValueError(f"dset.grouped.k={grouped.k} reads phoneme groups with class labels: it serves "
                         f"test.task=classification only (the targets asked for are {list(targets)})")
    if GroupingParams(**_section(cfg, "dset", "grouping")).active:
        raise ValueError("dset.grouped reads groups already averaged by the release; dset.grouping would average "
                         "them again: set dset.grouping.k=1 (and valid_k / test_k null), or choose the level with "
                         "dset.grouped.k / valid_k / test_k")
    root = cfg.paths.get("libribrain_grouped")
    if not root:
        root = study_root("libribrain2025", cfg.paths.get("data"),
                          _section(cfg, "paths", "studies").get("libribrain2025")) / "grouped"
    return grouped_datasets(Path(root).expanduser(), grouped, NormParams(**_section(cfg, "norm")))


def model_out_channels(datasets: Datasets, targets: tp.Sequence[str] | None = None) -> int:
    """Output channels the task needs: classes (labels), 1 (speech / silence) or the feature dimension.

    ``targets``: the task's (default: the datasets'; those also hold ``dset.extra_targets``, which the model reads
    but does not output, e.g. the on-stage mask ``speech`` of a reconstruction)."""
    # the task's targets that the data hold (pre-training crops of continuous data hold no label)
    targets = datasets.targets if targets is None else tuple(t for t in targets if t in datasets.targets)
    if "label" in targets:
        assert datasets.vocabulary is not None
        return len(datasets.vocabulary)
    if "speech" in targets:
        return 1
    return datasets.feature_dim


def word_codebook(vectors: tp.Any, dim: int, seed: int = 0) -> list[list[float]]:
    """A ``[K, dim]`` codebook start from word vectors ``[K, D]``: a seeded Gaussian random projection (which keeps
    cosines between words approximately, Johnson-Lindenstrauss), rows scaled to unit norm."""
    import numpy as np

    vectors = np.asarray(vectors, dtype=np.float64)
    proj = np.random.default_rng(seed).standard_normal((vectors.shape[1], dim)) / np.sqrt(dim)
    out = vectors @ proj
    return (out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)).tolist()


def build_model_for(cfg: DictConfig, datasets: Datasets) -> torch.nn.Module:
    """The model ``model.name`` with its section, and the sizes it needs from the data.

    ``model.<name>.codebook_init: word_embedding`` starts a class codebook (``model=inr``) from the
    ``word_embedding`` feature of each class name (``features.word_embedding``), projected by :func:`word_codebook`.
    """
    name = str(cfg.model.name)
    section = _section(cfg, "model", name)
    if section.get("codebook_init") == "word_embedding":
        from .features.text import WordEmbedding

        if datasets.vocabulary is None:
            raise ValueError("codebook_init=word_embedding needs class labels (test.task=classification)")
        words = WordEmbedding(**_section(cfg, "features", "word_embedding")).embed_words(datasets.vocabulary)
        section["codebook_init"] = word_codebook(words, int(section.get("dim", 256)), int(cfg.seed))
    available = {"out_channels": model_out_channels(datasets, build_task(cfg).targets),
                 "n_subjects": datasets.n_subjects,
                 "n_channels": datasets.n_channels, "n_freqs": datasets.n_freqs,
                 "sample_rate": datasets.recordings[0].sample_rate,
                 "n_times": datasets.train.window.n_samples(datasets.recordings[0].sample_rate)
                 - datasets.train.window.offset_samples(datasets.recordings[0].sample_rate)}
    return build_model(name, **data_kwargs_for(name, available), **section)


def train_class_counts(datasets: Datasets) -> tp.Any:
    """Training windows per class of the vocabulary (int64 ``[K]``)."""
    import numpy as np

    assert datasets.vocabulary is not None
    labels = np.asarray(datasets.train._label)
    return np.bincount(labels[labels >= 0], minlength=len(datasets.vocabulary))


def build_batch_sampler(cfg: DictConfig, datasets: Datasets) -> tp.Any:
    """The training batch sampler of ``dset.batches`` (``strategy: class_structured``), or None (shuffled batches)."""
    opts = _section(cfg, "dset", "batches")
    strategy = opts.pop("strategy", None)
    if strategy in (None, "none"):
        return None
    if strategy != "class_structured":
        raise KeyError(f"unknown dset.batches.strategy {strategy!r}; valid: [null, class_structured]")
    if datasets.vocabulary is None:
        raise ValueError("dset.batches.strategy=class_structured needs class labels (test.task=classification)")
    from .data.samplers import ClassStructuredBatchSampler, class_groups_for

    groups = class_groups_for(opts.pop("groups", None), datasets.vocabulary)
    from . import distrib

    return ClassStructuredBatchSampler(datasets.train._label, groups, seed=int(cfg.seed), rank=distrib.rank(),
                                       world_size=distrib.world_size(), **opts)


def check_model_task(name: str, task: Task) -> None:
    """Raise ``ValueError`` when model ``name`` gives one vector per window but ``task`` needs per-sample outputs."""
    if task.per_sample and not getattr(MODELS[name], "per_sample", True):
        per_sample = sorted(n for n, cls in MODELS.items() if getattr(cls, "per_sample", True))
        raise ValueError(f"model={name} outputs one vector per window (a window classifier), but test.task="
                         f"{task.name} needs an output per brain sample: use it with test.task=classification "
                         f"(e.g. recipe=word_classification), or pick one of {per_sample} for {task.name}")


def check_best_metric(metric: str | None, objective: Objective, task: Task, ks: tp.Sequence[int]) -> None:
    """Raise ``KeyError`` listing the valid names when ``optim.best_metric`` cannot select epochs (before any data
    is prepared, so that a typo costs no epoch)."""
    if metric is None:
        return
    allowed = list(dict.fromkeys(["loss", *objective.weights, *task.selection_metrics(ks)]))  # each name once
    if metric not in allowed:
        raise KeyError(f"optim.best_metric={metric!r} is not a validation metric of test.task={task.name} with "
                       f"loss.name={objective.terms[0]}; valid names: {allowed}")


def parent_sig(parent: tp.Any) -> str:
    """The signature of a parent XP named by signature or by its overrides (a list, signed as `dora run` would)."""
    if isinstance(parent, (int, float)):
        raise ChainError(f"chain.parent={parent!r} was read as a number: quote the signature, "
                         f"e.g. chain.parent=\"'{parent}'\"")
    if isinstance(parent, str):
        return parent
    from .train import main

    return str(main.get_xp([str(a) for a in parent]).sig)


def apply_chain(cfg: DictConfig, model: torch.nn.Module, folder: Path) -> dict[str, tp.Any] | None:
    """Start ``model`` from the parent XP of ``chain.parent`` (None: nothing to do); returns the record of the parent
    saved in the child's checkpoint."""
    chain = _section(cfg, "chain")
    if not chain.get("parent"):
        needed = getattr(model, "parent_required", None)  # a chained stage that means nothing without its parent
        if needed:
            raise ChainError(needed)
        return None
    sig = parent_sig(chain["parent"])
    parent_folder = folder.parent / sig
    if not parent_folder.is_dir():
        raise ChainError(f"parent XP {sig} does not exist in {folder.parent}: sign and train it first "
                         f"(`dora grid NAME --dry_run --init`, then `dora run -f {sig}`)")
    ckpt = parent_state(parent_folder, sig)
    check = getattr(model, "check_parent", None)
    problem = check(ckpt.get("model_spec") or {}) if callable(check) else None
    if problem:
        raise ChainError(f"parent XP {sig}: {problem}")
    modules = chain.get("modules")
    rename = chain.get("rename") or {}
    loaded = load_from_parent(model, ckpt, sig, modules=modules, exclude=chain.get("exclude") or (), rename=rename)
    if chain.get("freeze"):
        logger.info("frozen (not trained, kept in eval mode): %s", ", ".join(chain["freeze"]))
    return {"sig": sig, "modules": modules, "exclude": chain.get("exclude") or [], "freeze": chain.get("freeze") or [],
            "rename": rename, "n_tensors": len(loaded), "parent_data": (ckpt.get("data") or {}).get("fingerprint")}


def resolve_device(name: str) -> str:
    """``auto`` becomes ``cuda`` when a GPU is visible, else ``cpu``; other names must be torch devices (``cpu``,
    ``cuda``, ``cuda:1`` ...): ``ValueError`` naming the valid settings otherwise."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        torch.device(name)
    except RuntimeError:
        raise ValueError(f"device={name!r} is not a torch device: set device=auto (a GPU when one is visible), "
                         "device=cpu, device=cuda or device=cuda:N") from None
    return str(name)


def get_solver(cfg: DictConfig, folder: str | Path, link: HistoryLink) -> Solver:
    """The solver of ``cfg``: task, data, model, objective and optimisation settings wired together."""
    # Objects that need no data first, so that a typo fails before minutes of preprocessing.
    objective = build_loss_objective(cfg)
    task = build_task(cfg)
    if cfg.model.name not in MODELS:
        raise KeyError(f"unknown model {cfg.model.name!r}; valid names: {sorted(MODELS)}")
    check_model_task(str(cfg.model.name), task)
    check_best_metric(cfg.optim.get("best_metric"), objective, task, tuple(cfg.test.ks))
    build_inference(cfg, task)  # bad add-on settings fail before any data is prepared
    optim = _section(cfg, "optim")
    optim["betas"] = tuple(optim.get("betas", (0.9, 0.999)))
    params = OptimParams(**optim)
    datasets = build_all_datasets(cfg, task.targets)
    model = build_model_for(cfg, datasets)
    set_vocabulary = getattr(objective, "set_vocabulary", None)  # objectives that need the class names (DeMEGa)
    if datasets.vocabulary is not None and callable(set_vocabulary):
        set_vocabulary(datasets.vocabulary)
    set_class_counts = getattr(objective, "set_class_counts", None)  # class-balanced objectives (codebook)
    if datasets.vocabulary is not None and callable(set_class_counts):
        set_class_counts(train_class_counts(datasets))
    parent = apply_chain(cfg, model, Path(folder))
    solver = Solver(folder, link, model, objective, datasets, task, params, num_workers=int(cfg.num_workers),
                    loader=str(cfg.get("loader", "threads")),
                    device=resolve_device(cfg.device), seed=int(cfg.seed), test_ks=tuple(cfg.test.ks),
                    test_batch_size=int(cfg.test.batch_size),
                    frozen=tuple(_section(cfg, "chain").get("freeze") or ()), inference=build_inference(cfg, task),
                    test_each_epoch=bool(cfg.test.get("each_epoch", False)),
                    batch_sampler=build_batch_sampler(cfg, datasets))
    solver.extra_checkpoint.update(
        model_spec=getattr(model, "bm2_spec", None),
        loss_spec={"name": cfg.loss.name, "kwargs": _section(cfg, "loss", cfg.loss.name),
                   "weights": _section(cfg, "loss", "weights")},
        parent=parent, config=OmegaConf.to_container(cfg, resolve=True))
    # keys that do not change results may differ on resume (paths, devices, workers ...: dora.exclude)
    solver.ignore_config = ("dora", "slurm", *[str(k) for k in cfg.dora.get("exclude", [])])
    return solver
