"""Declared limits of a setting: one declaration, the same refusal wherever a value comes from.

A settings class names each field's type and allowed values once, in a class-level dict of
constraint objects (as scikit-learn's ``_parameter_constraints`` do), and :func:`declared` checks
that the dict covers every field.  The checks in code, the command line's options, ``--set`` and
environment parsing, and the HTTP service's schema limits are all read from those objects::

    @declared
    @dataclass(frozen=True)
    class Protocol:
        constraints: ClassVar[dict] = {"window": Interval(int, 1, help="evaluations in a row")}
        window: int = 10

        def __post_init__(self):
            check_fields(self)            # Protocol(window=0): "window=0 must be at least 1"

    Interval(int, 1).parse("0")           # 0; parse reads the type, check the range
    Interval(int, 1).schema()             # {"ge": 1}: pydantic's Field(...) limits
"""
from __future__ import annotations

import ast
import dataclasses
import math
from dataclasses import dataclass

from .errors import DataError


class Constraint:
    """A setting's type and allowed values.  ``noun`` names the type ("an integer"); ``bounds``
    the allowed range ("at least 1"), or "" where any value of the type is allowed; ``help``
    what the setting does (the command line's help and the service schema's description)."""

    noun = "a value"
    note = ""
    help = ""

    def is_type(self, value) -> bool:
        raise NotImplementedError

    def within(self, value) -> bool:
        return True

    def bounds(self) -> str:
        return ""

    def parse(self, text: str):
        """The value written as ``text`` (command line, ``--set``, environment); ValueError when it
        is not of the type (its range is checked by :meth:`check`)."""
        raise NotImplementedError

    def problem(self, value) -> str:
        """What is wrong with ``value`` ("is not an integer", "must be at least 1: ..."), or ""."""
        if not self.is_type(value):
            return f"is not {self.noun}"
        if not self.within(value):
            return f"must be {self.bounds()}" + (f": {self.note}" if self.note else "")
        return ""

    def check(self, name: str, value):
        """``value``, or a DataError ``<name>=<value> <problem>``."""
        problem = self.problem(value)
        if problem:
            raise DataError(f"{name}={value!r} {problem}")
        return value


def _number(value, kind) -> bool:
    """``kind`` int: an int but no bool; float: any finite int or float, no bool."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return isinstance(value, int) if kind is int else math.isfinite(value)


@dataclass(frozen=True)
class Interval(Constraint):
    """An integer or finite number between ``low`` and ``high`` (None: unbounded on that side);
    ``what`` is how the command line's refusal names the value ("it must be at least 1")."""

    kind: type
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    what: str = "it"
    note: str = ""
    help: str = ""

    @property
    def noun(self) -> str:
        return "an integer" if self.kind is int else "a finite number"

    def is_type(self, value) -> bool:
        return _number(value, self.kind)

    def within(self, value) -> bool:
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or (value < self.high if self.high_open else value <= self.high)

    def bounds(self) -> str:
        if self.low is not None and self.high is not None:
            return f"in {'(' if self.low_open else '['}{self.low}, {self.high}{')' if self.high_open else ']'}"
        if self.low is not None:
            if self.low == 0:
                return "positive" if self.low_open else "non-negative"
            return f"above {self.low}" if self.low_open else f"at least {self.low}"
        if self.high is not None:
            return f"below {self.high}" if self.high_open else f"at most {self.high}"
        return ""

    def parse(self, text: str):
        try:
            value = self.kind(text)
        except ValueError:
            raise ValueError("an integer" if self.kind is int else "a number") from None
        if not math.isfinite(value):
            raise ValueError("a finite number")
        return value

    def schema(self) -> dict:
        """The range as pydantic's ``Field`` keywords (``ge``/``gt``/``le``/``lt``)."""
        limits = {}
        if self.low is not None:
            limits["gt" if self.low_open else "ge"] = self.low
        if self.high is not None:
            limits["lt" if self.high_open else "le"] = self.high
        return limits


@dataclass(frozen=True)
class Options(Constraint):
    """One of a fixed list of values."""

    values: tuple
    note: str = ""
    help: str = ""

    @property
    def noun(self) -> str:
        return f"one of {list(self.values)}"

    def is_type(self, value) -> bool:
        return True

    def within(self, value) -> bool:
        return value in self.values

    def problem(self, value) -> str:
        if value in self.values:
            return ""
        return f"is unknown; choose one of {list(self.values)}" + (f": {self.note}" if self.note else "")

    def parse(self, text: str):
        return text


@dataclass(frozen=True)
class Boolean(Constraint):
    help: str = ""
    noun = "true or false"

    def is_type(self, value) -> bool:
        return isinstance(value, bool)

    def parse(self, text: str):
        try:
            return {"true": True, "false": False, "1": True, "0": False}[text.strip().lower()]
        except KeyError:
            raise ValueError(self.noun) from None


@dataclass(frozen=True)
class Text(Constraint):
    """Any string: a name checked where it is looked up (a dataset, a folder), or a file's path."""

    noun: str = "a name"
    help: str = ""

    def is_type(self, value) -> bool:
        return isinstance(value, str)

    def parse(self, text: str):
        return text


@dataclass(frozen=True)
class Many(Constraint):
    """A tuple of values, each allowed by ``each``; written ``0,1`` or ``[0,1]``."""

    each: Constraint
    noun: str = "a list of integers, e.g. 0,1 or [0,1]"
    help: str = ""

    def is_type(self, value) -> bool:
        return isinstance(value, tuple) and all(self.each.is_type(v) for v in value)

    def within(self, value) -> bool:
        return all(self.each.within(v) for v in value)

    def problem(self, value) -> str:
        if not self.is_type(value):
            return f"is not {self.noun}"
        return "" if self.within(value) else f"must all be {self.each.bounds() or self.each.noun}"

    def parse(self, text: str):
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            value = [part.strip() for part in text.split(",")] if isinstance(self.each, (Text, Options)) else None
        value = tuple(value) if isinstance(value, (list, tuple)) else (value,)
        if not self.is_type(value):
            raise ValueError(self.noun)
        return value


@dataclass(frozen=True)
class Maybe(Constraint):
    """``inner``, or None (a setting whose absence means "the default of what it sets")."""

    inner: Constraint

    @property
    def noun(self) -> str:
        return self.inner.noun

    @property
    def help(self) -> str:
        return self.inner.help

    def is_type(self, value) -> bool:
        return value is None or self.inner.is_type(value)

    def within(self, value) -> bool:
        return value is None or self.inner.within(value)

    def bounds(self) -> str:
        return self.inner.bounds()

    def problem(self, value) -> str:
        return "" if value is None else self.inner.problem(value)

    def parse(self, text: str):
        return self.inner.parse(text)


def unwrap(constraint: Constraint) -> Constraint:
    """The constraint a present value meets (``Maybe``'s inner one)."""
    return constraint.inner if isinstance(constraint, Maybe) else constraint


def declared(cls):
    """A class decorator: ``cls.constraints`` declares exactly ``cls``'s dataclass fields."""
    names = [f.name for f in dataclasses.fields(cls)]
    missing, extra = set(names) - set(cls.constraints), set(cls.constraints) - set(names)
    if missing or extra:
        raise TypeError(f"{cls.__name__}.constraints lacks {sorted(missing)} / declares unknown {sorted(extra)}")
    return cls


def check_fields(obj, name=lambda field: field) -> None:
    """Every field of ``obj`` against its declaration; ``name(field)`` is how refusals name it."""
    for field, constraint in type(obj).constraints.items():
        constraint.check(name(field), getattr(obj, field))


def defaults(cls) -> dict:
    """Each field's default value."""
    return {f.name: f.default for f in dataclasses.fields(cls)}


def parse_field(cls, key: str, text: str, name: str):
    """The text of ``key=text`` read as ``cls``'s field ``key``; ``name`` is how a refusal names
    the pair (``--set depth='abc'``)."""
    constraint = cls.constraints.get(key)
    if constraint is None:
        raise DataError(f"unknown parameter {key!r} in {name.split()[0]}; known: {sorted(cls.constraints)}")
    try:
        return constraint.parse(text)
    except ValueError as err:
        raise DataError(f"{name}: {key} must be {err}") from None
