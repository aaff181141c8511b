"""The vocabulary plug-ins are written in: the bottom floor, importing nothing of the project.

A problem (``problems/``), a strategy (``backends/``) or a framework adapter
(``suite/frameworks/``) needs three things from the suite: :class:`Option` to declare what a
user may set, :class:`UsageError` / :class:`UnsupportedError` to refuse bad input with the field
and its allowed values, and the :class:`Framework` protocol a strategy calls. They live here,
below the harness, so that a plug-in never imports the harness that measures it.
"""

from suite.plugin.errors import UnsupportedError, UsageError
from suite.plugin.framework import Framework
from suite.plugin.options import Option

__all__ = ["Framework", "Option", "UnsupportedError", "UsageError"]
