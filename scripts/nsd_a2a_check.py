"""Neural Speech Decoding's a2a stage on synthesized speech: does the speech encoder + synthesizer reconstruct it?

Spectrograms of smooth random parameter trajectories, rendered by the untrained synthesizer
(:func:`bm2.models.formant_synth.synthesize`) and read back with the release's spectrogram; ``model=nsd`` (stage a2a)
is trained on a pool of them with the ``nsd_a2a`` objective and the recipe's optimiser (Adam, betas (0, 0.99),
lr 2e-3), then scored on held-out trajectories: ``pcc`` as the reconstruction task computes it (Pearson r of each
bin over every frame of every window, averaged over bins) and ``pcc_window`` (over all bins and frames of each
window, averaged over windows), each with the noise drawn (as the release) and with its expected power
(``model.nsd.expected_noise``), next to the same scores of the synthesizer fed the true parameters (the ceiling
set by the noise draws). Quick check without data preparation; the XP path is ``dora run recipe=nsd_a2a``.

    python -m scripts.nsd_a2a_check --steps 300 --batch 16
"""

from __future__ import annotations

import argparse
import logging
import time

import numpy as np
import torch

from bm2.features import nsd_spec
from bm2.models.formant_synth import smooth_random_parameters, synthesize
from bm2.models.nsd import NSDModel
from bm2.objectives import build_objective

logger = logging.getLogger("nsd_a2a_check")


def spectrograms(n: int, frames: int, sex: str, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(spec [n, 256, frames], speech [n, frames])`` of ``n`` synthesized trajectories."""
    params = smooth_random_parameters(n, frames, sex=sex, seed=seed)
    speech = params.pop("speech")
    return nsd_spec.release_spectrogram(synthesize(params, sex=sex, seed=seed))[0], speech


def scores(model: NSDModel, spec: torch.Tensor, batch: int = 16) -> dict[str, float]:
    """``pcc`` (per bin over all frames, mean over bins) and ``pcc_window`` (mean over windows) of the model's
    reconstruction of ``spec`` (evaluation mode)."""
    from torchmetrics.functional import pearson_corrcoef

    flat = lambda x: x.permute(0, 2, 1).reshape(-1, x.shape[1]).double()  # noqa: E731
    result = {}
    model.eval()
    for expected in (False, True):
        model.expected_noise = expected
        with torch.no_grad():
            out = torch.cat([model(spec[i:i + batch])["output"] for i in range(0, len(spec), batch)])
        per_bin = pearson_corrcoef(flat(out), flat(spec)).numpy()
        windows = [float(np.corrcoef(o.flatten().numpy(), s.flatten().numpy())[0, 1]) for o, s in zip(out, spec)]
        suffix = "_expected_noise" if expected else ""
        result.update({"pcc" + suffix: round(float(np.nanmean(per_bin)), 4),
                       "pcc_window" + suffix: round(float(np.mean(windows)), 4)})
    model.expected_noise = False
    model.train()
    return result


def ceiling(n: int, frames: int, sex: str, seed: int) -> dict[str, float]:
    """The PCC of the synthesizer fed the TRUE parameters (drawn and expected noise) against the spectrograms of
    :func:`spectrograms`: what a perfect speech encoder would score, the noise draws differing."""
    from torchmetrics.functional import pearson_corrcoef

    from bm2.models.formant_synth import FormantSynthesizer

    params = smooth_random_parameters(n, frames, sex=sex, seed=seed)
    params.pop("speech")
    target = nsd_spec.release_spectrogram(synthesize(params, sex=sex, seed=seed))[0]
    flat = lambda x: x.permute(0, 2, 1).reshape(-1, x.shape[1]).double()  # noqa: E731
    synth, out = FormantSynthesizer(sex=sex), {}
    for expected in (False, True):
        with torch.no_grad():
            spec = synth(params, waveform=False, generator=torch.Generator().manual_seed(seed + 1),
                         expected_noise=expected)["output"]
        out["ceiling_pcc" + ("_expected_noise" if expected else "")] = round(
            float(np.nanmean(pearson_corrcoef(flat(spec), flat(target)).numpy())), 4)
    return out


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--frames", type=int, default=128)
    parser.add_argument("--train", type=int, default=256, help="training trajectories")
    parser.add_argument("--test", type=int, default=32, help="held-out trajectories")
    parser.add_argument("--sex", default="female")
    parser.add_argument("--channels", type=int, default=128)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--every", type=int, default=50, help="report every N steps")
    parser.add_argument("--no-background-mlp", action="store_true",
                        help="model.nsd.background_mlp=false (the background's level only; ~3x faster on CPU)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.manual_seed(args.seed)
    train, speech = spectrograms(args.train, args.frames, args.sex, args.seed)
    test, _ = spectrograms(args.test, args.frames, args.sex, args.seed + 10_000)
    model = NSDModel(sex=args.sex, channels=args.channels, background_mlp=not args.no_background_mlp)
    objective = build_objective("nsd_a2a")
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr, betas=(0.0, 0.99))
    logger.info("true parameters: %s", ceiling(args.test, args.frames, args.sex, args.seed + 10_000))
    result = scores(model, test)
    logger.info("step 0: test %s", result)
    start = time.time()
    for step in range(1, args.steps + 1):
        idx = torch.randint(len(train), (args.batch,))
        batch = {"features": train[idx], "speech": speech[idx]}
        optimizer.zero_grad()
        loss = objective.total(objective(batch, model(batch["features"])))
        loss.backward()
        optimizer.step()
        if step % args.every == 0 or step == args.steps:
            result = scores(model, test)
            logger.info("step %d (%.0f s): loss %.3f, test %s", step, time.time() - start, float(loss.detach()), result)
    return result


if __name__ == "__main__":
    main()
