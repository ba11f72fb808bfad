"""Multi-worker trials inside sweeps (#17): `resources.workers` validation, and (slow) a real sweep
whose trials each train on two Ray Train workers."""

from __future__ import annotations

import pytest

from ecg_tune.errors import ConfigError
from tests.tune.test_spaces import error_key, spec_of


def test_workers_are_parsed_with_their_per_worker_resources() -> None:
    res = spec_of({"resources": {"workers": 2, "cpu_per_worker": 1, "gpu_per_worker": 0.5}}).resources
    assert (res.workers, res.cpu_per_worker, res.gpu_per_worker) == (2, 1.0, 0.5)
    assert res.per_trial() == {"CPU": 3.0, "GPU": 1.0}  # the driver's CPU and both workers
    assert spec_of({}).resources.workers == 1 and spec_of({}).resources.per_trial() == {"CPU": 1.0, "GPU": 0.0}


@pytest.mark.parametrize(("resources", "key", "says"), [
    ({"workers": 0}, "resources.workers", "at least 1"),
    ({"workers": 1.5}, "resources.workers", "integer"),
    ({"workers": "two"}, "resources.workers", "number"),
    ({"workers": 2, "cpu_per_worker": 0}, "resources.cpu_per_worker", "positive"),
    ({"workers": 2, "gpu_per_worker": 1.5}, "resources.gpu_per_worker", "whole number"),
    ({"workers": 2, "gpu_per_worker": -1}, "resources.gpu_per_worker", "fraction"),
    ({"workers": 2, "gpu": 1}, "resources.gpu", "gpu_per_worker"),
    ({"cpu_per_worker": 2}, "resources.cpu_per_worker", "workers > 1"),
    ({"workers": 2, "gpus_per_worker": 1}, "resources.gpus_per_worker", "unknown key"),
])
def test_bad_worker_resources_name_the_key(resources: dict, key: str, says: str) -> None:
    with pytest.raises(ConfigError, match=says) as info:
        spec_of({"resources": resources})
    assert info.value.key == key


def test_pbt_with_several_workers_is_refused() -> None:
    from tests.tune.test_searcher import SPEC

    assert error_key({**SPEC, "scheduler": "pbt", "resources": {"workers": 2}}) == "resources.workers"
    assert spec_of({**SPEC, "scheduler": "pbt", "resources": {"workers": 1}}).resources.workers == 1
