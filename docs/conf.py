"""Sphinx configuration for the sslsocket documentation (built with -W in CI: every warning is an error)."""

import os
import sys

from docutils import nodes
from docutils.parsers.rst import Directive

sys.path.insert(0, os.path.abspath(".."))

project = "sslsocket"
author = "the sslsocket developers"
extensions = ["sphinx.ext.autodoc", "sphinx.ext.viewcode"]
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_description_target = "documented"
autodoc_default_options: dict[str, object] = {}  # each directive names the members it shows: the public ones
nitpicky = False
exclude_patterns = ["_build"]
html_theme = "alabaster"
html_title = "sslsocket"
suppress_warnings = ["ref.python"]


class CommandHelp(Directive):
    """``.. sslsocket-command::``: the help of the ``sslsocket`` command and of each subcommand, generated from
    the parser itself, so that the page cannot drift from the program."""

    def run(self) -> list[nodes.Node]:
        from sslsocket.cli import build_parser

        os.environ["COLUMNS"] = "100"  # argparse wraps at the terminal's width; a page has one of its own
        parser = build_parser()
        choices = next(a for a in parser._actions if a.dest == "command").choices
        out: list[nodes.Node] = [nodes.literal_block(text=parser.format_help())]
        for name, sub in choices.items():
            out.append(nodes.rubric(text=f"sslsocket {name}"))
            out.append(nodes.literal_block(text=sub.format_help()))
        return out


def setup(app: object) -> None:
    app.add_directive("sslsocket-command", CommandHelp)  # type: ignore[attr-defined]
