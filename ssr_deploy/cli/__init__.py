"""The ``ssr-deploy`` command line: parses, calls the library, prints. Nothing else."""

from ssr_deploy.cli import (  # noqa: F401  (registers the commands)
    data,
    demo,
    export,
    lut,
    runtime,
    search,
    serve,
    train,
)
from ssr_deploy.cli.base import SIZE, main

__all__ = ["SIZE", "main"]
