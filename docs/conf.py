"""Sphinx configuration; built with warnings as errors (``sphinx-build -W``)."""

project = "pyramid_transient"
copyright = "2026, the pyramid_transient developers"
author = "the pyramid_transient developers"
release = "0.1.0.dev0"

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.intersphinx",
    "sphinx.ext.viewcode",
]
autodoc_member_order = "bysource"
autodoc_typehints = "description"
nitpicky = False
intersphinx_mapping: dict[str, tuple[str, None]] = {}
html_theme = "alabaster"
exclude_patterns = ["_build"]
suppress_warnings = ["config.cache"]
