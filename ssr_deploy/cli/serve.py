"""`ssr-deploy serve`."""

from __future__ import annotations

import click

from ssr_deploy.cli.group import main
from ssr_deploy.cli.options import RunModel, model_size
from ssr_deploy.settings import options


@main.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--name", default="ssrnet", show_default=True, help="The model's name in Triton.")
@click.option("--http-port", type=click.IntRange(1, 65535), default=8000, show_default=True)
@click.option("--grpc-port", type=click.IntRange(1, 65535), default=8001, show_default=True)
@click.option("--metrics-port", type=click.IntRange(1, 65535), default=8002, show_default=True)
@click.option("--max-batch", type=click.IntRange(1, 1024), default=8, show_default=True,
              help="Largest batch the dynamic batcher forms from queued requests.")
@click.option("--instances", type=click.IntRange(1, 64), default=1, show_default=True,
              help="Copies of the model, each in its own process.")
@click.option("--queue-delay-us", type=click.IntRange(0, 10_000_000), default=500,
              show_default=True, help="How long a request may wait for others to batch with.")
@click.option("--max-request-mb", type=click.IntRange(1, 4096), default=256, show_default=True,
              help="The largest request accepted; requests in flight together hold at most "
              "twice this (larger ones wait). Each is checked against the model first.")
@options(RunModel)
@click.option("--letterbox", is_flag=True, help="Keep each frame's aspect ratio (pad).")
@click.option("--tritonserver", type=click.Path(dir_okay=False),
              help="A tritonserver binary. [default: $TRITONSERVER, PATH, /opt/tritonserver, "
              "or PyTriton's]")
@click.option("--log", type=click.Path(dir_okay=False),
              help="Write the server's log here. [default: a temp file, shown on failure]")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="The address HTTP, gRPC and metrics bind. 0.0.0.0 exposes the server to "
              "the network: Triton has no authentication, put it behind one.")
@click.option("--allow-api", "allow_api", multiple=True,
              type=click.Choice(["shared-memory", "model-config", "model-repository",
                                 "statistics", "trace", "logging"]),
              help="Open one of Triton's APIs beyond inference, health and metadata "
              "(closed by default); repeatable.")
def serve(model, name, http_port, grpc_port, metrics_port, max_batch, instances,
          queue_delay_us, max_request_mb, backend, device, precision, letterbox, size,
          tritonserver, log, host, allow_api) -> None:
    """Serve MODEL (.onnx, .xml OpenVINO IR, .engine or .pt) on a real Triton Inference
    Server.

    HTTP and gRPC (KServe v2): input `images` (batch, H, W, 3) uint8 BGR, output `labels`
    (batch, H, W) class ids, uint8 (int32 past 256 classes). Dynamic batching, readiness at
    /v2/health/ready, Prometheus metrics at :METRICS-PORT/metrics. SIGTERM or Ctrl-C: the
    accepted requests finish, then the server exits.

    \b
    Examples:
      ssr-deploy serve model.onnx
      ssr-deploy serve model.engine --max-batch 16 --instances 2 --http-port 9000
      ssr-deploy serve model-int8.xml                       # OpenVINO on this CPU
    For a Triton fleet, write a repository instead: ssr-deploy export triton MODEL --repo DIR
    """
    from pathlib import Path

    from ssr_deploy.backends import BY_SUFFIX
    from ssr_deploy.io import check_input_file, check_outputs_spare_inputs
    from ssr_deploy.serving.triton import TritonServer

    check_input_file(model, "model file")
    if host not in ("127.0.0.1", "::1", "localhost") and "shared-memory" in allow_api:
        click.echo(f"warning: --allow-api shared-memory on --host {host}: any client that "
                   "reaches this address can register this machine's shared memory with the "
                   "server and have outputs written into it; Triton has no authentication, "
                   "put it behind one", err=True)
    check_outputs_spare_inputs([("--log", log)], [model, tritonserver])
    if size and BY_SUFFIX.get(Path(model).suffix.lower()) != "torch":
        raise click.UsageError("--size applies to a .pt checkpoint only (an export keeps the "
                               "size it was exported at); drop --size")
    if BY_SUFFIX.get(Path(model).suffix.lower()) == "torch":
        size = model_size(model, size)
    server = TritonServer(model, name, http_port, grpc_port, metrics_port, max_batch,
                          instances, queue_delay_us, backend, device, letterbox, tritonserver,
                          log, options={k: v for k, v in (("size", size),
                                                          ("precision", precision)) if v},
                          host=host, allow_api=allow_api, max_request_mb=max_request_mb)

    def started(_server) -> None:
        click.echo(f"serving {model} as {name!r} on Triton at {host}: HTTP :{http_port}, gRPC "
                   f":{grpc_port}, metrics :{metrics_port}/metrics; batches up to {max_batch}, "
                   f"{instances} instance(s). Ctrl-C or SIGTERM stops it.", err=True)

    code = server.serve_forever(started)
    click.echo(f"tritonserver exited ({code})", err=True)
    if code:
        raise SystemExit(code)
