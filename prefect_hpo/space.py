"""Search spaces: parameter types, validation, the plain dict/YAML form, conditions and grids.

A space is an ordered set of named parameters. A parameter may carry a condition
(`when={"optimizer": "sgd"}`): it exists in a configuration only when every named
parent is itself present and has one of the given values. Parents come before
their children in every traversal, so a configuration can be built one parameter
at a time (Optuna's define-by-run style).
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from prefect_hpo.arguments import is_integer, is_number
from prefect_hpo.errors import SearchSpaceError
from prefect_hpo.records import Config

if TYPE_CHECKING:
    from optuna.distributions import BaseDistribution

# Optuna is imported only where a space meets it (`distributions`): a user's script that builds its space
# at its top is loaded by the fork server too (executors/main_script.py), and importing Optuna there
# (0.7 s of CPU here) held back every worker's first trial.

_PRIMITIVES = (type(None), bool, int, float, str)
_STEP_TOLERANCE = 1e-9


def _check_when(name: str, when: Mapping[str, Any] | None) -> dict[str, tuple[Any, ...]]:
    """Normalise a condition to parent -> allowed values; a list means 'any of these'."""
    if when is None:
        return {}
    if not isinstance(when, Mapping) or not when:
        raise SearchSpaceError(
            f"parameter {name!r}: 'when' must be a non-empty mapping such as "
            "{'optimizer': 'sgd'} or {'optimizer': ['sgd', 'adam']}"
        )
    return {str(k): tuple(v) if isinstance(v, list | tuple) else (v,) for k, v in when.items()}


@dataclass(frozen=True)
class Float:
    """A float in [low, high]; `log` samples on a log scale, `step` quantises."""

    low: float
    high: float
    log: bool = False
    step: float | None = None
    when: Mapping[str, Any] | None = None

    def validate(self, name: str) -> None:
        _check_range(name, self.low, self.high, self.log, self.step)


@dataclass(frozen=True)
class Int:
    """An integer in [low, high] (both included); `log` samples on a log scale."""

    low: int
    high: int
    log: bool = False
    step: int = 1
    when: Mapping[str, Any] | None = None

    def validate(self, name: str) -> None:
        for field_name in ("low", "high", "step"):
            value = getattr(self, field_name)
            if not is_integer(value):
                raise SearchSpaceError(
                    f"parameter {name!r}: Int.{field_name} must be an integer, got {value!r}; "
                    "use Float for real-valued ranges"
                )
        _check_range(name, self.low, self.high, self.log, self.step)
        if self.log and self.step != 1:
            raise SearchSpaceError(
                f"parameter {name!r}: Int with log=True needs step=1 (got step={self.step}); "
                "drop the step or the log scale"
            )


@dataclass(frozen=True)
class Categorical:
    """One of a list of JSON-serializable choices."""

    choices: Sequence[Any]
    when: Mapping[str, Any] | None = None

    def validate(self, name: str) -> None:
        if isinstance(self.choices, str | bytes) or not isinstance(self.choices, Sequence):
            raise SearchSpaceError(f"parameter {name!r}: Categorical.choices must be a list, got {self.choices!r}")
        if len(self.choices) == 0:
            raise SearchSpaceError(
                f"parameter {name!r}: Categorical needs at least one choice; give a list such as ['relu', 'tanh']"
            )
        keys = [_json_key(name, c) for c in self.choices]
        if len(set(keys)) != len(keys):
            raise SearchSpaceError(f"parameter {name!r}: Categorical.choices has duplicates")


@dataclass(frozen=True)
class Fixed:
    """A constant: passed to every trial, never searched."""

    value: Any
    when: Mapping[str, Any] | None = None

    def validate(self, name: str) -> None:
        _json_key(name, self.value)


Param = Float | Int | Categorical | Fixed


def _check_range(name: str, low: float, high: float, log: bool, step: float | None) -> None:
    kind = "Int" if isinstance(low, int) and isinstance(high, int) else "Float"
    for field_name, value in (("low", low), ("high", high)):
        if not is_number(value) or not math.isfinite(value):
            raise SearchSpaceError(f"parameter {name!r}: {kind}.{field_name} must be a finite number, got {value!r}")
    if low >= high:
        raise SearchSpaceError(
            f"parameter {name!r}: low ({low}) must be below high ({high}); swap them, or use Fixed for a constant"
        )
    if log and low <= 0:
        raise SearchSpaceError(
            f"parameter {name!r}: a log scale needs low > 0 (got low={low}); raise low above zero or set log=False"
        )
    if step is not None:
        if not is_number(step) or step <= 0:
            raise SearchSpaceError(f"parameter {name!r}: step must be a positive number, got {step!r}")
        if log and kind == "Float":
            raise SearchSpaceError(f"parameter {name!r}: Float cannot have both log=True and a step; drop one")
        n = (high - low) / step
        if abs(n - round(n)) > _STEP_TOLERANCE * max(1.0, abs(n)):
            raise SearchSpaceError(
                f"parameter {name!r}: step {step} does not divide the range [{low}, {high}]; "
                f"choose a step such that (high - low) / step is a whole number"
            )


def _json_key(name: str, value: Any) -> str:
    """The canonical JSON text of a value; raises if the value cannot travel as JSON."""
    try:
        return json.dumps(value, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise SearchSpaceError(
            f"parameter {name!r}: value {value!r} is not JSON-serializable ({exc}); "
            "use numbers, strings, booleans, None, lists or dicts of those"
        ) from None


def config_hash(config: Config) -> str:
    """A stable fingerprint of a configuration (order of keys does not matter)."""
    text = json.dumps(config, sort_keys=True, allow_nan=False, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


class TrialSuggester(Protocol):
    """The part of `optuna.Trial` a space needs to draw a configuration."""

    def suggest_float(
        self, name: str, low: float, high: float, *, step: float | None = None, log: bool = False
    ) -> float: ...

    def suggest_int(self, name: str, low: int, high: int, *, step: int = 1, log: bool = False) -> int: ...

    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any: ...


@dataclass(frozen=True)
class SearchSpace:
    """An ordered, validated set of parameters (parents always before children)."""

    params: dict[str, Param] = field(default_factory=dict)
    conditions: dict[str, dict[str, tuple[Any, ...]]] = field(default_factory=dict)

    @classmethod
    def build(cls, space: SearchSpace | Mapping[str, Any] | str) -> SearchSpace:
        """Build from a SearchSpace, a mapping of parameters / plain values / dicts, or YAML text."""
        if isinstance(space, SearchSpace):
            return space
        if isinstance(space, str):
            return cls.from_yaml(space)
        if not isinstance(space, Mapping) or not space:
            raise SearchSpaceError(
                "space must be a non-empty mapping of parameter name -> Float/Int/Categorical/"
                "Fixed (or their dict form), e.g. {'lr': Float(1e-4, 1e-1, log=True)}"
            )
        params: dict[str, Param] = {}
        for name, value in space.items():
            if not isinstance(name, str) or not name:
                raise SearchSpaceError(f"parameter names must be non-empty strings, got {name!r}")
            params[name] = _param_from_value(name, value)
        return cls._ordered(params)

    @classmethod
    def from_yaml(cls, text: str) -> SearchSpace:
        """Build from a YAML (or JSON) document in the dict form of `to_dict`."""
        import yaml  # local: only this entry point needs it

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise SearchSpaceError(f"space: cannot parse the YAML document: {exc}") from None
        if not isinstance(data, Mapping):
            raise SearchSpaceError("space: the YAML document must be a mapping of parameter names")
        return cls.build(data)

    @classmethod
    def _ordered(cls, params: dict[str, Param]) -> SearchSpace:
        conditions = {name: _check_when(name, p.when) for name, p in params.items()}
        for name, param in params.items():
            param.validate(name)
            for parent, allowed in conditions[name].items():
                if parent not in params:
                    raise SearchSpaceError(
                        f"parameter {name!r}: condition names {parent!r}, which is not in the space; "
                        f"add {parent!r} or fix the name"
                    )
                parent_param = params[parent]
                if isinstance(parent_param, Categorical | Fixed):
                    options = parent_param.choices if isinstance(parent_param, Categorical) else [parent_param.value]
                    keys = {_json_key(parent, o) for o in options}
                    missing = [v for v in allowed if _json_key(parent, v) not in keys]
                    if missing:
                        raise SearchSpaceError(
                            f"parameter {name!r}: condition value(s) {missing!r} are not choices of "
                            f"{parent!r}; use one of {list(options)!r}"
                        )
        order: list[str] = []
        visiting: set[str] = set()

        def visit(name: str) -> None:
            if name in order:
                return
            if name in visiting:
                raise SearchSpaceError(f"parameter {name!r}: its conditions form a cycle; break it")
            visiting.add(name)
            for parent in conditions[name]:
                visit(parent)
            visiting.discard(name)
            order.append(name)

        for name in params:
            visit(name)
        return cls({n: params[n] for n in order}, {n: conditions[n] for n in order})

    def to_dict(self) -> dict[str, Any]:
        """The plain, JSON-ready form that `build` reads back (and a deployment form carries)."""
        out: dict[str, Any] = {}
        for name, p in self.params.items():
            entry: dict[str, Any]
            if isinstance(p, Float):
                entry = {"type": "float", "low": p.low, "high": p.high, "log": p.log}
                if p.step is not None:
                    entry["step"] = p.step
            elif isinstance(p, Int):
                entry = {"type": "int", "low": p.low, "high": p.high, "log": p.log, "step": p.step}
            elif isinstance(p, Categorical):
                entry = {"type": "categorical", "choices": list(p.choices)}
            else:
                entry = {"type": "fixed", "value": p.value}
            if p.when:
                entry["when"] = dict(p.when)
            out[name] = entry
        return out

    def is_active(self, name: str, partial: Config) -> bool:
        """Whether `name` belongs in a configuration whose earlier parameters are `partial`."""
        for parent, allowed in self.conditions[name].items():
            if parent not in partial:
                return False
            key = _json_key(parent, partial[parent])
            if key not in {_json_key(parent, a) for a in allowed}:
                return False
        return True

    def suggest(self, trial: TrialSuggester) -> Config:
        """Draw one configuration through an Optuna trial, parameter by parameter."""
        config: Config = {}
        for name, p in self.params.items():
            if not self.is_active(name, config):
                continue
            if isinstance(p, Fixed):
                config[name] = p.value
            elif isinstance(p, Float):
                config[name] = trial.suggest_float(name, p.low, p.high, step=p.step, log=p.log)
            elif isinstance(p, Int):
                config[name] = trial.suggest_int(name, p.low, p.high, step=p.step, log=p.log)
            else:
                config[name] = _decode_choice(p, trial.suggest_categorical(name, _encoded_choices(p)))
        return config

    def distributions(self, config: Config) -> dict[str, BaseDistribution]:
        """Optuna distributions of the searched parameters present in `config`."""
        from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

        out: dict[str, BaseDistribution] = {}
        for name, p in self.params.items():
            if name not in config or isinstance(p, Fixed):
                continue
            if isinstance(p, Float):
                out[name] = FloatDistribution(p.low, p.high, log=p.log, step=p.step)
            elif isinstance(p, Int):
                out[name] = IntDistribution(p.low, p.high, log=p.log, step=p.step)
            else:
                out[name] = CategoricalDistribution(_encoded_choices(p))
        return out

    def to_optuna_params(self, config: Config) -> dict[str, Any]:
        """The values Optuna stores for `config` (categoricals in their encoded form)."""
        out: dict[str, Any] = {}
        for name, p in self.params.items():
            if name not in config or isinstance(p, Fixed):
                continue
            out[name] = _encode_choice(p, config[name]) if isinstance(p, Categorical) else config[name]
        return out

    def validate_config(self, config: Config) -> None:
        """Raise SearchSpaceError if `config` could not have come from this space."""
        probe: Config = {}
        for name in self.params:
            active = self.is_active(name, probe)
            if not active:
                if name in config:
                    raise SearchSpaceError(
                        f"configuration sets {name!r}, but its condition {self.conditions[name]} is not met"
                    )
                continue
            if name not in config:
                raise SearchSpaceError(f"configuration lacks parameter {name!r}")
            probe[name] = config[name]
        extra = set(config) - set(self.params)
        if extra:
            raise SearchSpaceError(f"configuration has unknown parameter(s) {sorted(extra)}")

    def grid(self, resolution: int = 5) -> Iterator[Config]:
        """Every configuration of the grid, lazily, in a fixed order.

        Categorical, Fixed and Int parameters take every value (Int and Float honour
        `step`); a Float without a step takes `resolution` points, evenly spaced on
        its scale (geometric for log ranges). Conditional parameters branch only
        where their condition holds.
        """
        if resolution < 2:
            raise SearchSpaceError(f"grid resolution must be at least 2, got {resolution}")
        axes = {name: _grid_axis(p, resolution) for name, p in self.params.items()}
        names = list(self.params)

        def expand(i: int, partial: Config) -> Iterator[Config]:
            if i == len(names):
                yield dict(partial)
                return
            name = names[i]
            if not self.is_active(name, partial):
                yield from expand(i + 1, partial)
                return
            for value in axes[name]:
                partial[name] = value
                yield from expand(i + 1, partial)
            del partial[name]

        yield from expand(0, {})

    def grid_size(self, resolution: int = 5) -> int:
        """How many configurations `grid(resolution)` yields."""
        return sum(1 for _ in self.grid(resolution))


def _grid_axis(p: Param, resolution: int) -> list[Any]:
    if isinstance(p, Fixed):
        return [p.value]
    if isinstance(p, Categorical):
        return list(p.choices)
    if isinstance(p, Int):
        if p.log:
            points = {round(v) for v in _geomspace(p.low, p.high, resolution)}
            return sorted(points)
        return list(range(p.low, p.high + 1, p.step))
    if p.step is not None:
        n = round((p.high - p.low) / p.step)
        return [round(p.low + i * p.step, 12) for i in range(n + 1)]
    if p.log:
        return _geomspace(p.low, p.high, resolution)
    return [p.low + (p.high - p.low) * i / (resolution - 1) for i in range(resolution)]


def _geomspace(low: float, high: float, n: int) -> list[float]:
    a, b = math.log(low), math.log(high)
    return [math.exp(a + (b - a) * i / (n - 1)) for i in range(n)]


def _encoded_choices(p: Categorical) -> list[Any]:
    """Optuna takes only primitive choices; other JSON values travel as their JSON text."""
    if all(isinstance(c, _PRIMITIVES) for c in p.choices):
        return list(p.choices)
    return [json.dumps(c, sort_keys=True) for c in p.choices]


def _encode_choice(p: Categorical, value: Any) -> Any:
    if all(isinstance(c, _PRIMITIVES) for c in p.choices):
        return value
    return json.dumps(value, sort_keys=True)


def _decode_choice(p: Categorical, value: Any) -> Any:
    if all(isinstance(c, _PRIMITIVES) for c in p.choices):
        return value
    return json.loads(value)


_TYPES: dict[str, type] = {"float": Float, "int": Int, "categorical": Categorical, "fixed": Fixed}


def _param_from_value(name: str, value: Any) -> Param:
    if isinstance(value, Float | Int | Categorical | Fixed):
        return value
    distributions = sys.modules.get("optuna.distributions")  # not imported: `value` cannot be one
    if distributions is not None and isinstance(value, distributions.BaseDistribution):
        raise SearchSpaceError(f"parameter {name!r}: give Float/Int/Categorical, not an Optuna distribution")
    if isinstance(value, Mapping):
        kind = value.get("type")
        if kind is None:
            raise SearchSpaceError(
                f"parameter {name!r}: a dict needs a 'type' (one of {sorted(_TYPES)}); "
                "for a constant dict write {'type': 'fixed', 'value': {...}}"
            )
        cls = _TYPES.get(str(kind).lower())
        if cls is None:
            raise SearchSpaceError(f"parameter {name!r}: unknown type {kind!r}; use one of {sorted(_TYPES)}")
        fields = {k: v for k, v in value.items() if k != "type"}
        try:
            return cls(**fields)  # type: ignore[no-any-return]
        except TypeError as exc:
            raise SearchSpaceError(f"parameter {name!r}: bad fields for type {kind!r}: {exc}") from None
    if isinstance(value, list | tuple):
        raise SearchSpaceError(
            f"parameter {name!r}: a bare list is ambiguous; write Categorical({list(value)!r}) "
            f"to search over it or Fixed({list(value)!r}) for a constant"
        )
    return Fixed(value)
