import pytest
import torch

from bm2.solvers.base import BaseSolver, CheckpointError, LocalLink, load_checkpoint


class Crash(Exception):
    pass


class ToySolver(BaseSolver):
    """Fits a scalar; ``valid`` follows a scripted sequence to exercise best state and early stopping."""

    def __init__(self, folder, link, valid_losses, crash_at=None, **kwargs):
        super().__init__(folder, link, **kwargs)
        self.model = torch.nn.Linear(1, 1)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=0.1)
        self.register_stateful(model=self.model, optimizer=self.optimizer)
        self.valid_losses = valid_losses
        self.crash_at = crash_at
        self.trained_epochs = []

    def train_stage(self):
        if self.epoch == self.crash_at:
            raise Crash()
        self.trained_epochs.append(self.epoch)
        loss = (self.model(torch.ones(1, 1)) - 3).pow(2).mean()
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        return {"loss": loss.item()}

    def valid_stage(self):
        return {"loss": self.valid_losses[self.epoch - 1]}

    def test_stage(self):
        return {"weight": self.model.weight.item(), "epochs_seen": len(self.history)}


def test_resume_after_crash_repeats_and_loses_no_epoch(tmp_path):
    link = LocalLink()
    losses = [5, 4, 3, 2, 1]
    first = ToySolver(tmp_path, link, losses, crash_at=3, epochs=5)
    with pytest.raises(Crash):
        first.run()
    assert [h["valid"]["loss"] for h in link.history] == [5, 4]
    second = ToySolver(tmp_path, link, losses, epochs=5)
    last = second.run()
    assert second.trained_epochs == [3, 4, 5]
    assert [h["valid"]["loss"] for h in link.history] == losses
    assert "test" in last and last["test"]["epochs_seen"] == 5
    # a finished XP does nothing more when run again
    third = ToySolver(tmp_path, link, losses, epochs=5)
    third.run()
    assert third.trained_epochs == []


def test_history_ahead_of_checkpoint_is_rewound(tmp_path):
    link = LocalLink()
    solver = ToySolver(tmp_path, link, [3, 2, 1], epochs=2)
    solver.run()
    link.history.append({"train": {}, "valid": {"loss": 0.0}})  # e.g. killed between two writes
    ToySolver(tmp_path, link, [3, 2, 1], epochs=2).restore()
    assert len(link.history) == 2


def test_early_stopping_and_best_state(tmp_path):
    link = LocalLink()
    solver = ToySolver(tmp_path, link, [3, 1, 2, 2, 2, 2, 2], epochs=7, patience=2)
    solver.run()
    assert solver.trained_epochs == [1, 2, 3, 4]  # best at epoch 2, two epochs without improvement
    state = load_checkpoint(tmp_path / "checkpoint.th")
    assert state["best_state"] is not None and len(state["history"]) == 4


def test_bad_checkpoint_is_a_clear_error(tmp_path):
    (tmp_path / "checkpoint.th").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="unreadable"):
        ToySolver(tmp_path, LocalLink(), [1], epochs=1).run()
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_checkpoint(tmp_path / "missing.th")


class MonitoredSolver(ToySolver):
    """Records a per-epoch ``test_epoch`` stage whose values would pick another epoch if they selected anything."""

    def monitor_stages(self):
        return {"test_epoch": {"loss": float(10 - self.epoch)}}


def test_monitor_stages_are_recorded_but_select_and_stop_nothing(tmp_path):
    link = LocalLink()
    solver = MonitoredSolver(tmp_path, link, [1, 2, 3, 4], epochs=4, patience=2)
    last = solver.run()
    # validation is best at epoch 1 and stops the run 2 epochs later; the monitor (best at the last epoch) is ignored
    assert solver.trained_epochs == [1, 2, 3]
    assert [h["test_epoch"]["loss"] for h in link.history] == [9.0, 8.0, 7.0]
    assert "test" in last and last["test"]["epochs_seen"] == 3
    assert solver.best_value() == 1
