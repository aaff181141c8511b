"""ift-bench harness: points, isolation, meters, records, sweeps, analysis and the CLI."""

__version__ = "0.1.0"
