"""The ``ssr-deploy`` command line: parses, calls the library, prints. Nothing else."""

from ssr_deploy.cli import (  # noqa: F401  (registers the commands)
    data,
    demo,
    export,
    info,
    lut,
    runtime,
    search,
    serve,
    train,
)
from ssr_deploy.cli.group import main
from ssr_deploy.settings import SIZE

__all__ = ["SIZE", "main"]
