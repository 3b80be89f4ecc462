"""Typed validation of plain YAML data against dataclasses, with errors that point into the file.

``Source`` remembers the file and the line of every key path while the YAML is read (duplicate keys
are an error, not silently overwritten). ``coerce`` turns plain data into a typed value, checking
types, unknown keys (with a suggestion for misspellings) and missing fields, and the ranges
declared with the types: ``Annotated[int, Check(...)]`` (``PositiveInt``, ``Name``, ...).

Reading is bounded: nesting deeper than ``MAX_DEPTH`` and documents that aliases expand to more than
``MAX_VALUES`` values are refused, so that no suite file can exhaust the stack, the time or the
memory of the later passes (which all walk the expanded data).
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import yaml

from ..errors import SuiteError, did_you_mean

Path_ = tuple[str | int, ...]


MAX_DEPTH = 64  # nested mappings and lists; real suites use fewer than 10
MAX_VALUES = 100_000  # values once aliases are expanded; real suites have a few hundred


class _Loader(yaml.SafeLoader):
    """YAML 1.1 reads ``1e-4`` as a string; accept YAML 1.2 floats, which users write."""

    def __init__(self, stream: str):
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        # PyYAML composes recursively: without a limit, 10 000 '[' end in a RecursionError.
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise yaml.composer.ComposerError(
                    None, None, f"nested deeper than {MAX_DEPTH} levels",
                    self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)(?:[eE][-+]?[0-9]+)?$"
               r"|^[-+]?\.(?:inf|Inf|INF)$|^\.(?:nan|NaN|NAN)$"),
    list("-+0123456789."),
)


def format_path(path: Path_) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


@dataclass
class Source:
    """Where each key path of a document came from: a file and its lines, or the command line."""

    file: str
    lines: dict[Path_, int | str] = field(default_factory=dict)

    def line(self, path: Path_) -> int | str | None:
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return self.lines.get((), None)

    def error(self, path: Path_, message: str) -> SuiteError:
        line = self.line(path)
        if isinstance(line, str):  # a value given on the command line
            return SuiteError(message, file=line, key=format_path(path))
        return SuiteError(message, file=self.file, line=line, key=format_path(path))


def load_yaml(text: str, file: str) -> tuple[Any, Source]:
    """Parse ``text`` and record the line of every key path."""
    source = Source(file)
    try:
        loader = _Loader(text)
        try:
            node = loader.get_single_node()
            if node is not None:
                _measure(node, 1, {}, file)
            data = loader.construct_document(node) if node is not None else None
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        line = mark.line + 1 if mark else None
        raise SuiteError(f"invalid YAML: {error.problem or error}", file=file, line=line) from None
    except yaml.reader.ReaderError as error:  # a character YAML does not allow (before parsing)
        character = ord(error.character) if isinstance(error.character, str) else error.character
        raise SuiteError(f"invalid YAML: character #x{character:04x} at offset {error.position} "
                         "is not allowed", file=file,
                         line=text.count("\n", 0, error.position) + 1) from None
    if node is not None:
        _record_lines(node, (), source)
    return data, source


def _measure(node: yaml.Node, depth: int, sizes: dict[int, tuple[int, int]], file: str
             ) -> tuple[int, int]:
    """(values, height) of ``node`` with its aliases expanded, each shared node measured once.
    An alias shares its anchor's node, so a few hundred bytes of nested aliases ("billion
    laughs") can stand for billions of values; ``depth`` also stops a recursive alias."""
    line = node.start_mark.line + 1
    if depth > MAX_DEPTH:
        raise SuiteError(f"nested deeper than {MAX_DEPTH} levels (aliases included)",
                         file=file, line=line)
    if id(node) not in sizes:
        children = ([n for pair in node.value for n in pair] if isinstance(node, yaml.MappingNode)
                    else node.value if isinstance(node, yaml.SequenceNode) else [])
        values, height = 1, 1
        for child in children:
            child_values, child_height = _measure(child, depth + 1, sizes, file)
            values, height = values + child_values, max(height, child_height + 1)
            if values > MAX_VALUES:
                raise SuiteError(f"the document expands to more than {MAX_VALUES} values "
                                 "through its aliases (*name); write the values out instead",
                                 file=file, line=line)
        sizes[id(node)] = values, height
    values, height = sizes[id(node)]
    if depth + height - 1 > MAX_DEPTH:
        raise SuiteError(f"nested deeper than {MAX_DEPTH} levels (aliases included)",
                         file=file, line=line)
    return values, height


def _record_lines(node: yaml.Node, path: Path_, source: Source) -> None:
    source.lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = key_node.value
            if key in seen:
                raise SuiteError(f"duplicate key '{key}'", file=source.file,
                                 line=key_node.start_mark.line + 1, key=format_path(path))
            seen.add(key)
            where = (*path, key)
            source.lines[where] = key_node.start_mark.line + 1
            _record_lines(value_node, where, source)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _record_lines(item, (*path, index), source)


@dataclass(frozen=True)
class Check:
    """A condition on a value beyond its type, declared with the type:
    ``Annotated[int, Check(lambda n: n > 0, "a positive integer")]``. ``coerce`` tests it after
    the type and reports ``expected <expected>, got <value>`` at the value's line."""

    test: Callable[[Any], bool]
    expected: str


# Written so that NaN fails them (every comparison with NaN is false).
PositiveInt = Annotated[int, Check(lambda n: n > 0, "a positive integer")]
NonNegativeInt = Annotated[int, Check(lambda n: n >= 0, "a non-negative integer")]
PositiveFloat = Annotated[float, Check(lambda x: 0 < x < math.inf, "a positive finite number")]
NonNegativeFloat = Annotated[float, Check(lambda x: 0 <= x < math.inf,
                                          "a non-negative finite number")]
Beta = Annotated[float, Check(lambda b: 0 <= b < 1, "a number in [0, 1)")]  # Adam's betas
# The β of a nudging rule (equilibrium propagation, predictive coding): its updates divide by it,
# so 0 is refused at its line, not met as an infinite update in the first minibatch.
NudgingBeta = Annotated[float, Check(lambda b: 0 < b < math.inf,
                                     "a positive finite nudging strength (the rule divides by it)")]


def _is_plain_name(text: str) -> bool:
    return re.fullmatch(r"[A-Za-z0-9._-]{1,100}", text) is not None and text not in (".", "..")


# Ids that become folder names (results/<suite>/<dataset>/<algorithm>/): no separators, no
# '..', nothing a shell or a file system treats specially.
PLAIN_NAME = Check(_is_plain_name, "a plain name: 1 to 100 letters, digits, '-', '_' or '.' "
                                   "(not '.' or '..')")
Name = Annotated[str, PLAIN_NAME]

def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls, include_extras=True)


class _Mismatch(SuiteError):
    """The value is not of the expected type at all (as opposed to a bad part or range)."""


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Annotated:
        return _type_name(typing.get_args(tp)[0])
    if tp is int:
        return "an integer"
    if tp is float:
        return "a number"
    if tp is bool:
        return "true or false"
    if tp is str:
        return "a string"
    if origin is Literal:
        return "one of " + ", ".join(repr(v) for v in typing.get_args(tp))
    if origin in (list, tuple):
        args = typing.get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            return f"a list of {len(args)} values"
        return f"a list of {_type_name(args[0]).removeprefix('an ').removeprefix('a ')}s"
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) if a is not type(None) else "null"
                           for a in typing.get_args(tp))
    if origin is dict or dataclasses.is_dataclass(tp):
        return "a mapping"
    return str(tp)


def _shown(value: Any) -> str:
    if isinstance(value, tuple):  # as the user wrote it: a YAML list
        value = list(value)
    return f"'{value}'" if isinstance(value, str) else repr(value)


def coerce(value: Any, tp: Any, path: Path_, source: Source, *, partial: bool = False) -> Any:
    """Check ``value`` against the type ``tp`` and convert it (lists to tuples, mappings to
    dataclasses). With ``partial``, dataclass fields may be missing and a dict of the given
    fields is returned instead (for overrides that are merged later)."""
    origin = typing.get_origin(tp)

    def mismatch(detail: Any = value) -> SuiteError:
        return _mismatch(source, path, f"expected {_type_name(tp)}, got {_shown(detail)}")

    if tp is Any:
        return value
    if origin is Annotated:
        inner, *checks = typing.get_args(tp)
        value = coerce(value, inner, path, source, partial=partial)
        for check in checks:
            if isinstance(check, Check) and not check.test(value):
                raise source.error(path, f"expected {check.expected}, got {_shown(value)}")
        return value
    if dataclasses.is_dataclass(tp):
        return coerce_dataclass(value, typing.cast(type, tp), path, source, partial=partial)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None and type(None) in options:
            return None
        specific: Exception | None = None
        for option in options:
            if option is type(None):
                continue
            try:
                return coerce(value, option, path, source, partial=partial)
            except _Mismatch as error:
                if error.key != format_path(path):
                    specific = specific or error
            except SuiteError as error:
                # The value has this option's shape but a bad part or range: say which.
                specific = specific or error
        raise specific or mismatch()
    if origin is Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            hint = did_you_mean(value, choices) if isinstance(value, str) else ""
            raise _mismatch(source, path, f"expected {_type_name(tp)}, got {_shown(value)}{hint}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, list | tuple):
            raise mismatch()
        args = typing.get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise mismatch(len(value))
            return tuple(coerce(v, a, (*path, i), source) for i, (v, a) in
                         enumerate(zip(value, args, strict=True)))
        items = [coerce(v, args[0], (*path, i), source) for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise mismatch()
        key_tp, value_tp = typing.get_args(tp)
        return {coerce(k, key_tp, (*path, k), source): coerce(v, value_tp, (*path, k), source)
                for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise mismatch()
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise mismatch()
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise mismatch()
        if math.isnan(value):  # it poisons every result that it touches: never a valid setting
            raise source.error(path, "expected a number, not NaN")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise mismatch()
        return value
    raise TypeError(f"unsupported schema type {tp!r}")


def _mismatch(source: Source, path: Path_, message: str) -> SuiteError:
    error = source.error(path, message)
    return _Mismatch(error.message, file=error.file, line=error.line, key=error.key)


def coerce_dataclass(value: Any, cls: type, path: Path_, source: Source, *,
                     partial: bool = False) -> Any:
    if value is None:
        value = {}
    if not isinstance(value, dict):
        raise _mismatch(source, path, f"expected a mapping, got {_shown(value)}")
    hints = _field_types(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    for key in value:
        if key not in fields:
            known = ", ".join(fields) or "none"
            raise source.error((*path, key), f"unknown key{did_you_mean(str(key), fields)}; "
                                             f"expected one of: {known}")
    converted = {key: coerce(item, hints[key], (*path, key), source, partial=partial)
                 for key, item in value.items()}
    if partial:
        return converted
    for name, f in fields.items():
        if name not in converted and f.default is dataclasses.MISSING \
                and f.default_factory is dataclasses.MISSING:
            raise source.error(path, f"missing required key '{name}'")
    return cls(**converted)


def schema_fields(cls: type) -> list[tuple[str, str, Any]]:
    """(name, type description, default) of each field, for documentation and ``bench list``."""
    hints = _field_types(cls)
    rows = []
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else "required")
        rows.append((f.name, _type_name(hints[f.name]), default))
    return rows
