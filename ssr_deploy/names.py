"""Names that travel into other files: genotype, class and tensor names end up in sidecars,
Triton configs, folder names, reports and terminal lines. They are checked where they come
in (genotype and sidecar load), so no quote, brace, newline or control character reaches a
config, and no name is long enough to flood a line."""

from __future__ import annotations

import re

MAX_NAME = 128
MAX_TEXT = 4096  # a genotype's description
#: a genotype or class name: letters (any script), digits, space and ``_ . - + ( ) / , :``
NAME = re.compile(r"\w[\w .+()/,:-]*")
#: an ONNX graph input or output name
TENSOR_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.:/-]*")


def name_problem(value: str, pattern: re.Pattern = NAME, limit: int = MAX_NAME) -> str | None:
    """Why ``value`` is not a name we pass on, or None when it is."""
    if len(value) > limit:
        return f"is {len(value):,} characters long; names are at most {limit}"
    if not pattern.fullmatch(value):
        bad = next((c for c in value if not pattern.fullmatch(f"a{c}" if value else c)), None)
        shown = repr(bad) if bad is not None else "its first character"
        return (f"holds {shown}; names are letters, digits, "
                f"{'spaces and _ . - + ( ) / , :' if pattern is NAME else '_ . : / -'}")
    return None


def text_problem(value: str, limit: int = MAX_TEXT) -> str | None:
    """Why free text (a description) is not passed on: too long, or control characters."""
    if len(value) > limit:
        return f"is {len(value):,} characters long; at most {limit}"
    if any(ord(c) < 32 and c not in "\n\t" or ord(c) == 127 for c in value):
        return "holds control characters"
    return None


def pbtxt_string(value: str) -> str:
    """``value`` as a quoted protobuf text-format string, escaped whatever it holds."""
    out = []
    for c in value:
        if c in '"\\':
            out.append("\\" + c)
        elif c == "\n":
            out.append("\\n")
        elif ord(c) < 32 or ord(c) == 127:
            out.append(f"\\{ord(c):03o}")
        else:
            out.append(c)
    return '"' + "".join(out) + '"'


# ---- exported node names ------------------------------------------------------------------
# Every node of an exported graph is named after the genotype module it computes
# (``stages.1.layers.4/node_Conv_12``; ``io/...`` for the fused pre/post-processing), so the
# profiles of every backend, the precision checks and --fp32-layers map back to the genotype.
MODULE_IN_NAME = re.compile(r"(stem|io|layout-reorder|other|head(?:\.\w+)?|stages\.\d+\."
                            r"(?:down|layers\.\d+))/")


def node_name(module: str, node: str) -> str:
    """An exported node's name: its module, then its own."""
    return f"{module}/{node}"


def module_of_node(name: str, default: str | None = "io") -> str | None:
    """The module of an exported node's name (``default`` for a name without one)."""
    return name.split("/", 1)[0] if "/" in name else default


def module_in(name: str) -> str:
    """The first module named in a backend's layer name: TensorRT joins fused nodes' names
    (``stages.1.layers.4/node_Conv_12 + stages.1.layers.4/node_relu_3``) or wraps them
    (``{ForeignNode[head.psp/node_MatMul_1...]}``); ``other`` when it names none."""
    match = MODULE_IN_NAME.search(name)
    return match[1] if match else "other"
