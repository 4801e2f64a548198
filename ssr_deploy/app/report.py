"""What ``ssr-deploy info`` reports about a genotype, as data and as text tables."""

from __future__ import annotations

from typing import Any

from ssr_deploy.genotype import Genotype, zoo_names
from ssr_deploy.model.complexity import count_macs, count_params, layer_table, meta_model
from ssr_deploy.progress import track


def _size(size: tuple[int, int]) -> str:
    return f"{size[0]}x{size[1]}"


def genotype_summary(name_or_path: str, sizes: tuple[tuple[int, int], ...],
                     num_classes: int | None = None, progress: bool = False,
                     lut: str | None = None) -> dict[str, Any]:
    """Parameters, MACs per size, output shapes and the per-layer table (at the first size);
    with a latency table ``lut``, the predicted latency (``latency_ms``) and its parts.

    MACs are multiply-accumulates of the convolution and linear layers."""
    genotype = Genotype.load(name_or_path)
    latency = None
    if lut:
        from ssr_deploy.latency.table import LatencyTable

        table = LatencyTable.load(lut)
        latency = table.predict(genotype, num_classes)
        latency.update(table=table.describe(), path=lut, check=table.meta.get("check"))
    for size in sizes:
        genotype.check_input_size(*size)
    n = num_classes or genotype.num_classes
    macs, layers = {}, {}
    for size in track(sizes, "counting MACs", unit="size", enabled=progress):
        total, per_module = count_macs(genotype, size, n)
        macs[_size(size)] = total
        layers[_size(size)] = layer_table(genotype, per_module, n)
    first = _size(sizes[0])
    multiple, minimum = genotype.size_rule()
    summary = {
        "name": genotype.name,
        "hash": genotype.hash,
        "description": genotype.description,
        "classes": n,
        "params": count_params(meta_model(genotype, n)),
        "macs": macs,
        "output_shapes": {_size(s): [1, n, *s] for s in sizes},
        "input": {**genotype.input.to_dict(), "size_multiple": multiple, "min_size": minimum},
        "depth": [stage.depth for stage in genotype.stages],
        "layers": [
            {"module": row.module, "op": row.kind, "in": row.in_channels,
             "mid": row.mid_channels, "out": row.out_channels, "params": row.params,
             "macs": {size: layers[size][i].macs for size in layers},
             "share": row.macs / macs[first] if macs[first] else 0.0}
            for i, row in enumerate(layers[first])],
    }
    if latency:
        summary["latency_ms"] = latency.pop("latency_ms")
        summary["latency"] = latency
    return summary


def format_summary(s: dict[str, Any]) -> str:
    first = next(iter(s["macs"]))
    spec = s["input"]
    lines = [
        f"{s['name']}  (genotype {s['hash'][:12]})",
        *([s["description"]] if s["description"] else []),
        "",
        f"parameters   {s['params']:,}  ({s['classes']} classes)",
        f"depth        {' + '.join(map(str, s['depth']))} layers",
        f"input        {spec['color'].upper()}, (pixel/255 - mean) / std, mean {spec['mean']}, "
        f"std {spec['std']}; H and W multiples of {spec['size_multiple']}, "
        f"at least {spec['min_size']}",
        "",
        f"{'size':<12}{'GMACs':>8}{'GFLOPs':>9}  output",
    ]
    for size, macs in s["macs"].items():
        shape = "x".join(map(str, s["output_shapes"][size]))
        lines.append(f"{size:<12}{macs / 1e9:>8.2f}{2 * macs / 1e9:>9.2f}  {shape} logits")
    lines += ["1 MAC = 2 FLOPs; the paper's 'FLOPs' column counts MACs."]
    parts = {}
    if "latency_ms" in s:
        lat = s["latency"]
        parts = lat["parts"]
        check = lat.get("check") or {}
        error = (f"; the table's interpolation is off by {100 * check['mean_rel_error']:.1f}% "
                 f"on average" if check.get("points") else "")
        lines += ["", f"latency      {s['latency_ms']:.2f} ms predicted, end to end ("
                  f"{lat['table']}; {lat['path']}{error}): stem {parts['stem']:.2f} ms, head "
                  f"{parts['head']:.2f} ms, fixed per run {parts.get('overhead', 0.0):.2f} ms; "
                  f"the parts timed alone sum to {lat['parts_ms']:.2f} ms"]
    lines += ["", f"per layer at {first}:",
              f"{'module':<20}{'op':<22}{'in':>5}{'mid':>5}{'out':>5}{'params':>10}"
              f"{'MMACs':>10}{'share':>8}" + (f"{'ms':>9}" if parts else "")]
    for row in s["layers"]:
        def w(v):
            return "-" if v is None else str(v)
        ms = parts.get(row["module"])
        lines.append(f"{row['module']:<20}{row['op']:<22}{w(row['in']):>5}{w(row['mid']):>5}"
                     f"{w(row['out']):>5}{row['params']:>10,}{row['macs'][first] / 1e6:>10.1f}"
                     f"{100 * row['share']:>7.1f}%" + (f"{ms:>9.2f}" if ms is not None else ""))
    return "\n".join(lines)


def zoo_summary() -> list[dict[str, Any]]:
    rows = []
    for name in zoo_names():
        genotype = Genotype.load(name)
        rows.append({"name": name, "hash": genotype.hash,
                     "params": count_params(meta_model(genotype)),
                     "macs_512x1024": count_macs(genotype, (512, 1024))[0],
                     "description": genotype.description})
    return rows


def format_zoo(rows: list[dict[str, Any]]) -> str:
    lines = [f"{'name':<20}{'genotype':<14}{'params':>12}{'GMACs@512x1024':>16}  description"]
    for r in rows:
        lines.append(f"{r['name']:<20}{r['hash'][:12]:<14}{r['params']:>12,}"
                     f"{r['macs_512x1024'] / 1e9:>16.2f}  {r['description']}")
    return "\n".join(lines)
