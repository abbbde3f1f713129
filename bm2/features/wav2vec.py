"""wav2vec 2.0 activations of the audio (the paper's best speech representation).

The default model is ``facebook/wav2vec2-large-xlsr-53`` (24 transformer layers, 1024 channels); as in
Défossez et al. (2023), the hidden states of layers 14 to 18 are averaged. ``hidden_states[0]`` is the input of
the first transformer layer and ``hidden_states[k]`` the output of layer ``k``, so ``layers`` takes values in
``0 .. num_hidden_layers``.

Weights are never downloaded implicitly (``local_files_only=True`` by default): give a local folder written by
``save_pretrained`` / ``huggingface-cli download``, or a hub name already in the Hugging Face cache (``HF_HOME``).

Processing choices
------------------
* The audio is resampled to 16 kHz and normalised to zero mean and unit variance over the whole file (or
  segment, see below), as ``Wav2Vec2FeatureExtractor`` does when its config says ``do_normalize`` (the
  default when no ``preprocessor_config.json`` is found).
* ``center=True`` pads half a receptive field of zeros on both sides so that frame ``i`` is centred on
  ``i / frame_rate`` seconds, like a centred STFT; the frame rate is 16 kHz divided by the product of the conv
  strides (50 Hz for every published wav2vec 2.0 model).
* Long audio is processed in chunks of at most ``max_seconds`` of input per forward: each chunk keeps the
  frames of its core and sees ``context_seconds`` of extra audio on both sides, whose frames are discarded.
  Chunk edges fall on frame boundaries, so the result has exactly the frames of one long forward; only the
  attention context differs (it is limited to the chunk), which is what a 30 s limit means anyway.
* The feature is **contextual**: each sound event is cut at block boundaries and every piece is processed on
  its own (see :class:`bm2.features.base.SoundFeature`), so no frame inside a block has seen audio of another
  block, hence of another split.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import typing as tp
from pathlib import Path

import numpy as np

from ..cache import Cache
from ..studies.base import Recording
from .base import FeatureError, SoundFeature

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "facebook/wav2vec2-large-xlsr-53"


def _missing_weights(model: str, reason: str) -> FeatureError:
    first = reason.strip().splitlines()[0] if reason.strip() else "not found"
    looks_like_path = model.startswith(("/", ".", "~")) or model.count("/") != 1
    hub_name = DEFAULT_MODEL if looks_like_path else model
    return FeatureError(
        f"wav2vec2: cannot load the model {model!r} ({first}).\n"
        "bm2 never downloads weights implicitly (features.wav2vec2.local_files_only=true). To provide them:\n"
        f"  * on a machine with internet: `huggingface-cli download {hub_name} --local-dir /some/folder`\n"
        "    (or `hf download ...`), copy that folder (config.json + model.safetensors or pytorch_model.bin) here\n"
        "    and set `features.wav2vec2.model=/path/to/folder`;\n"
        "  * or copy a whole Hugging Face cache here and point HF_HOME (or HF_HUB_CACHE) at it, keeping the hub\n"
        "    name as features.wav2vec2.model;\n"
        "  * or, where downloading is allowed, set `features.wav2vec2.local_files_only=false`.")


class Wav2Vec2(SoundFeature):
    """Average of chosen hidden states of a wav2vec 2.0 model, at the model's frame rate (50 Hz)."""

    name = "wav2vec2"
    version = "1"
    contextual = True

    def __init__(self, model: str = DEFAULT_MODEL, layers: tp.Sequence[int] = (14, 15, 16, 17, 18),
                 device: str = "auto", max_seconds: float = 30.0, context_seconds: float = 5.0,
                 local_files_only: bool = True, normalize: bool | None = None, center: bool = True,
                 sample_rate: int = 16000) -> None:
        layers = tuple(int(x) for x in (layers if not isinstance(layers, int) else [layers]))
        if not layers or min(layers) < 0:
            raise FeatureError(f"wav2vec2: layers must be a non-empty list of indices >= 0, got {list(layers)}")
        if max_seconds <= 0 or context_seconds < 0 or max_seconds - 2 * context_seconds <= 0:
            raise FeatureError(f"wav2vec2: need max_seconds > 2 * context_seconds >= 0, got max_seconds="
                               f"{max_seconds}, context_seconds={context_seconds}")
        self.model = str(model)
        self.layers = layers
        self.device = device
        self.max_seconds = float(max_seconds)
        self.context_seconds = float(context_seconds)
        self.local_files_only = bool(local_files_only)
        self.normalize = normalize
        self.center = bool(center)
        self.sample_rate = int(sample_rate)
        self._config: tp.Any = None
        self._model: tp.Any = None
        self._silence: np.ndarray | None = None
        self._norm: bool | None = None

    # -- pickling: never ship the network to DataLoader workers
    def __getstate__(self) -> dict[str, tp.Any]:
        state = self.__dict__.copy()
        state["_model"] = None
        return state

    # -- identity -------------------------------------------------------------------------------------------
    def _local_dir(self) -> Path | None:
        path = Path(self.model).expanduser()
        return path if path.is_dir() else None

    def model_identity(self) -> dict[str, tp.Any]:
        """What identifies the weights: a local folder's path, config hash and file sizes, or the hub name and
        the commit of its cached snapshot."""
        local = self._local_dir()
        if local is not None:
            files = {f.name: f.stat().st_size for f in sorted(local.iterdir())
                     if f.is_file() and f.suffix in (".json", ".safetensors", ".bin")}
            config = local / "config.json"
            digest = hashlib.sha1(config.read_bytes()).hexdigest() if config.exists() else None
            return {"path": str(local.resolve()), "config_sha1": digest, "files": files}
        revision = None
        try:
            from huggingface_hub import try_to_load_from_cache

            found = try_to_load_from_cache(self.model, "config.json")
            if isinstance(found, str):
                revision = Path(found).parent.name  # snapshots/<commit>/config.json
        except Exception:  # noqa: BLE001 - identity is best effort for a hub name that is not cached
            revision = None
        return {"name": self.model, "revision": revision}

    def params(self) -> dict[str, tp.Any]:
        return {"model": self.model_identity(), "layers": list(self.layers), "max_seconds": self.max_seconds,
                "context_seconds": self.context_seconds, "normalize": self.normalize, "center": self.center,
                "sample_rate": self.sample_rate}

    # -- model ----------------------------------------------------------------------------------------------
    @property
    def config(self) -> tp.Any:
        """The model's ``Wav2Vec2Config`` (loaded once; cheap, no weights)."""
        if self._config is None:
            from transformers import Wav2Vec2Config

            try:
                config = Wav2Vec2Config.from_pretrained(self.model, local_files_only=self.local_files_only)
            except (OSError, ValueError) as exc:
                raise _missing_weights(self.model, str(exc)) from None
            n = int(config.num_hidden_layers)
            bad = [x for x in self.layers if x > n]
            if bad:
                raise FeatureError(
                    f"wav2vec2: layers {bad} do not exist in {self.model!r}, which has {n} transformer layers; "
                    f"valid indices are 0..{n} (0 = input of the first layer, k = output of layer k)")
            self._config = config
        return self._config

    @property
    def dimension(self) -> int:
        return int(self.config.hidden_size)

    @property
    def stride(self) -> int:
        """Samples between two frames: the product of the conv strides."""
        return int(np.prod([int(s) for s in self.config.conv_stride]))

    @property
    def receptive_field(self) -> int:
        """Samples seen by one frame of the conv feature encoder."""
        field, jump = 1, 1
        for k, s in zip(self.config.conv_kernel, self.config.conv_stride):
            field += (int(k) - 1) * jump
            jump *= int(s)
        return field

    @property
    def frame_rate(self) -> float:
        return self.sample_rate / self.stride

    def _device(self) -> str:
        if self.device != "auto":
            return self.device
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"

    def _do_normalize(self) -> bool:
        if self.normalize is not None:
            return bool(self.normalize)
        local = self._local_dir()
        if local is not None:
            pre = local / "preprocessor_config.json"
            if pre.exists():
                return bool(json.loads(pre.read_text()).get("do_normalize", True))
            return True
        try:
            from transformers import Wav2Vec2FeatureExtractor

            extractor = Wav2Vec2FeatureExtractor.from_pretrained(self.model, local_files_only=self.local_files_only)
            return bool(extractor.do_normalize)
        except (OSError, ValueError):
            return True

    def load_model(self) -> tp.Any:
        """The ``Wav2Vec2Model`` in eval mode on the chosen device (loaded once)."""
        if self._model is None:
            _ = self.config  # validates the layers before loading the weights
            from transformers import Wav2Vec2Model

            try:
                model = Wav2Vec2Model.from_pretrained(self.model, local_files_only=self.local_files_only)
            except (OSError, ValueError) as exc:
                raise _missing_weights(self.model, str(exc)) from None
            self._model = model.eval().to(self._device())
            logger.info("wav2vec2: loaded %s on %s (layers %s)", self.model, self._device(), list(self.layers))
        return self._model

    # -- computation ----------------------------------------------------------------------------------------
    def _forward(self, x: np.ndarray) -> np.ndarray:
        """Mean of the chosen hidden states for one chunk of (normalised, padded) audio: ``(D, frames)``."""
        import torch

        model = self.load_model()
        device = next(model.parameters()).device
        with torch.inference_mode():
            inp = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))[None].to(device)
            states = model(inp, output_hidden_states=True).hidden_states
            mean = torch.stack([states[k] for k in self.layers]).mean(0)[0]
        return mean.T.float().cpu().numpy()

    def prepare_input(self, wav: np.ndarray, sample_rate: int) -> np.ndarray:
        """Resampled, normalised and (with ``center``) padded waveform, as fed to the model."""
        if sample_rate != self.sample_rate:
            from scipy.signal import resample_poly

            g = math.gcd(int(sample_rate), self.sample_rate)
            wav = resample_poly(wav, self.sample_rate // g, int(sample_rate) // g)
        x = np.asarray(wav, dtype=np.float64)
        if self._norm is None:
            self._norm = self._do_normalize()
        if self._norm:
            x = (x - x.mean()) / np.sqrt(x.var() + 1e-7)
        field = self.receptive_field
        if self.center:
            x = np.pad(x, (field // 2, field // 2))
        if len(x) < field:
            x = np.pad(x, (0, field - len(x)))
        return x.astype(np.float32)

    def compute_sound(self, wav: np.ndarray, sample_rate: int) -> tuple[np.ndarray, float]:
        x = self.prepare_input(wav, sample_rate)
        field, stride = self.receptive_field, self.stride
        n_frames = (len(x) - field) // stride + 1
        max_frames = max(1, (int(self.max_seconds * self.sample_rate) - field) // stride + 1)
        if n_frames <= max_frames:
            return self._forward(x), self.frame_rate
        context = int(self.context_seconds * self.frame_rate)
        core = max(1, max_frames - 2 * context)
        out = np.empty((self.dimension, n_frames), dtype=np.float32)
        for a in range(0, n_frames, core):
            b = min(a + core, n_frames)
            lo, hi = max(0, a - context), min(n_frames, b + context)
            value = self._forward(x[lo * stride:(hi - 1) * stride + field])
            out[:, a:b] = value[:, a - lo:b - lo]
        return out, self.frame_rate

    def silence(self) -> np.ndarray:
        if self._silence is None:
            self._silence = super().silence()
        return self._silence

    def compute_timeline(self, recording: Recording, sample_rate: float, n_times: int,
                         cache: Cache) -> np.ndarray:
        if self._silence is None:  # the value of silence, cached so that cached segments need no model
            def build(writer: tp.Any) -> None:
                writer.save("value", SoundFeature.silence(self).astype(np.float32))

            entry = cache.get(f"sound-{self.name}-silence", {"params": self.params()}, self.version, build)
            self._silence = np.array(entry["value"])
        return super().compute_timeline(recording, sample_rate, n_times, cache)
