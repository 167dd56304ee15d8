"""Command line: ``python -m functions <command> ...`` (see ``--help`` of each command).

Each command is registered beside its handler in :mod:`functions.commands`."""
from __future__ import annotations

import sys

from .commands import parser
from .core.errors import DataError, Interrupted


def main(argv=None) -> int:
    try:
        args = parser(__doc__.splitlines()[0]).parse_args(argv)
    except SystemExit as stop:  # argparse has printed what was wrong and the usage
        return stop.code
    try:
        args.func(args)
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except Interrupted as stop:
        print(stop, file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("interrupted; what was saved stays, and re-running the same command resumes", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
