"""The ``softdiff`` command: ``softdiff train | sample | eval | compare | ntk | regress | flow | sinks | probe``.

Each subcommand lives in its own module as ``main(argv) -> int``; this file only dispatches and turns
user mistakes (:class:`SoftdiffError`, bad flags) into one line on stderr and exit code 2, and a full disk or
an exhausted memory into one line and exit code 1.
"""
from __future__ import annotations

import argparse
import errno
import importlib
import sys
import warnings
from typing import Callable, Sequence

from softdiff.errors import ConfigError, SoftdiffError, first_line

COMMANDS = {
    "train": ("softdiff.commands.train", "train a score model from a config (same as train.py)"),
    "sample": ("softdiff.commands.sample", "sample from a trained model (same as sample.py)"),
    "compare": ("softdiff.commands.compare", "softmax-vs-ReLU comparison study -> one report"),
    "ntk": ("softdiff.commands.ntk", "NTK width study of two-layer softmax/relu/exp networks"),
    "regress": ("softdiff.commands.regress", "softmax regression solvers vs scipy"),
    "flow": ("softdiff.commands.flow", "gradient flow on the value-softmax model (presets E1-E5)"),
    "probe": ("softdiff.commands.probe", "attention sink / massive-activation probes of a trained run"),
    "eval": ("softdiff.commands.evaluate", "metrics of a trained run; score samples; train the digits feature classifier"),
    "sinks": ("softdiff.commands.sinks", "attention sinks in small transformers (induction, classification)"),
}


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a bad flag raises ConfigError (one line, exit 2) instead of printing the usage block."""

    def error(self, message: str):
        raise ConfigError(f"{self.prog}: {message} (see {self.prog} --help).")


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    return f"warning: {message}\n"


def run_main(main: Callable[[Sequence[str]], int | None], argv: Sequence[str]) -> int:
    """Call a command's ``main``; user errors print one line and give exit code 2 (warnings print one line
    each, without the source line)."""
    format_before, warnings.formatwarning = warnings.formatwarning, _one_line_warning
    try:
        return int(main(list(argv)) or 0)
    except SoftdiffError as err:
        print(f"error: {err}", file=sys.stderr)
        return getattr(err, "exit_code", 2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except OSError as err:
        if err.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        where = f" while writing '{err.filename}'" if err.filename else ""
        print(f"error: no space left on device{where}; free space and run the command again.", file=sys.stderr)
        return 1
    except MemoryError as err:
        print(f"error: ran out of memory ({first_line(err)}); ask for fewer samples, steps or seeds, or a smaller "
              "model.", file=sys.stderr)
        return 1
    finally:
        warnings.formatwarning = format_before


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: softdiff COMMAND [args...]\n\ncommands:")
        for name, (_, help_text) in COMMANDS.items():
            print(f"  {name:<8} {help_text}")
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"error: unknown command '{name}'; choose one of: {', '.join(COMMANDS)}.", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    return run_main(module.main, rest)


if __name__ == "__main__":
    sys.exit(main())
