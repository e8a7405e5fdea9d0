"""Search spaces: validation, the dict/YAML form, conditions, grids, drawing through Optuna."""

from __future__ import annotations

import optuna
import pytest

from prefect_hpo.errors import SearchSpaceError
from prefect_hpo.space import Categorical, Fixed, Float, Int, SearchSpace, config_hash


@pytest.mark.parametrize(
    ("space", "needle"),
    [
        ({"lr": Float(0.1, 0.1)}, "low (0.1) must be below high (0.1)"),
        ({"lr": Float(1.0, 0.5)}, "must be below high"),
        ({"lr": Float(0.0, 1.0, log=True)}, "log scale needs low > 0"),
        ({"n": Int(-1, 5, log=True)}, "log scale needs low > 0"),
        ({"act": Categorical([])}, "at least one choice"),
        ({"x": {"type": "gaussian", "mu": 0}}, "unknown type 'gaussian'"),
        ({"x": Float(0.0, 1.0, step=0.3)}, "does not divide the range"),
        ({"n": Int(0, 10, step=3)}, "does not divide the range"),
        ({"n": Int(0, 10.5)}, "must be an integer"),  # type: ignore[arg-type]
        ({"x": {"low": 0, "high": 1}}, "needs a 'type'"),
        ({"x": [1, 2, 3]}, "a bare list is ambiguous"),
        ({"x": Float(0, 1), "y": Float(0, 1, when={"z": 1})}, "condition names 'z'"),
        ({"o": Categorical(["a", "b"]), "y": Float(0, 1, when={"o": "c"})}, "are not choices of 'o'"),
        ({"x": Fixed(object())}, "not JSON-serializable"),
        ({}, "non-empty mapping"),
    ],
)
def test_invalid_spaces_name_the_parameter_and_the_fix(space: dict, needle: str) -> None:
    with pytest.raises(SearchSpaceError) as info:
        SearchSpace.build(space)
    assert needle in str(info.value)


def test_cyclic_conditions_are_refused() -> None:
    with pytest.raises(SearchSpaceError, match="cycle"):
        SearchSpace.build({"a": Categorical([1, 2], when={"b": 1}), "b": Categorical([1, 2], when={"a": 1})})


def test_dict_and_yaml_forms_round_trip() -> None:
    space = SearchSpace.build(
        {
            "lr": Float(1e-4, 1e-1, log=True),
            "wd": Float(0.0, 0.5, step=0.1),
            "layers": Int(1, 4),
            "units": Int(16, 256, log=True),
            "opt": Categorical(["sgd", "adam"]),
            "momentum": Float(0.0, 0.9, when={"opt": "sgd"}),
            "shape": Categorical([[1, 2], {"k": 3}]),
            "epochs": 10,
        }
    )
    plain = space.to_dict()
    assert plain["epochs"] == {"type": "fixed", "value": 10}
    assert plain["momentum"]["when"] == {"opt": "sgd"}
    assert SearchSpace.build(plain) == space
    import yaml

    assert SearchSpace.build(yaml.safe_dump(plain)).to_dict() == plain


def test_yaml_document_by_hand() -> None:
    space = SearchSpace.from_yaml(
        """
        lr: {type: float, low: 0.0001, high: 0.1, log: true}
        act: {type: categorical, choices: [relu, tanh]}
        batch: 64
        """
    )
    assert isinstance(space.params["lr"], Float) and space.params["lr"].log
    assert space.params["batch"] == Fixed(64)


def test_conditional_parameter_appears_only_when_its_parent_matches() -> None:
    space = SearchSpace.build(
        {
            "momentum": Float(0.0, 0.9, when={"opt": ["sgd", "nesterov"]}),  # child before parent: reordered
            "opt": Categorical(["sgd", "nesterov", "adam"]),
        }
    )
    assert list(space.params) == ["opt", "momentum"]
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(60):
        config = space.suggest(study.ask())
        space.validate_config(config)
        assert ("momentum" in config) == (config["opt"] in ("sgd", "nesterov"))
        seen.add(config["opt"])
    assert seen == {"sgd", "nesterov", "adam"}


def test_grid_expands_conditions_steps_and_resolution() -> None:
    space = SearchSpace.build(
        {
            "opt": Categorical(["sgd", "adam"]),
            "momentum": Float(0.0, 0.5, step=0.25, when={"opt": "sgd"}),
            "lr": Float(1e-3, 1e-1, log=True),
            "layers": Int(1, 3),
            "epochs": 5,
        }
    )
    configs = list(space.grid(resolution=3))
    # sgd: 3 momentum x 3 lr x 3 layers; adam: 3 lr x 3 layers
    assert len(configs) == 27 + 9 == space.grid_size(3)
    assert len({config_hash(c) for c in configs}) == len(configs)
    lrs = sorted({c["lr"] for c in configs})
    assert lrs == pytest.approx([1e-3, 1e-2, 1e-1])
    assert all(c["epochs"] == 5 for c in configs)
    assert {c["momentum"] for c in configs if "momentum" in c} == {0.0, 0.25, 0.5}
    for c in configs:
        space.validate_config(c)


def test_json_valued_choices_survive_optuna() -> None:
    space = SearchSpace.build({"shape": Categorical([[64, 64], [128], {"depth": 3}])})
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    values = {config_hash(space.suggest(study.ask())) for _ in range(30)}
    assert len(values) == 3


def test_config_hash_ignores_key_order() -> None:
    assert config_hash({"a": 1, "b": [1, 2]}) == config_hash({"b": [1, 2], "a": 1})
    assert config_hash({"a": 1}) != config_hash({"a": 2})


def test_validate_config_rejects_strangers() -> None:
    space = SearchSpace.build({"opt": Categorical(["sgd", "adam"]), "m": Float(0, 1, when={"opt": "sgd"})})
    with pytest.raises(SearchSpaceError, match="condition"):
        space.validate_config({"opt": "adam", "m": 0.5})
    with pytest.raises(SearchSpaceError, match="unknown parameter"):
        space.validate_config({"opt": "adam", "zzz": 1})
    with pytest.raises(SearchSpaceError, match="lacks parameter 'm'"):
        space.validate_config({"opt": "sgd"})
