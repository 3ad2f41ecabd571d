"""The command line: the parser and dispatch (:mod:`.main`), the commands (:mod:`.commands`) and progress
bars (:mod:`.progress`)."""

from hpsearch.cli.main import main

__all__ = ["main"]
