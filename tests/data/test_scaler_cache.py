"""The cached robust scaler follows the training windows it is fitted on, not only the settings that chose them."""

from __future__ import annotations

import numpy as np

from bm2.cache import Cache
from bm2.data.build import _fit_scaler

from .test_loader import _train


def test_other_training_windows_get_their_own_scaler(array_recording, tmp_path):
    train = _train(array_recording, tmp_path / "data")
    norm, cache, key = train.norm, Cache(tmp_path / "scalers"), {"same": "settings"}
    rows = np.flatnonzero(train._rec == 0)
    first, second = rows[: len(rows) // 2], rows[len(rows) // 2:]
    a = _fit_scaler(train, 0, first, norm, cache, key, seed=0)
    b = _fit_scaler(train, 0, second, norm, cache, key, seed=0)  # e.g. a label filter or split moved the windows
    again = _fit_scaler(train, 0, first, norm, cache, key, seed=0)
    # fitted anew, not the first entry handed back (scales of volts: compare relatively)
    assert not np.allclose(a.scale, b.scale, rtol=1e-3, atol=0)
    np.testing.assert_array_equal(again.scale, a.scale)  # the same windows still reuse their entry
