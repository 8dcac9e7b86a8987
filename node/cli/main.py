"""`perpchain`: init | start | status | keys | tx | query | snapshot | checkpoint | maintenance |
verify | rollback | forks | report. The entry point: parse (node/cli/parser.py), run the command
(home.py, tx.py, ops.py, admin.py), and turn expected errors into one line and an exit code
(2 usage, 1 failure, 3 `verify`/`maintenance end` found the state invalid, 130 Ctrl-C; output
into a closed pipe, as `perpchain keys list | head`, ends quietly with 141 as a Unix tool killed
by SIGPIPE would). Tracebacks are for bugs only."""

from __future__ import annotations

import argparse
import os
import sys

from node.cli.common import CliError
from node.cli.parser import build_parser
from node.client import RpcCallError, RpcUnavailable
from node.store.errors import StoreError

EXIT_BROKEN_PIPE = 128 + 13  # 128 + SIGPIPE, what a shell reports for `yes | head`

__all__ = ["CliError", "build_parser", "main"]


def _run(args: argparse.Namespace) -> int:
    """The command; an error that a trio nursery wrapped alone in an ExceptionGroup (the node's
    startup errors: a token file with a wrong mode, a missing key) comes out unwrapped, so it
    is reported as one line like any other expected error."""
    try:
        return int(args.func(args))
    except BaseExceptionGroup as group:
        leaves: list[BaseException] = []
        stack: list[BaseException] = [group]
        while stack:
            current = stack.pop()
            if isinstance(current, BaseExceptionGroup):
                stack.extend(current.exceptions)
            else:
                leaves.append(current)
        if len(leaves) != 1:
            raise
        raise leaves[0] from None


def _silence_stdout() -> None:
    """The reader of stdout is gone: point stdout at /dev/null so the interpreter's final flush
    does not report the pipe again ("Exception ignored ... BrokenPipeError")."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # stdout is no file (a test's capture): nothing to flush
        pass
    finally:
        os.close(devnull)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code = _run(args)
        sys.stdout.flush()  # a closed pipe shows here, inside the handler, not at exit
        return code
    except BrokenPipeError:
        _silence_stdout()
        return EXIT_BROKEN_PIPE
    except RpcUnavailable as error:
        print(f"perpchain: {error} (is the node running? --rpc)", file=sys.stderr)
    except RpcCallError as error:
        print(
            f"perpchain: RPC error {error.code}: {error.message} {error.data or ''}",
            file=sys.stderr,
        )
    except (CliError, ValueError, OSError, StoreError) as error:
        print(f"perpchain: {error}", file=sys.stderr)
    except KeyboardInterrupt:
        return 130
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
