"""The supernet: every searchable layer mixes its still-valid candidate ops; widths are
expected channel masks over a C_max-wide tensor. Architecture weights are normalised over
valid options (sigmoid / sum, as the authors' code; softmax selectable).

Built so that a converged supernet *is* the discrete network: masked channels are exact
zeros, the residual is masked with the output, and the downsampler after a stage takes that
stage's current width structurally (conv rows C - w, max-pool of w channels), exactly as the
discrete downsampler does. ``extract_discrete`` slices the weights out.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ssr_deploy.genotype import Genotype, Layer, Stage
from ssr_deploy.model.net import head_of, stem_of
from ssr_deploy.search.losses import normalise
from ssr_deploy.space import SearchSpace


def width_masks(widths: list[int], c_max: int) -> Tensor:
    """(len(widths), c_max): row k keeps the first widths[k] channels."""
    return (torch.arange(c_max)[None, :] < torch.tensor(widths)[:, None]).float()


class MaskedResidual(nn.Module):
    """The factorised residual block at full width C_max; ``mid`` and ``out`` are (C_max,)
    channel masks (expected under the width weights; 0/1 once discrete)."""

    def __init__(self, c: int, dilation: int, resolution: float, dropout: float,
                 eps: float) -> None:
        super().__init__()
        d = dilation
        self.half = resolution == 0.5
        self.conv3x1 = nn.Conv2d(c, c, (3, 1), padding=(d, 0), dilation=(d, 1))
        self.bn1 = nn.BatchNorm2d(c, eps=eps)
        self.conv1x3 = nn.Conv2d(c, c, (1, 3), padding=(0, d), dilation=(1, d))
        self.bn2 = nn.BatchNorm2d(c, eps=eps)
        self.dropout = nn.Dropout2d(dropout)

    def forward(self, x: Tensor, mid: Tensor, out: Tensor) -> Tensor:
        y = F.max_pool2d(x, 2) if self.half else x
        y = F.relu(self.bn1(self.conv3x1(y))) * mid[None, :, None, None]
        y = self.bn2(self.conv1x3(y))
        if self.half:
            y = F.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=True)
        return F.relu((self.dropout(y) + x) * out[None, :, None, None])


class StageDown(nn.Module):
    """Downsampler from a stage of up to ``c_in`` channels, of which the first ``width`` are
    live: concat(conv3x3 stride 2 (-> c_out - width), maxpool of the live channels)."""

    def __init__(self, c_in: int, c_out: int, min_width: int, eps: float) -> None:
        super().__init__()
        self.c_out = c_out
        self.conv = nn.Conv2d(c_in, c_out - min_width, 3, stride=2, padding=1)
        self.bn = nn.BatchNorm2d(c_out, eps=eps)

    def forward(self, x: Tensor, width: int) -> Tensor:
        conv = F.conv2d(x, self.conv.weight[: self.c_out - width], self.conv.bias[: self.c_out
                        - width], stride=2, padding=1)
        return F.relu(self.bn(torch.cat([conv, F.max_pool2d(x[:, :width], 2)], 1)))


class SuperNet(nn.Module):
    def __init__(self, space: SearchSpace, num_classes: int, mode: str = "sigmoid") -> None:
        super().__init__()
        self.space, self.num_classes, self.mode = space.validate(), num_classes, mode
        eps, ops = space.bn_eps, space.ops()
        self.op_list = ops
        n_layers, n_ops, n_w = len(space.layers()), len(ops), space.width_choices
        self.op_alpha = nn.Parameter(torch.zeros(n_layers, n_ops))
        self.mid_alpha = nn.Parameter(torch.zeros(n_layers, n_ops, n_w))
        self.out_alpha = nn.Parameter(torch.zeros(n_layers, n_ops, n_w))
        is_fr = torch.tensor([op != ("skip",) for op in ops])
        self.register_buffer("op_valid", torch.ones(n_layers, n_ops, dtype=torch.bool))
        self.register_buffer("mid_valid", is_fr[None, :, None].expand(n_layers, n_ops, n_w)
                             .clone())
        self.register_buffer("out_valid", self.mid_valid.clone())
        self.stem = stem_of(space)
        downs, layers, c_prev, w_min = [], nn.ModuleList(), space.stem_channels, None
        for s, st in enumerate(space.stages):
            downs.append(StageDown(c_prev, st.channels, w_min or c_prev, eps))
            for _ in range(st.max_layers):
                layers.append(nn.ModuleDict({
                    str(i): MaskedResidual(st.channels, op[0], op[1], st.dropout, eps)
                    for i, op in enumerate(ops) if op != ("skip",)}))
            c_prev, w_min = st.channels, min(space.widths(s))
        self.downs = nn.ModuleList(downs)
        self.layers = layers
        self.head = head_of(space, space.stages[-1].channels, space.stages[0].channels,
                            num_classes)
        for s in range(len(space.stages)):
            self.register_buffer(f"masks_{s}", width_masks(space.widths(s), space.stages[s]
                                                           .channels))

    # ---- architecture weights ------------------------------------------------------
    def probs(self) -> tuple[Tensor, Tensor, Tensor]:
        return (normalise(self.op_alpha, self.op_valid, self.mode),
                normalise(self.mid_alpha, self.mid_valid, self.mode),
                normalise(self.out_alpha, self.out_valid, self.mode))

    def arch_parameters(self) -> list[nn.Parameter]:
        return [self.op_alpha, self.mid_alpha, self.out_alpha]

    def weight_parameters(self) -> list[nn.Parameter]:
        arch = {id(p) for p in self.arch_parameters()}
        return [p for p in self.parameters() if id(p) not in arch]

    def drop_pruned_ops(self) -> int:
        """Delete the modules of ops no longer valid: they stop costing compute and memory.
        Returns how many were dropped."""
        dropped = 0
        for li, ops in enumerate(self.layers):
            for key in list(ops.keys()):
                if not self.op_valid[li, int(key)]:
                    del ops[key]
                    dropped += 1
        return dropped

    def current_widths(self, op_p: Tensor | None = None, out_p: Tensor | None = None
                       ) -> list[int]:
        """Each stage's output width under the current argmax decisions."""
        if op_p is None or out_p is None:
            op_p, _, out_p = self.probs()
        widths, li = [], 0
        for s, st in enumerate(self.space.stages):
            w = st.channels
            for _ in range(st.max_layers):
                i = int(op_p[li].argmax())
                if self.op_list[i] != ("skip",):
                    w = self.space.widths(s)[int(out_p[li, i].argmax())]
                li += 1
            widths.append(w)
        return widths

    # ---- forward ------------------------------------------------------------------
    def forward(self, x: Tensor) -> Tensor:
        size = x.shape[-2:]
        op_p, mid_p, out_p = self.probs()
        widths = self.current_widths(op_p, out_p)
        stem = h = self.stem(x)
        shallow, li, w_prev = None, 0, self.space.stem_channels
        for s, st in enumerate(self.space.stages):
            h = self.downs[s](h, w_prev)
            masks = getattr(self, f"masks_{s}")
            for _ in range(st.max_layers):
                mixed = 0
                for i in op_p[li].nonzero().flatten().tolist():
                    if self.op_list[i] == ("skip",):
                        mixed = mixed + op_p[li, i] * h
                    else:
                        op = self.layers[li][str(i)]
                        y = op(h, mid_p[li, i] @ masks, out_p[li, i] @ masks)
                        mixed = mixed + op_p[li, i] * y
                h, li = mixed, li + 1
            shallow = h if shallow is None else shallow
            w_prev = widths[s]
        return self.head(h, shallow, stem, size)


def decode(net: SuperNet, name: str = "searched", classes: tuple[str, ...] | None = None,
           palette=None) -> Genotype:
    """The genotype of the argmax decisions (exactly the supernet once every decision has
    one option left)."""
    op_p, mid_p, out_p = net.probs()
    choices = []
    for li in range(len(op_p)):
        i = int(op_p[li].argmax())
        choices.append(None if net.op_list[i] == ("skip",) else
                       (i, int(mid_p[li, i].argmax()), int(out_p[li, i].argmax())))
    return genotype_of(net.space, net.op_list, choices, net.num_classes, name, classes,
                       palette)


def genotype_of(space, op_list: list, choices: list, num_classes: int,
                name: str = "searched", classes: tuple[str, ...] | None = None, palette=None,
                description: str = "found by ssr-deploy search") -> Genotype:
    """The network of per-layer choices: (op, mid, out) indices into ``op_list`` and the
    stage's widths, None for skip (as ``search.budget`` picks them)."""
    from ssr_deploy.genotype import default_palette

    stages, li = [], 0
    for s, st in enumerate(space.stages):
        w, layers, widths = st.channels, [], space.widths(s)
        for _ in range(st.max_layers):
            c = choices[li]
            if c is None:
                layers.append(Layer("skip"))
            else:
                d, r = op_list[c[0]]
                layers.append(Layer("fr", d, float(r), w, widths[c[1]], widths[c[2]]))
                w = widths[c[2]]
            li += 1
        stages.append(Stage(st.stride, st.channels, st.dropout, tuple(layers)))
    classes = classes or tuple(f"class {i}" for i in range(num_classes))
    return Genotype(name=name, stem_channels=space.stem_channels, stages=tuple(stages),
                    head=space.head, classes=tuple(classes),
                    palette=tuple(palette or default_palette(num_classes)),
                    bn_eps=space.bn_eps, description=description)
