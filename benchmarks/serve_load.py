"""Serving under load: `ssr-deploy serve` (a real Triton server, python backend running the
Segmenter) hit by concurrent tritonclient clients over HTTP and gRPC, each request one frame,
checked against the Segmenter's own labels.

    python benchmarks/serve_load.py [--model M.onnx] [--clients 1,8] [--requests 25]
        [--size 64x128] [--frame 256x512] [--rounds 3] [--abuse] [--http-server uvicorn]
        [--candidates uvicorn-httptools,hypercorn,granian]
        [--out benchmarks/results/serve_cpu.json]

Without --model, the paper's network is exported at --size (random weights: speed does not
depend on them). For each protocol and client count, rounds alternate between the front door
and Triton direct (its gRPC unix socket; its own HTTP front, opened on loopback for this
benchmark only), so drift hits both alike: the door's cost is the ratio of their medians.
--abuse then repeats the honest load while 100 slowloris connections, 16 idle gRPC streams
and 300 idle sockets are held open against the door (reconnecting when the door drops them,
as attackers do; the load starts once they have cycled through the door's head timeout),
and reports p50 against the quiet figure, every lost request, and how often each was
dropped. --http-server runs the door's HTTP front on another ASGI server, --candidates each
of them in turn (uvicorn-httptools, hypercorn, granian: the candidates it was chosen from;
installed by hand). Writes JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from serve_abuse import Abuse  # noqa: E402
from serve_candidates import CANDIDATES, use_http_server  # noqa: E402

from ssr_deploy.data.synthetic import street_frames  # noqa: E402
from ssr_deploy.io import atomic_write_text  # noqa: E402
from ssr_deploy.runtime.bench import machine_info  # noqa: E402
from ssr_deploy.runtime.segmenter import Segmenter  # noqa: E402
from ssr_deploy.serving.client import load  # noqa: E402
from ssr_deploy.serving.triton import TritonServer, free_port  # noqa: E402


class WithDirectHttp(TritonServer):
    """`serve`, with Triton's own HTTP front also open on a loopback port: the baseline the
    door's HTTP is measured against (never done by `serve` itself)."""

    direct_http = 0

    def command(self, repo: Path, backends: Path) -> list[str]:
        self.direct_http = self.direct_http or free_port()
        return [a for a in super().command(repo, backends) if a != "--allow-http=false"] + [
            "--allow-http=true", "--http-address=127.0.0.1", f"--http-port={self.direct_http}"]


class Served:
    """The ports and sockets of a server running in a child process (as `serve` runs: the
    load's client threads must not share the door's interpreter)."""

    def __init__(self, info: dict) -> None:
        self.__dict__.update(info)
        self.url, self.grpc_url = f"127.0.0.1:{self.http_port}", f"127.0.0.1:{self.grpc_port}"


@contextlib.contextmanager
def served(model: Path, args):
    child = subprocess.Popen([sys.executable, __file__, "--child", str(model), "--max-batch",
                              str(args.max_batch), "--http-server", args.http_server],
                             stdout=subprocess.PIPE, text=True)
    try:
        line = child.stdout.readline()
        if not line:
            raise SystemExit(f"the server did not start ({child.wait()})")
        yield Served(json.loads(line))
    finally:
        child.send_signal(signal.SIGTERM)
        child.wait(60)


def child(model: str, max_batch: int, http_server: str) -> None:
    """Run the server, print its ports as one JSON line, serve until SIGTERM."""
    use_http_server(http_server)
    server = WithDirectHttp(model, http_port=free_port(), grpc_port=free_port(),
                            metrics_port=free_port(), max_batch=max_batch)

    def started(s) -> None:
        print(json.dumps({"http_port": s.http_port, "grpc_port": s.grpc_port,
                          "upstream": s.upstream, "direct_http": s.direct_http,
                          "pid": os.getpid()}), flush=True)
    server.serve_forever(started)


def measure(server, frame, expected, clients_list, requests, rounds) -> list[dict]:
    runs = []
    for protocol in ("grpc", "http"):
        direct = (server.upstream if protocol == "grpc"
                  else f"127.0.0.1:{server.direct_http}")
        door = server.grpc_url if protocol == "grpc" else server.url
        for clients in clients_list:
            for _ in range(rounds):
                for via, url in (("door", door), ("direct", direct)):
                    r = load(url, frame, clients=clients, requests=requests, protocol=protocol,
                             expected=expected)
                    r["errors"], r["via"] = r["errors"][:3] + [len(r["errors"])], via
                    runs.append(r)
                    print(f"{protocol:>4} {via:>6}: {clients} clients x {requests}: p50 "
                          f"{r['latency_ms']['p50']:.2f} ms, {r['frames_per_s']:.1f} frames/s, "
                          f"{r['errors'][-1]} errors", flush=True)
    return runs


def summary(runs: list[dict]) -> dict:
    out = {}
    for protocol in ("grpc", "http"):
        for clients in sorted({r["clients"] for r in runs}):
            def median(via: str, key: str, clients=clients, protocol=protocol) -> float:
                values = [r["latency_ms"]["p50"] if key == "p50" else r["frames_per_s"]
                          for r in runs if r["clients"] == clients and r["via"] == via
                          and r["protocol"] == protocol]
                return statistics.median(values) if values else float("nan")
            out[f"{protocol} {clients} clients"] = {
                "door_p50_ms": median("door", "p50"), "direct_p50_ms": median("direct", "p50"),
                "p50_door_over_direct": median("door", "p50") / median("direct", "p50"),
                "door_frames_per_s": median("door", "fps"),
                "direct_frames_per_s": median("direct", "fps"),
                "throughput_door_over_direct": median("door", "fps") / median("direct", "fps")}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model")
    parser.add_argument("--clients", default="1,8")
    parser.add_argument("--requests", type=int, default=25)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--size", default="64x128")
    parser.add_argument("--frame", default="256x512")
    parser.add_argument("--max-batch", type=int, default=8)
    parser.add_argument("--abuse", action="store_true")
    parser.add_argument("--http-server", choices=sorted(CANDIDATES), default="uvicorn")
    parser.add_argument("--candidates", help="comma-separated servers to measure one after "
                        "another (the door's gRPC is the same in each): a 'candidates' "
                        "section of their door/direct ratios is added")
    parser.add_argument("--out", default="benchmarks/results/serve_cpu.json")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child, args.max_batch, args.http_server)
    size = tuple(int(v) for v in args.size.split("x"))
    fh, fw = (int(v) for v in args.frame.split("x"))
    clients_list = [int(c) for c in args.clients.split(",")]
    frame = street_frames(1, fh, fw, seed=5)[0]
    result = {"benchmark": "serve_load", "http_server": CANDIDATES[args.http_server],
              "model": str(args.model or f"ssr-cityscapes {args.size} (random weights)"),
              "frame": [fh, fw], "max_batch": args.max_batch,
              "server": "tritonserver 2.51 (PyTriton 0.7.0 wheel), python backend"}
    with tempfile.TemporaryDirectory() as tmp:
        model = Path(args.model) if args.model else _export(Path(tmp) / "m.onnx", size,
                                                             args.max_batch)
        with Segmenter.load(model) as seg:
            expected = seg(frame)
            seg(frame)
            start = time.perf_counter()
            for _ in range(args.requests):
                seg(frame)
            result["in_process_ms_per_frame"] = 1e3 * (time.perf_counter() - start) / (
                args.requests)
        with served(model, args) as server:
            load(server.grpc_url, frame, clients=1, requests=3)  # warm up
            load(server.url, frame, clients=1, requests=3, protocol="http")
            runs = measure(server, frame, expected, clients_list, args.requests, args.rounds)
            result["quiet"] = summary(runs)
            result["runs"] = runs
            if args.abuse:
                result["abuse"] = abused(server, frame, expected, clients_list, args.requests,
                                         result["quiet"])
        if args.candidates:
            result["candidates"] = {}
            for name in args.candidates.split(","):
                other = argparse.Namespace(**{**vars(args), "http_server": name})
                with served(model, other) as server:
                    load(server.url, frame, clients=1, requests=3, protocol="http")
                    result["candidates"][name] = {"server": CANDIDATES[name], **summary(
                        measure(server, frame, expected, clients_list, args.requests,
                                args.rounds))}
    flags = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items()
                     if k not in ("out", "abuse", "child") and v is not None)
    result.update(machine=machine_info(), command=f"python benchmarks/serve_load.py {flags}"
                  + (" --abuse" if args.abuse else ""))
    atomic_write_text(args.out, json.dumps(result, indent=2) + "\n")
    for key, row in result["quiet"].items():
        print(f"{key}: door p50 {row['p50_door_over_direct']:.2f}x direct, throughput "
              f"{row['throughput_door_over_direct']:.2f}x")
    print(f"wrote {args.out}")


def abused(server, frame, expected, clients_list, requests, quiet) -> dict:
    """The honest load through the door while the door is abused."""
    out = {}
    with Abuse(server.http_port, server.grpc_port) as abuse:
        time.sleep(12)  # past the door's 10 s head timeout: attackers dropped and back
        held = abuse.held()
        for protocol in ("grpc", "http"):
            url = server.grpc_url if protocol == "grpc" else server.url
            for clients in clients_list:
                r = load(url, frame, clients=clients, requests=requests, protocol=protocol,
                         expected=expected)
                key = f"{protocol} {clients} clients"
                out[key] = {"p50_ms": r["latency_ms"]["p50"],
                            "quiet_p50_ms": quiet[key]["door_p50_ms"],
                            "p50_over_quiet": r["latency_ms"]["p50"] / quiet[key]["door_p50_ms"],
                            "ok": r["ok"], "lost": r["requests"] - r["ok"],
                            "errors": r["errors"][:3]}
                print(f"abused {key}: p50 {r['latency_ms']['p50']:.2f} ms "
                      f"({out[key]['p50_over_quiet']:.2f}x quiet), {out[key]['lost']} lost",
                      flush=True)
        out["attackers_held"] = held
        out["attackers_at_end"] = abuse.held()
    return out


def _export(path: Path, size: tuple[int, int], max_batch: int) -> Path:
    from ssr_deploy import build_model
    from ssr_deploy.export.onnx import export_onnx
    from ssr_deploy.spec import RUNTIME_IO

    export_onnx(build_model("ssr-cityscapes").eval(), path, size=size, dynamic_batch=True,
                max_batch=max_batch, io=RUNTIME_IO)
    return path


if __name__ == "__main__":
    main()
