"""The cost constraint's discrete side: what every choice of a layer costs, as tables, and,
exactly from those (dynamic programming over the width each layer hands the next), the
cheapest and the dearest network left in a partly shrunk space and the most probable
network whose cost lies in a band around the target: the **anchor**.

Why: the cost term steers the probabilities, but shrinking cannot be undone, so a search
whose expected cost sits on its target can still freeze a space in which every network
misses it (measured: +40% at 0.4 of the full backbone). The searcher therefore never removes
an option of the anchor: a network in the band is always left, exactly (a witness, not an
estimate from the cheapest and dearest networks, between which the band can fall in a gap),
and settling, or the epochs running out, ends on it.

A network's cost is ``const + down[s][width into stage s] + blocks + head[w first, w last]``,
widths as indices into a stage's options (widest first; a stage starts at its widest).
The tables reproduce the searcher's own measures exactly: MACs as ``expected_macs`` counts
them (backbone or network), ms as the latency table predicts them (tested).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

NEG = -np.inf


@dataclass
class CostTables:
    const: float
    down: list[np.ndarray]  # per stage: by the previous stage's out-width index (stage 0: one)
    blocks: list[dict[int, np.ndarray]]  # per layer: op index -> cost[in, mid, out]
    head: np.ndarray  # [first stage's out width, last stage's out width]
    stage_of: list[int]  # per layer
    skip: int | None  # the op index of skip, where the space has it

    def cost(self, choices: list[tuple[int, int, int] | None]) -> float:
        """The cost of a network: per layer (op, mid, out) indices, None for skip."""
        total, li, w, first = self.const, 0, 0, 0
        for s in range(len(self.down)):
            total += float(self.down[s][w if s else 0])
            w = 0
            while li < len(choices) and self.stage_of[li] == s:
                if choices[li] is not None:
                    op, mid, out = choices[li]
                    total += float(self.blocks[li][op][w, mid, out])
                    w = out
                li += 1
            if s == 0:
                first = w
        return total + float(self.head[first, w])


def macs_tables(space, size: tuple[int, int], measure: str, num_classes: int) -> CostTables:
    """MACs of every choice, as ``search.cost.expected_macs`` counts them."""
    h, w = size
    ops, stem = space.ops(), space.stem_channels
    down, blocks, stage_of = [], [], []
    prev = np.array([float(stem)])
    for s, st in enumerate(space.stages):
        pixels = (h // st.stride) * (w // st.stride)
        half = (h // st.stride // 2) * (w // st.stride // 2)
        down.append(9 * pixels * prev * (st.channels - prev))
        c = np.array(space.widths(s), dtype=np.float64)
        inner = c[:, None, None] * c[None, :, None] + c[None, :, None] * c[None, None, :]
        for _ in range(st.max_layers):
            blocks.append({i: 3 * (pixels if op[1] == 1 else half) * inner
                           for i, op in enumerate(ops) if op != ("skip",)})
            stage_of.append(s)
        prev = c
    first, last, head = space.stages[0], space.stages[-1], space.head
    px_first = (h // first.stride) * (w // first.stride)
    px_last = (h // last.stride) * (w // last.stride)
    w0 = np.array(space.widths(0), dtype=np.float64)[:, None]
    wl = np.array(space.widths(len(space.stages) - 1), dtype=np.float64)[None, :]
    if measure == "backbone":
        head_cost = np.zeros((w0.size, wl.size)) + px_last * last.channels * num_classes
    else:
        head_cost = (sum(b * b for b in head.psp_bins) * wl * head.psp_width
                     + px_last * (wl + len(head.psp_bins) * head.psp_width) * head.psp_out
                     + 9 * px_first * (w0 + stem) * head.low_width
                     + px_first * (head.psp_out + head.low_width) * head.fusion_width
                     + px_first * head.fusion_width * num_classes)
    return CostTables(9 * 3 * (stem - 3) * (h // 2) * (w // 2), down, blocks, head_cost,
                      stage_of, _skip_index(ops))


def latency_tables(table) -> CostTables:
    """ms of every choice, as a ``latency.table.LatencyTable`` predicts them: its parts,
    calibrated (each kind of part scaled, each block carrying its share of the per-block
    terms), so a network's cost here is ``table.predict``'s."""
    space, c = table.space, table.coefficients
    ops, stages = space.ops(), space.stages
    down = [c[2] * np.array([float(table.down_ms(0, float(space.stem_channels)))])]
    down += [c[2] * np.array([float(table.down_ms(s, float(w))) for w in space.widths(s - 1)])
             for s in range(1, len(stages))]
    per_op = {}
    for s in range(len(stages)):
        per_block = c[5] + c[6] * np.array([float(table.block_elements(s, float(w)))
                                            for w in space.widths(s)])
        for i, op in enumerate(ops):
            if op != ("skip",):
                scale = c[3] if op[1] == 1 else c[4]
                per_op[s, i] = scale * table.block_table(s, op[0], op[1]).numpy() + \
                    per_block[:, None, None]
    blocks, stage_of = [], []
    for s, st in enumerate(stages):
        for _ in range(st.max_layers):
            blocks.append({i: per_op[s, i] for i, op in enumerate(ops) if op != ("skip",)})
            stage_of.append(s)
    head = c[1] * np.array([[float(table.head_ms(float(f), float(la)))
                             for la in space.widths(len(stages) - 1)] for f in space.widths(0)])
    const = c[0] + c[1] * (table.entries["stem"] + table.entries.get("io", 0.0))
    return CostTables(const, down, blocks, head, stage_of, _skip_index(ops))


def space_range(table) -> tuple[float, float]:
    """The fastest and the slowest network of a latency table's space, in its ms."""
    from ssr_deploy.search.supernet import SuperNet

    net = SuperNet(table.space, table.num_classes)
    masks = tuple(m.cpu().numpy() for m in (net.op_valid, net.mid_valid, net.out_valid))
    return bounds(latency_tables(table), masks)


def _skip_index(ops) -> int | None:
    return ops.index(("skip",)) if ("skip",) in ops else None


@dataclass(frozen=True)
class Pick:
    choices: list  # per layer: (op, mid, out) indices, None for skip
    cost: float
    score: float  # sum of the log probabilities of the choices


def solve(t: CostTables, valid, logp=None, alpha: float = 0.0, beta: float = 1.0) -> Pick:
    """The network of the (masked) space that maximises alpha * score - beta * cost, exactly.
    ``valid``: (op, mid, out) masks as the supernet holds them; ``logp``: log probabilities
    of the same shapes (needed when alpha != 0)."""
    op_valid, mid_valid, out_valid = valid
    history, li = [], 0
    V = np.full((1, t.head.shape[0]), NEG)  # one row in stage 0: a placeholder
    V[0, 0] = -beta * (t.const + t.down[0][0])
    for s in range(len(t.down)):
        if s == 1:  # rows from here on: the first stage's out width
            V = np.where(np.eye(V.shape[1], dtype=bool), V[0][:, None], NEG)
            history.append(("rows",))
        if s > 0:  # into stage s at its widest, paying its downsampler
            cand = V - beta * t.down[s][None, :]
            arg = cand.argmax(1)
            V = np.full((V.shape[0], _width_count(t, li)), NEG)
            V[:, 0] = cand.max(1)
            history.append(("enter", arg))
        while li < len(t.stage_of) and t.stage_of[li] == s:
            n = _width_count(t, li)
            best = np.full((n, n), NEG)
            best_op = np.zeros((n, n), dtype=int)
            best_mid = np.zeros((n, n), dtype=int)
            for i, cost in t.blocks[li].items():
                if not op_valid[li, i]:
                    continue
                value = -beta * cost
                if alpha:
                    value = value + alpha * (logp[0][li, i] + logp[1][li, i][None, :, None]
                                             + logp[2][li, i][None, None, :])
                ok = mid_valid[li, i][None, :, None] & out_valid[li, i][None, None, :]
                value = np.where(ok, value, NEG)
                mid = value.argmax(1)  # [in, out]
                top = np.take_along_axis(value, mid[:, None, :], 1)[:, 0, :]
                better = top > best
                best = np.where(better, top, best)
                best_op = np.where(better, i, best_op)
                best_mid = np.where(better, mid, best_mid)
            cand = V[:, :, None] + best[None, :, :]  # [row, in, out]
            w_in = cand.argmax(1)
            new = cand.max(1)
            skipped = np.zeros(new.shape, dtype=bool)
            if t.skip is not None and op_valid[li, t.skip]:
                stay = V + (alpha * logp[0][li, t.skip] if alpha else 0.0)
                skipped = stay > new
                new = np.where(skipped, stay, new)
            history.append(("layer", w_in, best_op, best_mid, skipped))
            V, li = new, li + 1
    if len(t.down) == 1:
        V = np.where(np.eye(V.shape[1], dtype=bool), V[0][:, None], NEG)
        history.append(("rows",))
    final = V - beta * t.head
    row, w = np.unravel_index(int(final.argmax()), final.shape)
    if not np.isfinite(final[row, w]):
        raise ValueError("no network is left in this space")
    choices = []
    for step in reversed(history):
        if step[0] == "layer":
            _, w_in, best_op, best_mid, skipped = step
            if skipped[row, w]:
                choices.append(None)
            else:
                prev = int(w_in[row, w])
                choices.append((int(best_op[prev, w]), int(best_mid[prev, w]), int(w)))
                w = prev
        elif step[0] == "enter":
            w = int(step[1][row])
        else:  # back to stage 0's placeholder row
            row, w = 0, row
    choices.reverse()
    score = _score(choices, logp, t.skip) if logp is not None else 0.0
    return Pick(choices, t.cost(choices), score)


def _width_count(t: CostTables, li: int) -> int:
    return next(iter(t.blocks[li].values())).shape[0]


def _score(choices, logp, skip) -> float:
    total = 0.0
    for li, c in enumerate(choices):
        if c is None:
            total += float(logp[0][li, skip])
        else:
            total += float(logp[0][li, c[0]] + logp[1][li, c[0], c[1]] + logp[2][li, c[0], c[2]])
    return total


def bounds(t: CostTables, valid) -> tuple[float, float]:
    """The cheapest and the dearest network left in the (masked) space."""
    return solve(t, valid).cost, solve(t, valid, beta=-1.0).cost


class Budget:
    """The band target x (1 +- band) and what a search asks of it."""

    def __init__(self, tables: CostTables, target: float, band: float) -> None:
        self.tables, self.target, self.band = tables, target, band
        self.low, self.high = target * (1 - band), target * (1 + band)

    def pick(self, valid, logp, known: Pick | None = None) -> Pick:
        """The network of the space to end on, the anchor: the argmax network where its cost
        is in the band; else the most probable network found in it by a Lagrangian search
        (the best of score - mu * cost / target, mu bisected), then by changing one layer of
        the closest network found; else that closest one. ``known``: a network found in the
        band before (the last anchor), a candidate where it is still in the space, so the
        anchor never leaves the band once it has been in it."""
        best = argmax(self.tables, valid, logp)
        if self.inside(best):
            return best
        seen = [best]
        if known is not None and self.inside(known) and self.allows(valid, known):
            seen.append(Pick(known.choices, known.cost,
                             _score(known.choices, logp, self.tables.skip)))

        def run(mu: float) -> Pick:
            seen.append(solve(self.tables, valid, logp, alpha=1.0, beta=mu / self.target))
            return seen[-1]

        start = run(0.0)  # the jointly most probable network
        sign = 1.0 if start.cost > self.target else -1.0
        near, far = 0.0, sign
        while not self._past(run(far), sign) and abs(far) < 1e9:
            near, far = far, far * 4
        for _ in range(30):
            mid = (near + far) / 2
            if self._past(run(mid), sign):
                far = mid
            else:
                near = mid
        inside = [p for p in seen if self.inside(p)]
        if inside:
            return max(inside, key=lambda p: p.score)
        closest = min(seen, key=lambda p: abs(p.cost - self.target))
        return self._one_change(closest, valid, logp) or closest

    def allows(self, valid, pick: Pick) -> bool:
        """Every choice of ``pick`` is still an option of the (masked) space."""
        op, mid, out = self.masks_of(pick, valid)
        return bool((op <= valid[0]).all() and (mid <= valid[1]).all()
                    and (out <= valid[2]).all())

    def inside(self, p: Pick) -> bool:
        return self.low <= p.cost <= self.high

    def _past(self, p: Pick, sign: float) -> bool:  # reached the band or moved beyond it
        return p.cost <= self.high if sign > 0 else p.cost >= self.low

    def _one_change(self, base: Pick, valid, logp) -> Pick | None:
        """The most probable network in the band that differs from ``base`` in one layer."""
        op_valid, mid_valid, out_valid = valid
        found = None
        for li in range(len(base.choices)):
            options = [None] if self.tables.skip is not None and op_valid[li, self.tables.skip] \
                else []
            options += [(i, m, o) for i in self.tables.blocks[li] if op_valid[li, i]
                        for m in np.flatnonzero(mid_valid[li, i])
                        for o in np.flatnonzero(out_valid[li, i])]
            for c in options:
                choices = [*base.choices[:li], c, *base.choices[li + 1:]]
                p = Pick(choices, self.tables.cost(choices), 0.0)
                if self.inside(p):
                    p = Pick(choices, p.cost, _score(choices, logp, self.tables.skip))
                    if found is None or p.score > found.score:
                        found = p
        return found

    def masks_of(self, pick: Pick, like) -> tuple:
        """One-hot (op, mid, out) masks of a picked network, shaped as ``like``."""
        op, mid, out = (np.zeros_like(m, dtype=bool) for m in like)
        for li, c in enumerate(pick.choices):
            if c is None:
                op[li, self.tables.skip] = True
            else:
                op[li, c[0]] = mid[li, c[0], c[1]] = out[li, c[0], c[2]] = True
        return op, mid, out


def same_ops(t: CostTables, pick: Pick, like) -> tuple[tuple, tuple]:
    """``pick``'s layers and ops at every width: (op, mid, out) masks shaped as ``like``
    (the supernet's), and a score of the same shapes that counts a choice's width steps
    away from ``pick``'s (0 its own, -1 a step): as ``logp``, the solver then finds the
    network nearest ``pick`` at a cost."""
    op, mid, out = (np.zeros_like(m, dtype=bool) for m in like)
    near = tuple(np.zeros(m.shape) for m in like)
    steps = np.arange(mid.shape[-1])
    for li, c in enumerate(pick.choices):
        if c is None:
            op[li, t.skip] = True
            continue
        i, m, o = c
        op[li, i] = mid[li, i] = out[li, i] = True
        near[1][li, i], near[2][li, i] = -np.abs(steps - m), -np.abs(steps - o)
    return (op, mid, out), near


def argmax(t: CostTables, valid, logp) -> Pick:
    """The network ``decode`` gives: each layer's likeliest op, then its likeliest widths."""
    op_valid, mid_valid, out_valid = valid
    choices = []
    for li in range(len(t.stage_of)):
        i = int(np.where(op_valid[li], logp[0][li], NEG).argmax())
        if i == t.skip:
            choices.append(None)
            continue
        choices.append((i, int(np.where(mid_valid[li, i], logp[1][li, i], NEG).argmax()),
                        int(np.where(out_valid[li, i], logp[2][li, i], NEG).argmax())))
    return Pick(choices, t.cost(choices), _score(choices, logp, t.skip))
