"""Pieces shared by the project's command-line programs: one-line usage errors and output folders."""

from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path


class UsageError(ValueError):
    """A command-line value that is out of range or unknown."""


class OneLineErrorParser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line on stderr and exit code 2."""

    def error(self, message: str):
        self.exit(2, f"error: {message}; see --help\n")


def parse_arguments(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace | int:
    """Parse ``argv``; return the exit code instead when ``--help`` or a usage error ended parsing."""
    try:
        return parser.parse_args(argv)
    except SystemExit as exit_request:  # --help, or a usage error already printed as one line
        return int(exit_request.code or 0)


def configure_logging(verbose: bool) -> None:
    """Log INFO and above with ``-v``, else warnings and errors only."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")


def prepare_output_folder(out: Path) -> None:
    """Create ``out`` and check that files can be written there, before any work starts."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is an existing file, not a folder; choose a folder path")
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as error:
        raise UsageError(f"--out {out} cannot be written ({error.strerror}); choose a writable folder") from None
