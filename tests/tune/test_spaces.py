"""Search-space YAML: schema validation with key paths, conditional sampling, ablation grids."""

from __future__ import annotations

import pickle
import textwrap
from pathlib import Path

import optuna
import pytest
import yaml

from ecg_tune.errors import ConfigError
from ecg_tune.tune.spaces import SearchSpace, load_spec, subset_flag, trial_config, validate_flat
from tests.tune.conftest import BASE, error_key, spec_of

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("path", sorted((REPO / "search_spaces").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_spaces_validate(path: Path) -> None:
    spec = load_spec(path)
    assert spec.name == path.stem


def test_unknown_top_level_key_is_named() -> None:
    assert error_key({"schedular": "asha"}) == "schedular"


def test_unknown_method_names_branch_path() -> None:
    key = error_key({"space": {"method.name": {"branch": {"simclr": {}, "moco": {}}}}})
    assert key == "space.method.name"


def test_unknown_method_parameter_names_yaml_path() -> None:
    space = {"method.name": {"branch": {"byol": {"method.temperature": {"float": [0.1, 1.0]}}}}}
    key = error_key({"space": space})
    assert key == "space.method.name.branch.byol.method.temperature"


def test_unknown_encoder_and_augmentation() -> None:
    assert error_key({"fixed": {"encoder.name": "resnet9000"}}) in ("encoder", "fixed.encoder.name")
    with pytest.raises(ConfigError, match="unknown augmentation 'mixup'"):
        spec_of({"fixed": {"augment.pipeline": "timeout,mixup"}})


@pytest.mark.parametrize(
    ("node", "suffix"),
    [
        ({"float": [1.0, 0.1]}, "float"),
        ({"float": [0.0, 1.0], "log": True}, "log"),
        ({"int": [1, 5], "step": -1}, "step"),
        ({"choice": []}, "choice"),
        ({"float": [0.1, 1.0], "low": 3}, "low"),
        ({"float": [0.1, 1.0], "choice": [1]}, ""),
    ],
)
def test_impossible_bounds_fail_with_key_path(node: dict, suffix: str) -> None:
    key = error_key({"space": {"optim.lr": node}})
    assert key == ("space.optim.lr." + suffix).rstrip(".")


def test_budget_and_resources_checked() -> None:
    assert error_key({"budget": {"trials": 2, "max_epochs": 3, "grace_period": 5}}) == "budget.grace_period"
    assert error_key({"resources": {"cpu": 1, "gpu": 1.5}}) == "resources.gpu"
    assert error_key({"scheduler": "bohb"}) == "scheduler"
    assert error_key({"searcher": {"sampler": "annealing"}}) == "searcher.sampler"


def test_yaml_tags_that_construct_objects_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.yaml"
    path.write_text("name: !!python/object/apply:os.system ['echo pwned > /tmp/ecg_tune_pwned']\n")
    with pytest.raises(ConfigError, match="safe"):
        load_spec(path)
    assert not Path("/tmp/ecg_tune_pwned").exists()


def test_conditional_sampling_respects_branches() -> None:
    spec = spec_of({
        "space": {
            "method.name": {"branch": {
                "simclr": {"method.temperature": {"float": [0.1, 1.0], "log": True}},
                "byol": {"method.tau0": {"float": [0.99, 0.999]}},
            }},
            "optim.lr": {"float": [1e-4, 1e-2], "log": True},
            "augment.pipeline": {"subset": {
                "random_resized_crop": {"augment.random_resized_crop.min_fraction": {"float": [0.3, 0.8]}},
                "timeout": {},
            }, "min_size": 1},
        }
    })
    space = SearchSpace(spec.space, spec.fixed_flat())
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(40):
        trial = study.ask()
        flat = trial_config(space.sample_flat(trial))
        study.tell(trial, 0.5)
        cfg = validate_flat(flat)
        seen.add(cfg.method.name)
        if cfg.method.name == "simclr":
            assert "method.temperature" in flat and "method.tau0" not in flat
            assert 0.1 <= flat["method.temperature"] <= 1.0
        else:
            assert "method.tau0" in flat and "method.temperature" not in flat
        pipeline = flat["augment.pipeline"].split(",")
        assert pipeline and set(pipeline) <= {"random_resized_crop", "timeout"}
        assert pipeline == sorted(pipeline, key=["random_resized_crop", "timeout"].index)
        assert ("augment.random_resized_crop.min_fraction" in flat) == ("random_resized_crop" in pipeline)
        assert flat["train.epochs"] == 3 and flat["data.pretrain"] == "/d"
    assert seen == {"simclr", "byol"}


def test_define_by_run_return_holds_what_ray_cannot_capture() -> None:
    spec = spec_of({"space": {"augment.pipeline": {"subset": {"timeout": {}, "gaussian_noise": {}}}}})
    space = SearchSpace(spec.space, spec.fixed_flat())
    trial = optuna.create_study().ask()
    returned = space(trial)
    assert "augment.pipeline" in returned  # joined subset value: never a direct suggestion
    assert subset_flag("augment.pipeline", "timeout") in trial.params
    assert "train.epochs" in returned


def test_search_space_pickles_by_reference() -> None:
    spec = load_spec(REPO / "search_spaces" / "quickstart.yaml")
    space = SearchSpace(spec.space, spec.fixed_flat())
    data = pickle.dumps(space)
    assert b"ecg_tune.tune.space_sampling" in data and b"__main__" not in data
    # Experiment states pickled before the split name ecg_tune.tune.spaces: it still re-exports the classes.
    import ecg_tune.tune.spaces as old_home

    assert old_home.SearchSpace is SearchSpace and old_home.FloatParam.__name__ == "FloatParam"
    again = pickle.loads(data)
    trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1)).ask()
    assert validate_flat(trial_config(again.sample_flat(trial))).method.name in {"simclr", "byol", "swav"}


def test_ablation_one_at_a_time_and_factorial() -> None:
    abl = {"baseline": {"augment.pipeline": "timeout"},
           "factors": {"augment.pipeline": ["timeout", "gaussian_noise"], "optim.lr": [0.001, 0.01]},
           "seeds": [0, 1]}
    spec = spec_of({"fixed": {"optim.lr": 0.001}, "ablation": abl})
    names = [name for name, _ in spec.ablation.cells()]
    assert names == ["baseline", "augment.pipeline=gaussian_noise", "optim.lr=0.001", "optim.lr=0.01"]
    grid = spec.ablation.grid()
    assert len(grid) == 8 and {g["seed"] for g in grid} == {0, 1}
    spec2 = spec_of({"ablation": {**abl, "design": "full_factorial", "seeds": [0]}})
    assert len(spec2.ablation.cells()) == 5  # baseline + 2x2 combinations (optim.lr is not in the baseline)


def test_ablation_bundle_levels_and_bad_cell_named() -> None:
    abl = {"baseline": {"method.name": "simclr"},
           "factors": {"method": [{"name": "byol", "method.name": "byol", "method.temperature": 0.2}]}}
    with pytest.raises(ConfigError) as info:
        spec_of({"ablation": abl})
    assert "byol" in info.value.key and info.value.key.endswith("method.temperature")


def test_ablation_with_space_is_refused() -> None:
    abl = {"baseline": {}, "factors": {"optim.lr": [0.1]}}
    assert error_key({"ablation": abl, "space": {"optim.lr": {"float": [0.1, 1.0]}}}) == "space"


def test_relative_paths_resolve_against_yaml_folder(tmp_path: Path) -> None:
    doc = dict(BASE, data={"corpora": {"a": "shards/a"}, "pretrain": ["a"], "downstream": "shards/p"})
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(doc))
    flat = load_spec(path).fixed_flat()
    assert flat["data.pretrain"] == str(tmp_path / "shards" / "a")
    assert flat["data.downstream"] == str(tmp_path / "shards" / "p")


def test_docs_example_is_valid(tmp_path: Path) -> None:
    text = textwrap.dedent((REPO / "search_spaces" / "README.md").read_text().split("```yaml")[1].split("```")[0])
    path = tmp_path / "example.yaml"
    path.write_text(text)
    assert load_spec(path).name
