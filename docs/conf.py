"""Sphinx configuration for the sslsocket documentation (built with -W in CI: every warning is an error)."""

import os
import sys

sys.path.insert(0, os.path.abspath(".."))

project = "sslsocket"
author = "the sslsocket developers"
extensions = ["sphinx.ext.autodoc", "sphinx.ext.viewcode"]
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True}
nitpicky = False
exclude_patterns = ["_build"]
html_theme = "alabaster"
html_title = "sslsocket"
suppress_warnings = ["ref.python"]
