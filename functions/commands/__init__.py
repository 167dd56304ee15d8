"""The command line's subcommands: each registered beside its handler with :func:`command`.

A subcommand is its handler plus the options it takes; options of a declared setting are made
from the declaration (:func:`declared_args`), so their type, choices, range check and default
are those the code checks.  The handlers sit in this top layer because they read results,
draw and run notebooks, which the ``runs`` layer may not import.
"""
from __future__ import annotations

import argparse
import functools
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, ClassVar

from ..core.constraints import Boolean, Constraint, Interval, Many, Options, Text, declared, unwrap
from ..core.errors import DataError


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    args: tuple  # (flags, keywords) pairs for ``add_argument``
    run: Callable


COMMANDS: dict[str, Command] = {}


def arg(*flags, **keywords) -> tuple:
    """One ``add_argument`` call, kept until the parser is built."""
    return flags, keywords


def command(name: str, help: str, *args):
    """Register the decorated handler as subcommand ``name`` with options ``args`` (see :func:`arg`)."""
    def register(run):
        COMMANDS[name] = Command(name, help, tuple(a for group in args for a in (group if isinstance(group, list)
                                                                                else [group])), run)
        return run
    return register


def parser(description: str = "") -> argparse.ArgumentParser:
    # each module registers its commands, in the order --help lists them
    from . import study  # noqa: F401
    from . import efficiency  # noqa: F401
    from . import zoo  # noqa: F401
    from . import fe_vs_ft  # noqa: F401
    root = argparse.ArgumentParser(prog="python -m functions", description=description)
    # no abbreviated options: `summary --set` would otherwise be read as --setup
    sub = root.add_subparsers(dest="command", required=True,
                              parser_class=functools.partial(argparse.ArgumentParser, allow_abbrev=False))
    for cmd in COMMANDS.values():
        p = sub.add_parser(cmd.name, help=cmd.help)
        for flags, keywords in cmd.args:
            p.add_argument(*flags, **keywords)
        p.set_defaults(func=cmd.run)
    return root


# ----------------------------------------------------------------------------- options from declarations

class Distinct(argparse.Action):
    """A list option whose values must differ: a repeated value (5 5, or 0.01 0.010) would run or
    write the same thing twice."""

    def __call__(self, parser, namespace, values, option_string=None):
        repeated = sorted({str(v) for i, v in enumerate(values) if v in values[:i]})
        if repeated:
            raise argparse.ArgumentError(self, f"{', '.join(repeated)} given more than once; give each value once")
        setattr(namespace, self.dest, values)


def value_type(constraint: Interval):
    """An argparse type: the text parsed as the declaration's type and checked against its range,
    refused as ``'two' is not an integer`` or ``0 is out of range: it must be at least 1``."""
    def parse(text: str):
        try:
            value = constraint.parse(text)
        except ValueError as err:
            raise argparse.ArgumentTypeError(f"{text!r} is not {err}") from None
        if not constraint.within(value):
            raise argparse.ArgumentTypeError(f"{text} is out of range: {constraint.what} must be "
                                             f"{constraint.bounds()}")
        return value
    return parse


def declared_arg(flag: str, constraint: Constraint, default=None, shown=None, help: str | None = None,
                 **keywords) -> tuple:
    """An option made from a declaration: its type and range check (:func:`value_type`), choices
    (an ``Options``), a distinct list (a ``Many``) or a switch (a ``Boolean``), its help, and the
    default shown there (``shown``: the default of what receives it, where the option's is None)."""
    constraint = unwrap(constraint)
    each = constraint.each if isinstance(constraint, Many) else constraint
    made = {"nargs": "+", "action": Distinct} if isinstance(constraint, Many) else {}
    if isinstance(each, Options):
        made["choices"] = list(each.values)
    elif isinstance(each, Interval):
        made["type"] = value_type(each)
    elif isinstance(each, Boolean):
        made["action"] = "store_true"
    text = (constraint.help or each.help) if help is None else help
    shown = default if shown is None else shown
    notes = [each.bounds().replace("%", "%%")] if isinstance(each, Interval) and each.bounds() else []
    if shown is not None and shown is not False:
        notes.append(f"default {' '.join(map(str, shown)) if isinstance(shown, (list, tuple)) else shown}")
    if notes:
        text = f"{text} ({', '.join(notes)})" if text else ", ".join(notes)
    return arg(flag, default=default, help=text or None, **{**made, **keywords})


def option_name(name: str) -> str:
    """The command-line spelling of a setting: ``task_cpus`` is ``--task-cpus``."""
    return f"--{name.replace('_', '-')}"


def declared_args(cls, flags: dict | None = None, shown: dict | None = None, **keywords) -> list:
    """One option per field of the declared dataclass ``cls`` (``flags``: spellings other than
    ``--<field>``, None for no option; ``keywords``: per-field extra ``add_argument`` keywords).
    Each defaults to None, so that a handler sees which were given (:func:`given`) and the
    others keep the default that ``cls`` declares, shown in the help."""
    flags, shown = flags or {}, shown or {}
    defaults = {name: getattr(cls, "__dataclass_fields__")[name].default for name in cls.constraints}
    return [declared_arg(flags.get(name, option_name(name)), constraint, shown=shown.get(name, defaults[name]),
                         dest=name, **keywords.get(name, {}))
            for name, constraint in cls.constraints.items() if flags.get(name, option_name(name))]


def given(args, names) -> dict:
    """The options among ``names`` given on the command line (lists as tuples)."""
    values = {name: getattr(args, name) for name in names if getattr(args, name, None) is not None}
    return {name: tuple(v) if isinstance(v, list) else v for name, v in values.items()}


# ----------------------------------------------------------------------------- shared options and checks

@declared
@dataclass(frozen=True)
class RayOptions:
    """Where ``--executor ray`` sends its tasks; refused without it, as they would be ignored."""

    constraints: ClassVar[dict] = {
        "address": Text(help="with --executor ray: 'local' (a Ray instance on this machine, dashboard off), 'auto' "
                             "(the cluster this machine joined), or host:port / ray://host:port"),
        "task_cpus": Interval(float, 0.0, 1024.0, low_open=True, what="CPUs per worker",
                              help="with --executor ray: CPUs per worker (one Ray actor per slot of this size)"),
        "task_gpus": Interval(float, 0.0, 64.0, what="GPUs per worker",
                              help="with --executor ray: GPUs per worker (0.25: four workers share one GPU)"),
        "max_retries": Interval(int, 0, 100, what="retries",
                                help="with --executor ray: times a unit is run again when its worker dies"),
    }

    address: str = "local"
    task_cpus: float = 1.0
    task_gpus: float = 0.0
    max_retries: int = 3


# what --data takes, on every command that reads a user's images
DATA_HELP = ("a folder root/<label>/<image> or root/{train,val,test}/<label>/<image>, a CSV path,label[,split], "
             "or a prepared name (clipart, stamps)")

EXECUTOR_ARGS = [arg("--executor", default="in-process", choices=["in-process", "ray"],
                     help="where cells train: this process, or workers on a Ray cluster"),
                 *declared_args(RayOptions)]


def executor(args):
    """The executor ``--executor`` names, with the Ray options given."""
    ray = given(args, RayOptions.constraints)
    if ray and args.executor != "ray":
        named = [option_name(name) for name in ray]
        raise DataError(f"{', '.join(named)} {'needs' if len(named) == 1 else 'need'} --executor ray; drop "
                        f"{'it' if len(named) == 1 else 'them'} or add --executor ray")
    from ..runs.executors import make_executor
    return make_executor(args.executor, **asdict(RayOptions(**ray)))


def key_values(pairs, read) -> dict:
    """``key=value`` arguments, each value read by ``read(key, text)``."""
    out = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise DataError(f"expected key=value, got {pair!r}")
        key, text = pair.split("=", 1)
        if key.strip() in out:
            raise DataError(f"{key.strip()!r} is given twice; give each key once")
        out[key.strip()] = read(key.strip(), text)
    return out


def check_writable(path: Path, what: str) -> None:
    """Refuse, before any work, a file that cannot be written: a folder in its place, a file where
    a folder of its path should be, or a folder this user cannot write to."""
    path = Path(path)
    if path.is_dir():
        raise DataError(f"{what} {path} is a folder, not a file; move that folder away")
    parent = path.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise DataError(f"{what} {path} cannot be written: {parent} is a file, not a folder; move it away or "
                        f"write elsewhere (results go under $TRANSFER_OUTPUT_ROOT; --out where a command has it)")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise DataError(f"{what} {path} cannot be written: {parent} is not writable; choose another location")
