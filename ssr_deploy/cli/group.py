"""The ``ssr-deploy`` group: every command's error boundary. An SsrDeployError, an OSError
(the path and what its errno means), MemoryError, an interrupt or a module an extra brings
becomes one line on stderr and an exit status, no traceback."""

from __future__ import annotations

import sys

import click

from ssr_deploy.cli import signals
from ssr_deploy.errors import SsrDeployError

#: a module a lean install may lack -> how to install it (the extra that brings it)
EXTRAS = {
    "torch": "pip install torch (the build for your machine), then pip install "
             "'ssr-deploy[train]'",
    "onnxscript": "pip install 'ssr-deploy[train]'", "onnxslim": "pip install 'ssr-deploy[train]'",
    "cityscapesscripts": "pip install 'ssr-deploy[train]'",
    "matplotlib": "pip install matplotlib (or 'ssr-deploy[train]')",
    "onnx": "pip install onnx (or the extra of your engine or IR builder: 'ssr-deploy[openvino]', "
            "[rtx], [cu12] or [cu13])",
    "cv2": "pip install 'ssr-deploy[video]' (OpenCV: image and video files, cameras, streams)",
    "onnxruntime": "pip install 'ssr-deploy[cpu]'",
    "openvino": "pip install 'ssr-deploy[openvino]'",
    "tritonclient": "pip install 'ssr-deploy[serve]'", "uvicorn": "pip install 'ssr-deploy[serve]'",
}


class Group(click.Group):
    """Turns SsrDeployError, OSError (the path and what its errno means) and MemoryError into
    one line on stderr and exit status 1, no traceback; so is a command that needs a module
    an extra brings (``EXTRAS``) on an install without it."""

    def invoke(self, ctx):
        hosted = signals.install()
        try:
            return super().invoke(ctx)
        except SsrDeployError as e:
            _fail(str(e))
        except OSError as e:
            from ssr_deploy.io import describe_os_error

            _fail(describe_os_error(e, "read or write"))
        except MemoryError:
            _fail("out of memory; use a smaller --size, --batch or model, or free memory")
        except KeyboardInterrupt as e:
            stopped = "terminated (SIGTERM)" if isinstance(e, signals.Terminated) else "interrupted"
            click.echo(f"{stopped}: files finished before are kept, none is half-written "
                       "(train/search: --resume continues)", err=True)
            sys.exit(143 if isinstance(e, signals.Terminated) else 130)
        except ImportError as e:
            module = (e.name or "").split(".")[0]
            if module not in EXTRAS:
                raise
            click.echo(f"error: this command needs {module}, which this install leaves out: "
                       f"{EXTRAS[module]}", err=True)
            sys.exit(1)
        finally:
            signals.restore(hosted)


def _fail(text: str) -> None:
    click.echo(f"error: {' '.join(text.split())}", err=True)
    sys.exit(1)



@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="ssr-deploy")
def main() -> None:
    """Search, retrain, export and run SSR real-time segmentation networks.

    \b
    ssr-deploy info ssr-cityscapes                        params, MACs, layers
    ssr-deploy train --genotype ssr-cityscapes --data cityscapes:DIR --out runs/ssr
    ssr-deploy eval --weights runs/ssr/best.pt --data cityscapes:DIR
    ssr-deploy export onnx runs/ssr/best.pt -o model.onnx --input uint8-nhwc-bgr --output labels
    ssr-deploy export engine model.onnx -o model.engine
    ssr-deploy bench model.engine --batch 1,8 --json bench.json
    ssr-deploy video drive.mp4 --model model.engine -o drive_seg.mp4
    """
