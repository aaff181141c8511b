"""``from suite.options import Option``: the path users' problem files use (README, examples/).

The option vocabulary itself lives in :mod:`suite.plugin.options`, on the floor below the
harness; this module only keeps the documented import working.
"""

from suite.plugin.options import Option, parse_assignments, resolve

__all__ = ["Option", "parse_assignments", "resolve"]
