"""The compiled RandomResizedCrop / TimeOut kernel (ecg_tune/ssl/augment/native.py): the same values as
the eager PyTorch code for every shape and parameter, the fused pipeline the same as its steps, and
a clean fallback when it cannot be built."""

from __future__ import annotations

import multiprocessing
import os
import shutil
import subprocess
import sys

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ecg_tune.ssl.augment import build_pipeline, native
from ecg_tune.ssl.augment.random_resized_crop import CropThenTimeOut, RandomResizedCrop, crop_map, lerp_at

needs_kernel = pytest.mark.skipif(
    native.compiler() is None or not native.enabled(), reason="no C compiler (or ECG_TUNE_NATIVE=0): eager only"
)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def steps(names: list[str], **params) -> list:
    return list(build_pipeline(names, params, 100.0).steps)


def eager_crop(rrc: RandomResizedCrop, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """The eager path, written out: knots from the same draws, crop_map, lerp_at."""
    batch, _, length = x.shape
    start, crop, sums = rrc.draw(batch, length, x.device, g)
    left, frac = crop_map(start, rrc.knots(crop, sums), x.dtype)
    return lerp_at(x, left, frac)


def close(a: torch.Tensor, b: torch.Tensor, x: torch.Tensor) -> None:
    # Both are torch's lerp formula; they may differ by one rounding where only one of them uses a
    # fused multiply-add (scalar tails). 1e-6 relative to the signal's scale is a few float32 ulps.
    torch.testing.assert_close(a, b, rtol=0, atol=1e-6 * float(x.abs().max()), check_dtype=True)


@needs_kernel
def test_the_kernel_builds_and_loads_where_a_compiler_exists():
    assert native.library() is not None


@needs_kernel
@settings(max_examples=40, deadline=None)
@given(
    batch=st.integers(1, 40),
    leads=st.integers(1, 13),
    length=st.integers(3, 300),
    lo=st.floats(0.01, 1.0),
    width=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**31 - 1),
)
def test_kernel_equals_eager_for_any_shape_and_crop_range(batch, leads, length, lo, width, seed):
    hi = min(1.0, lo + width)
    (rrc,) = steps(["random_resized_crop"], random_resized_crop={"min_fraction": lo, "max_fraction": hi})
    x = torch.randn(batch, leads, length, generator=gen(seed))
    got = rrc(x, gen(seed + 1))
    want = eager_crop(rrc, x, gen(seed + 1))
    close(got, want, x)
    # Crop samples land on their positions bit for bit (weight 0 there in both).
    start, crop, knots = rrc.sample(batch, length, "cpu", gen(seed + 1))
    for b in range(batch):
        placed = knots[b, : crop[b]].long()
        assert torch.equal(got[b][:, placed], x[b, :, start[b] : start[b] + crop[b]])


@needs_kernel
def test_kernel_handles_long_gaps_and_two_sample_crops():
    # Crops of 2-5 samples stretched over 250: gaps far above the kernel's exact-quotient table.
    (rrc,) = steps(["random_resized_crop"], random_resized_crop={"min_fraction": 0.005, "max_fraction": 0.02})
    x = torch.randn(64, 12, 250, generator=gen(3))
    got = rrc(x, gen(4))
    close(got, eager_crop(rrc, x, gen(4)), x)
    assert (rrc.sample(64, 250, "cpu", gen(4))[1] == 2).any()


@needs_kernel
def test_fused_crop_then_timeout_equals_the_two_eager_steps(monkeypatch):
    pipe = build_pipeline(["random_resized_crop", "timeout"], None, 100.0)
    assert isinstance(pipe._plan[0], CropThenTimeOut) and len(pipe._plan) == 1
    x = torch.randn(200, 12, 250, generator=gen(7))
    before = x.clone()
    got = pipe(x, gen(8))
    assert torch.equal(x, before)
    monkeypatch.setattr(native, "library", lambda: None)  # eager steps, one after the other
    rrc, timeout = pipe.steps
    g = gen(8)
    want = timeout(rrc(x, g), g)
    close(got, want, x)
    assert torch.equal(got == 0, want == 0)  # the same blocks zeroed (inputs are never exactly 0)


@needs_kernel
def test_timeout_in_place_kernel_equals_the_mask_multiply(monkeypatch):
    (timeout,) = steps(["timeout"])
    x = torch.randn(100, 12, 250, generator=gen(9))
    got = timeout.forward_(x.clone(), gen(10))
    monkeypatch.setattr(native, "library", lambda: None)
    assert torch.equal(got, timeout.forward_(x.clone(), gen(10)))
    assert torch.equal(got, timeout(x, gen(10)))


@needs_kernel
def test_threads_split_the_batch_without_changing_the_result():
    (rrc,) = steps(["random_resized_crop"])
    x = torch.randn(3 * native.MIN_ROWS_PER_THREAD + 5, 12, 250, generator=gen(11))
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = rrc(x, gen(12))
        torch.set_num_threads(3)
        three = rrc(x, gen(12))
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, three)


def test_inputs_the_kernel_does_not_take_go_the_eager_way():
    x = torch.randn(4, 2, 50, generator=gen(13))
    start, crop, sums = steps(["random_resized_crop"])[0].draw(4, 50, "cpu", gen(14))
    assert native.resized_crop(x.double(), start, crop, sums) is None
    assert native.resized_crop(x.requires_grad_(True), start, crop, sums) is None
    assert not native.zero_blocks(torch.randn(4, 50, 2).transpose(1, 2), start, crop)  # not contiguous
    assert native.resized_crop(torch.randn(4, 2, 2), start, crop, sums) is None  # T < 3


def test_without_a_compiler_the_crop_runs_eagerly_with_a_warning(monkeypatch, tmp_path, caplog):
    monkeypatch.setenv("ECG_TUNE_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    native.library.cache_clear()
    try:
        with caplog.at_level("WARNING", logger=native.__name__):
            assert native.library() is None
        assert "eager PyTorch" in caplog.text and "no-such-cc" in caplog.text
        (rrc,) = steps(["random_resized_crop"])
        x = torch.randn(8, 12, 250, generator=gen(15))
        assert torch.equal(rrc(x, gen(16)), eager_crop(rrc, x, gen(16)))
    finally:
        native.library.cache_clear()


def test_disabled_by_environment(monkeypatch):
    monkeypatch.setenv("ECG_TUNE_NATIVE", "0")
    native.library.cache_clear()
    try:
        assert native.library() is None
    finally:
        native.library.cache_clear()


def test_a_compile_error_names_the_compiler_and_its_message(monkeypatch, tmp_path):
    fake = tmp_path / "fakecc"
    fake.write_text("#!/bin/sh\necho 'rrc_kernel.c:1: error: something broke' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("CC", str(fake))
    with pytest.raises(RuntimeError, match="fakecc failed to build rrc_kernel.c: .*something broke"):
        native.build(tmp_path / "cache")
    assert not list((tmp_path / "cache").glob("*.so"))  # nothing half-written left behind


@needs_kernel
def test_concurrent_builds_into_one_folder_all_load(tmp_path):
    # Trials starting together on nodes that share a home folder build at the same time.
    code = (
        "import sys, ctypes; from pathlib import Path; from ecg_tune.ssl.augment import native;"
        "p = native.build(Path(sys.argv[1])); ctypes.CDLL(str(p)); print(p)"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    paths = {p.communicate(timeout=120)[0].strip() for p in procs}
    assert all(p.returncode == 0 for p in procs)
    assert len(paths) == 1 and len(list(tmp_path.glob("*.so"))) == 1
    assert not [p for p in tmp_path.iterdir() if p.is_dir()]  # temp folders removed


def test_compiler_lookup_honours_cc(monkeypatch):
    monkeypatch.setenv("CC", "gcc")
    assert native.compiler() in (shutil.which("gcc"), "gcc")


@needs_kernel
@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_splits_batches_across_threads_too():
    # A process forked after the parent used the kernel's thread pool (a DataLoader worker) must
    # not wait on the parent's threads, which the child does not have. The child calls the kernel
    # alone: torch's own intra-op threads are not fork-safe either, hence the precomputed draws.
    (rrc,) = steps(["random_resized_crop"])
    x = torch.randn(4 * native.MIN_ROWS_PER_THREAD, 12, 250, generator=gen(17))
    start, crop, sums = rrc.draw(x.shape[0], 250, "cpu", gen(18))
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        want = native.resized_crop(x, start, crop, sums)  # the parent's pool now exists
        with multiprocessing.get_context("fork").Pool(1) as pool:
            got = pool.apply_async(_kernel_on_two_threads, (x, start, crop, sums)).get(timeout=60)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(torch.from_numpy(got), want)


def _kernel_on_two_threads(x, start, crop, sums):
    torch.set_num_threads(2)
    return native.resized_crop(x, start, crop, sums).numpy()  # by value, not torch's fd sharing


@needs_kernel
@settings(max_examples=60, deadline=None)
@given(
    batch=st.integers(1, 30),
    length=st.integers(3, 400),
    levels=st.sampled_from([0, 3, 50]),  # 0: continuous keys; else keys on a few levels (many ties)
    seed=st.integers(0, 2**31 - 1),
)
def test_subset_selection_in_c_equals_the_sort_in_torch(batch, length, levels, seed):
    """The compiled selection gives the sums of the sort-based reference bit for bit, ties at the
    threshold included (cut by position), for every crop length from 2 to T."""
    from ecg_tune.ssl.augment.random_resized_crop import subset_sums_from_keys

    g = gen(seed)
    keys = torch.rand(batch, length - 2, generator=g)
    if levels:
        keys = (keys * levels).floor() / levels
    crop = torch.randint(2, length + 1, (batch,), generator=g)
    got = native.subset_sums(keys, crop, length)
    want = subset_sums_from_keys(keys, crop, length)
    assert got is not None and torch.equal(got, want)
    # By hand: each row's first crop-2 sums are increasing gaps over (T-crop+1), the rest are 1.
    for b in range(batch):
        inner = int(crop[b]) - 2
        assert torch.all(got[b, inner:] == 1.0)
        gaps = got[b, :inner] * (length - int(crop[b]) + 1) - 0.5
        assert torch.all(gaps.round() >= 0) and torch.all(gaps.round()[1:] >= gaps.round()[:-1])


def test_the_crop_fuses_with_any_step_that_zeroes_one_block_and_with_no_other():
    """RandomResizedCrop asks the following step for the capability (`zeroes_one_block`), not its class."""
    rrc, noise = steps(["random_resized_crop", "gaussian_noise"])
    assert not noise.zeroes_one_block and rrc.then(noise) is None
    rrc, timeout = steps(["random_resized_crop", "timeout"])
    assert timeout.zeroes_one_block and isinstance(rrc.then(timeout), CropThenTimeOut)
