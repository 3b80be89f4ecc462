"""The ``loads`` check: what an algorithm class declares, read without running it. Every other
check builds on it, so a class that declares nothing usable gets one clear FAIL line."""

from __future__ import annotations

import dataclasses
from typing import Any

from ..errors import SuiteError
from ..model.algorithm import Algorithm, Capabilities
from ..spec.schema import Source, coerce_dataclass
from .harness import Failure

SCHEDULE_KEYS = ("feedback_pretraining_epochs", "extra_feedback_epochs")


def check_loads(cls: type[Algorithm]) -> str:
    """Capabilities, label and summary; ``Params`` a frozen dataclass whose defaults survive the
    suite schema; a schedule the suite understands; the methods the capabilities promise."""
    caps = cls.capabilities
    if not isinstance(caps, Capabilities):
        raise Failure(f"capabilities must be a bioplaus_bench.api.Capabilities, got {caps!r}")
    if not caps.supported_layers:
        raise Failure("capabilities support no kind of layer (neither MLP nor CNN nor "
                      "layer_kinds): the algorithm could never run")
    if not set(caps.tasks) & {"classification", "regression"}:
        raise Failure(f"capabilities.tasks {caps.tasks!r} names neither 'classification' nor "
                      "'regression': the algorithm could never run")
    for attribute in ("label", "summary"):
        if not isinstance(getattr(cls, attribute), str):
            raise Failure(f"{attribute} must be a string, got {getattr(cls, attribute)!r}")
    params = cls.Params
    # typeshed's DataclassInstance declares only __dataclass_fields__, not the params.
    if not dataclasses.is_dataclass(params) \
            or not params.__dataclass_params__.frozen:  # type: ignore[attr-defined]
        raise Failure(f"Params ({params.__name__}) must be a frozen dataclass: "
                      "@dataclass(frozen=True)")
    missing = [f.name for f in dataclasses.fields(params)
               if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise Failure(f"Params ({params.__name__}) needs defaults for {', '.join(missing)}")
    defaults = params()
    try:  # the defaults, written into a suite, must validate back to the same value
        raw = {f.name: _plain(getattr(defaults, f.name)) for f in dataclasses.fields(params)}
        validated = coerce_dataclass(raw, params, (), Source("<Params defaults>"))
    except TypeError as error:
        raise Failure(f"Params ({params.__name__}) uses a type suites cannot give: {error}; "
                      "use int, float, bool, str, Literal, tuples, lists or dataclasses") from None
    except SuiteError as error:
        raise Failure(f"a default of Params ({params.__name__}) does not match its type: "
                      f"{error.key}: {error.message}") from None
    if validated != defaults:
        raise Failure(f"Params defaults do not survive validation: {defaults!r} became "
                      f"{validated!r}")
    schedule = cls.default_schedule
    if not isinstance(schedule, dict) or any(
            key not in SCHEDULE_KEYS or isinstance(value, bool) or not isinstance(value, int)
            or value < 0 for key, value in schedule.items()):
        raise Failure(f"default_schedule must map {' / '.join(SCHEDULE_KEYS)} to non-negative "
                      f"integers, got {schedule!r}")
    if cls.forward_updates is Algorithm.forward_updates:
        raise Failure("forward_updates is not implemented")
    if caps.trainable_feedback and cls.feedback_step is Algorithm.feedback_step:
        raise Failure("capabilities.trainable_feedback is set but feedback_step is not implemented")
    fields = ", ".join(f"{f.name}={getattr(defaults, f.name)!r}" for f in dataclasses.fields(params))
    return f"capabilities: {caps.describe()}; {params.__name__}({fields})"


def _plain(value: Any) -> Any:
    """A value as a suite would write it: dataclasses as mappings, tuples as lists."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    return value

