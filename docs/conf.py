"""Sphinx configuration.

Built with warnings as errors and every reference checked::

    sphinx-build -W -n -q -b html docs docs/_build/html

Links into other projects' documentation need their ``objects.inv``, fetched over the
network: set ``SPHINX_INTERSPHINX=1`` to use :data:`INTERSPHINX` (a build that cannot
reach them then fails, as it should). Without it (the default, and what CI runs, offline)
references to those projects' names are accepted unresolved by ``nitpick_ignore_regex``
below, which lists only names that are not ours.
"""

import os

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
html_theme = "alabaster"
exclude_patterns = ["_build"]
suppress_warnings = ["config.cache"]

nitpicky = True

INTERSPHINX = {
    "python": ("https://docs.python.org/3", None),
    "redis": ("https://redis.readthedocs.io/en/stable", None),
    "pyramid": ("https://docs.pylonsproject.org/projects/pyramid/en/latest", None),
    "dogpile": ("https://dogpilecache.sqlalchemy.org/en/latest", None),
    "sqlalchemy": ("https://docs.sqlalchemy.org/en/20", None),
    "pyopenssl": ("https://www.pyopenssl.org/en/stable", None),
}
intersphinx_mapping = INTERSPHINX if os.environ.get("SPHINX_INTERSPHINX") == "1" else {}

# Names of other projects, left unresolved in an offline build. Ours are never listed
# here: a reference to a pyramid_transient name must resolve.
nitpick_ignore_regex = [
    # the standard library (its inventory is docs.python.org's)
    ("py:.*", r"(collections\.abc|datetime|ssl|zoneinfo)\..+"),
    # redis-py, including the unqualified names of its own annotations
    ("py:.*", r"redis(\..+)?"),
    ("py:class", r"ClusterNode|LoadBalancingStrategy"),
    # Pyramid (ConfigurationError is our exceptions' second base)
    ("py:.*", r"pyramid\..+"),
    # dogpile.cache, including the type aliases of its CacheRegion signatures
    ("py:.*", r"dogpile\..+"),
    ("py:class", r"AsyncCreator|FunctionKeyGenerator|FunctionMultiKeyGenerator"),
    ("py:class", r"KeyType|ValuePayload"),
    # pyOpenSSL, in redis-py's SSL connection signatures
    ("py:.*", r"OpenSSL\..+"),
]

# Ours, but private: the annotation of Transaction.__init__'s ``target`` (a Transaction is
# made by Safe.atomic(), never by users); and the model type variable of Manager[M].
nitpick_ignore = [
    ("py:class", "_Target"),
    ("py:class", "M"),
    ("py:class", "pyramid_transient.models._manager.M"),
]
