"""Sphinx configuration for the sslsocket documentation (built with -W in CI: every warning is an error)."""

import os
import sys

from docutils import nodes
from docutils.parsers.rst import Directive

sys.path.insert(0, os.path.abspath(".."))

project = "sslsocket"
author = "the sslsocket developers"
extensions = ["sphinx.ext.autodoc", "sphinx.ext.viewcode", "sphinx.ext.graphviz"]
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_description_target = "documented"
autodoc_default_options: dict[str, object] = {}  # each directive names the members it shows: the public ones
nitpicky = False
exclude_patterns = ["_build"]
html_theme = "alabaster"
#: The widest line of a code block that the page shows without a scroll bar (tests/test_docs.py holds every block
#: to it): a 1,300-pixel page, 220 for the sidebar, code at 0.8em, some 124 characters of a monospace font.
CODE_COLUMNS = 120
html_theme_options = {"page_width": "1300px", "body_max_width": "none", "code_font_size": "0.8em"}
graphviz_output_format = "svg"
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


class Overview(Directive):
    """``.. sslsocket-i::``: what ``sslsocket.i()`` prints for the server of ``i_example.py``, run now, so that the
    page shows the program's real output."""

    def run(self) -> list[nodes.Node]:
        sys.path.insert(0, os.path.dirname(__file__))
        import i_example

        block = nodes.literal_block(text=i_example.main())
        block["language"] = "text"
        return [block]


class Lifecycle(Directive):
    """``.. sslsocket-lifecycle::``: a connection's states, drawn from ``lifecycle.py``'s table of transitions
    itself, so that the picture cannot drift from the code."""

    def run(self) -> list[nodes.Node]:
        from sphinx.ext.graphviz import graphviz

        from sslsocket.lifecycle import _NEXT, State

        lines = ["digraph lifecycle {", "  rankdir=LR;", '  node [shape=box, style=rounded, fontname="Helvetica"];']
        lines += [f'  {state.name} [label="{state.value}"];' for state in State]
        lines += [f"  {a.name} -> {b.name};" for a in State for b in sorted(_NEXT[a], key=list(State).index)]
        node = graphviz()
        node["code"] = "\n".join([*lines, "}"])
        node["options"] = {"docname": self.state.document.settings.env.docname}
        node["alt"] = "a connection's states: " + ", ".join(state.value for state in State)
        return [node]


def setup(app: object) -> None:
    app.add_directive("sslsocket-command", CommandHelp)  # type: ignore[attr-defined]
    app.add_directive("sslsocket-i", Overview)  # type: ignore[attr-defined]
    app.add_directive("sslsocket-lifecycle", Lifecycle)  # type: ignore[attr-defined]
