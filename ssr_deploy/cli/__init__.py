"""The ``ssr-deploy`` command line: parses, calls the library, prints. Nothing else."""

from ssr_deploy.cli import data, demo, export, runtime, search, train  # noqa: F401  (registers)
from ssr_deploy.cli.base import SIZE, main

__all__ = ["SIZE", "main"]
