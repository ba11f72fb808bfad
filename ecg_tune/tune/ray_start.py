"""Ray start-up for a sweep: start a local instance or connect to a cluster (address, token auth),
the cluster's trial slots, and how often Ray snapshots the experiment state."""

from __future__ import annotations

import logging
import os
from typing import Any

from ecg_tune.errors import ConfigError, EcgTuneError
from ecg_tune.tune.space_schema import SweepSpec

log = logging.getLogger(__name__)

# How often Ray snapshots the experiment state, unless the user set it: see snapshot_period.
_USER_SNAPSHOT_S = os.environ.get("TUNE_GLOBAL_CHECKPOINT_S")


def init_ray(address: str | None, spec: SweepSpec) -> None:
    """Connect to a Ray cluster (`auto`, `HOST:PORT`, or `$RAY_ADDRESS`) or start a local one.

    - A local start (no address anywhere) takes every CPU this process may use, lets Ray detect GPUs,
      and starts no dashboard.
    - Connecting: `HOST:PORT` is the head's GCS port (`ray start --head --port`). It is probed with a
      plain TCP connect first, because Ray's own client retries an unreachable or wrong address for a
      long time while ignoring SIGTERM (platform notes §7.2).
    - Token auth (platform notes §3.7): `RAY_AUTH_MODE` is Ray's and is never overridden. When it is
      unset but a token is given (`RAY_AUTH_TOKEN` / `RAY_AUTH_TOKEN_PATH`), the user clearly means
      token auth, which Ray would not enable by itself for an explicit address: it is set to `token`.
    Errors become one `EcgTuneError` line that says what to check.
    """
    import socket

    import ray

    if ray.is_initialized():
        return
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": True, "configure_logging": True,
                              "logging_level": logging.WARNING}
    address = (address or os.environ.get("RAY_ADDRESS") or "").strip() or None

    def auth_hint() -> str:
        mode = os.environ.get("RAY_AUTH_MODE")
        token = "RAY_AUTH_TOKEN" in os.environ or "RAY_AUTH_TOKEN_PATH" in os.environ
        return (f"RAY_AUTH_MODE={mode or '(unset)'}, token {'given' if token else 'not given'}; a cluster started "
                "with token auth needs RAY_AUTH_MODE=token and the same token (RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH) "
                "on every node and on this driver (cluster/README.md, Security)")

    if address is None:
        try:
            num_cpus = len(os.sched_getaffinity(0))
        except AttributeError:  # not on Linux
            num_cpus = os.cpu_count() or 1
        try:
            # "local": never join a cluster that `ray start` left in /tmp/ray/ray_current_cluster.
            ray.init(address="local", num_cpus=num_cpus, **kwargs)
        except Exception as exc:
            raise EcgTuneError(f"could not start a local Ray instance: {exc}") from exc
        return

    if "://" in address:
        raise ConfigError("--address", f"{address!r}: Ray Client addresses (ray://) are not supported; run the sweep "
                                       "on a cluster node (e.g. the head, or via `ray job submit`) with --address auto or HOST:PORT")
    if address != "auto":
        host, sep, port = address.rpartition(":")
        host = host.strip("[]")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError("--address", f"{address!r}: expected auto or HOST:PORT (the head's GCS port, e.g. 10.0.0.5:6380)")
        try:
            with socket.create_connection((host, int(port)), timeout=float(os.environ.get("ECG_TUNE_CONNECT_TIMEOUT_S", "10"))):
                pass
        except OSError as exc:
            raise EcgTuneError(f"cannot reach the Ray head at {address} ({exc}); is `ray start --head --port={port}` "
                               "running there, and is the port open from this machine?") from None
    if os.environ.get("ECG_TUNE_SET_RAY_AUTH_MODE"):  # set in ecg_tune/tune/__init__.py, before Ray's import
        log.info("RAY_AUTH_TOKEN given and RAY_AUTH_MODE unset: connecting with RAY_AUTH_MODE=token")
    elif "RAY_AUTH_MODE" not in os.environ and ("RAY_AUTH_TOKEN" in os.environ or "RAY_AUTH_TOKEN_PATH" in os.environ):
        # The token appeared after Ray read its config (imported before this layer): say what to do.
        log.warning("RAY_AUTH_TOKEN is given but RAY_AUTH_MODE is unset, and Ray was imported before ecg_tune.tune "
                    "read it: set RAY_AUTH_MODE=token in the environment to connect with token auth")
    try:
        ray.init(address=address, **kwargs)
    except Exception as exc:
        text = f"{type(exc).__name__}: {exc}"
        hint = auth_hint() if "auth" in text.lower() or "token" in text.lower() else (
            "is a Ray cluster running there (for auto: on this machine, or RAY_ADDRESS set)? " + auth_hint())
        raise EcgTuneError(f"could not connect to the Ray cluster at {address}: {text.splitlines()[0][:300]}; {hint}") from exc


def snapshot_period(n_trials: int) -> None:
    """Ray writes the state of every trial in each experiment snapshot, so a snapshot costs O(trials).
    Every 2 s up to 100 trials, then proportionally longer (1,000 trials: 20 s), which keeps the
    driver's snapshot work per trial constant. What a driver crash loses in between is bounded
    anyway: trials keep their own newest checkpoint and re-report a final result Ray missed."""
    if _USER_SNAPSHOT_S is None:
        os.environ["TUNE_GLOBAL_CHECKPOINT_S"] = str(max(2, round(n_trials / 50)))


def cluster_slots(spec: SweepSpec) -> int:
    """How many trials fit on the cluster now (0 if not one does yet, e.g. before autoscaling)."""
    import ray

    total = ray.cluster_resources()
    need = spec.resources.per_trial()  # with workers > 1: the driver and its workers
    fits = [total.get(name, 0.0) / amount for name, amount in need.items() if amount > 0]
    return int(min(fits) + 1e-9) if fits else 0
