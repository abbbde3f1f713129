"""Du-IN's encoder takes any number of tokens (4-s pre-training crops: 40, 3-s epochs: 30), so that a classifier
starts from an encoder pre-trained on crops; the classifier's flattening head fixes its own number."""

import pytest
import torch

from bm2.models.duin import DuinClassifier, DuinEncoder, sinusoidal_embedding, time_embedding
from bm2.models.duin_vq import DuinMAE

SIZES = dict(depth=1, n_heads=2, d_head=8, d_ff=16)


def test_time_embedding_extends_past_the_table():
    table = sinusoidal_embedding(30, 160)
    torch.testing.assert_close(time_embedding(table, 40), sinusoidal_embedding(40, 160))
    torch.testing.assert_close(time_embedding(table, 12), table[:12])
    assert not torch.equal(time_embedding(table, 40)[30:], torch.zeros(10, 160))


def test_encoder_built_for_crops_reads_epochs_and_the_classifier_starts_from_it():
    torch.manual_seed(0)
    mae = DuinMAE(0, 2, 5, 4000, **SIZES, vqvae={"n_codes": 16, "d_code": 8, "decoder_depth": 1}).eval()
    mae.vqvae.codebook.initialised.fill_(True)  # as if loaded from a trained VQ-VAE parent
    crops = torch.randn(3, 5, 4000)
    subject = torch.tensor([0, 1, 0])
    assert mae(crops, subject)["output"].shape == (3, 40, 16)  # 4 s at 1 kHz: 40 tokens
    assert mae.encoder(crops[..., :3000], subject).shape == (3, 30, 160)  # the same encoder on 3-s epochs
    classifier = DuinClassifier(7, 2, 5, 3000, **SIZES).eval()
    loaded = classifier.encoder.load_state_dict(mae.encoder.state_dict(), strict=True)
    assert not loaded.missing_keys and not loaded.unexpected_keys
    epochs = torch.randn(3, 5, 3000)
    torch.testing.assert_close(classifier.encoder(epochs, subject), mae.encoder(epochs, subject))
    assert classifier(epochs, subject).shape == (3, 7)
    with pytest.raises(ValueError, match="built for 30 tokens"):
        classifier(crops, subject)


def test_encoder_sizes_do_not_depend_on_the_window():
    short, long = DuinEncoder(5, 1, 3000, **SIZES), DuinEncoder(5, 1, 4000, **SIZES)
    assert {k: v.shape for k, v in short.state_dict().items()} == {k: v.shape for k, v in long.state_dict().items()}
