"""Domain exceptions survive pickle and copy.copy with their message and fields (issue #20, item 2).

Ray copies and pickles the exception a trial raises; an exception that cannot be rebuilt from its
`args` reached the driver as `TypeError: ConfigError.__init__() missing 1 required positional argument`.
"""

from __future__ import annotations

import copy
import pickle

from hypothesis import given
from hypothesis import strategies as st

from ecg_tune.errors import CheckpointError, ConfigError, DatasetError, EcgTuneError, RecordError

text = st.text(min_size=0, max_size=40)


def _same(a: BaseException, b: BaseException) -> None:
    assert type(a) is type(b)
    assert str(a) == str(b)
    assert a.args == b.args
    assert a.__dict__ == b.__dict__


def _round_trips(error: EcgTuneError) -> None:
    _same(error, copy.copy(error))
    _same(error, copy.deepcopy(error))
    _same(error, pickle.loads(pickle.dumps(error)))


@given(key=text, reason=text)
def test_config_error_survives_pickle_and_copy(key: str, reason: str) -> None:
    error = ConfigError(key, reason)
    _round_trips(error)
    assert pickle.loads(pickle.dumps(error)).key == key
    assert copy.copy(error).reason == reason


@given(path=text, reason=text)
def test_record_error_survives_pickle_and_copy(path: str, reason: str) -> None:
    error = RecordError(path, reason)
    _round_trips(error)
    assert copy.copy(error).path == path


@given(message=text)
def test_message_only_errors_survive_pickle_and_copy(message: str) -> None:
    for cls in (EcgTuneError, DatasetError, CheckpointError):
        _round_trips(cls(message))


def test_the_message_ray_showed_as_a_type_error_is_kept() -> None:
    error = ConfigError("train.batch_size", "256 is larger than the 81 usable records")
    assert str(copy.copy(error)) == "train.batch_size: 256 is larger than the 81 usable records"


def test_a_subclass_with_its_own_arguments_elsewhere_survives_too() -> None:
    class Diverged(EcgTuneError):
        def __init__(self, epoch: int, loss: float):
            self.epoch, self.loss = epoch, loss
            super().__init__(f"diverged at epoch {epoch}: loss {loss}")

    error = Diverged(3, 1.5)
    copied = copy.copy(error)
    assert str(copied) == "diverged at epoch 3: loss 1.5" and copied.epoch == 3
