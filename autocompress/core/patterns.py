"""Arithmetic of weight patterns, low-rank factorisations and bit-widths, without torch.

Shared by the analytic cost model (``space.py``) and the operators (``compress/``), so the
costs a budget is checked against are exactly those of the model that is built.
A weight is viewed as a matrix of ``rows`` output channels by ``cols`` = inputs per group
x kernel height x kernel width.
"""
from __future__ import annotations

import functools
import math
import re

BITS = (2, 4, 8, 16, 32)
"""Allowed bit-widths: 2 is ternary {-a, 0, +a}; 32 is the float original."""

DECOMPOSITIONS = ("svd", "tucker2", "spatial")
_NM = re.compile(r"^([1-9][0-9]*):([1-9][0-9]*)$")
_BLOCK = re.compile(r"^([1-9][0-9]*)x([1-9][0-9]*)$")


def parse_pattern(text: str) -> tuple[str, tuple[int, int]]:
    """``("unstructured", (1, 1))``, ``("nm", (n, m))`` for ``"2:4"`` or ``("block", (r, c))``
    for ``"4x4"``; raises ValueError naming the text."""
    if text == "unstructured":
        return "unstructured", (1, 1)
    nm = _NM.match(text)
    if nm and int(nm.group(1)) < int(nm.group(2)):
        return "nm", (int(nm.group(1)), int(nm.group(2)))
    block = _BLOCK.match(text)
    if block:
        return "block", (int(block.group(1)), int(block.group(2)))
    raise ValueError(
        f"sparsity pattern {text!r} is not 'unstructured', N:M with N < M (e.g. '2:4') or a block like '4x4'"
    )


def pattern_sparsity(pattern: str, sparsity: float) -> float:
    """The sparsity a pattern really gives: N:M fixes it at 1 - N/M."""
    kind, (n, m) = parse_pattern(pattern)
    return 1.0 - n / m if kind == "nm" else sparsity


def zeroed_weights(rows: int, cols: int, sparsity: float, pattern: str = "unstructured") -> int:
    """How many of a ``rows x cols`` weight's entries a magnitude mask of ``pattern`` zeroes.

    Unstructured: ``floor(sparsity * numel)`` (at least one weight kept).  N:M: in every run
    of M consecutive inputs N are kept (a shorter last run keeps ``min(N, len)``).  Block
    RxC: ``floor(sparsity * full blocks)`` whole blocks; partial edge blocks are kept.
    """
    numel = rows * cols
    kind, (a, b) = parse_pattern(pattern)
    if kind == "nm":
        full, rest = divmod(cols, b)
        return rows * (cols - full * a - min(a, rest))
    if kind == "block":
        blocks = (rows // a) * (cols // b)
        return min(blocks, math.floor(blocks * sparsity + 1e-9)) * a * b
    return min(numel - 1, max(0, math.floor(numel * sparsity + 1e-9)))


def weight_bits(rows: int, cols: int, nnz: int, bits: int, pattern: str = "unstructured") -> int:
    """Bits to store a ``rows x cols`` weight holding ``nnz`` non-zeros of ``bits`` bits each:
    dense, or its non-zeros plus the pattern's index metadata, whichever is smaller.

    N:M stores log2(M) bits per kept weight; block a 1-bit mask per block; unstructured the
    smaller of a 1-bit mask per weight and ``relative_index_bits``.
    """
    numel = rows * cols
    dense = numel * bits
    if nnz == numel:
        return dense
    kind, (a, b) = parse_pattern(pattern)
    if kind == "nm":
        return min(dense, nnz * bits + nnz * max(1, math.ceil(math.log2(b))))
    if kind == "block":
        return min(dense, nnz * bits + math.ceil(rows / a) * math.ceil(cols / b))
    return min(dense, nnz * bits + numel, relative_index_bits(numel, nnz, bits))


INDEX_BITS = range(1, 17)
"""The gap widths (bits) relative-index storage chooses from."""


def relative_index_bits(numel: int, nnz: int, bits: int) -> int:
    """Bits to store ``nnz`` non-zeros of a ``numel``-entry weight by relative indices (Deep
    Compression, ADMM-NN): each kept value (``bits`` bits) with a k-bit count of the zeros
    since the previous kept entry; a run longer than ``2**k - 1`` zeros is bridged by filler
    entries (a stored zero, value and index bits).  The gap width k is the one in
    ``INDEX_BITS`` giving the fewest bits.

    The positions are not known, so the fillers are counted by their upper bound
    ``floor(zeros / 2**k)`` (all zeros in one run: worst-case padding); the real storage
    needs at most this many bits, and predicted and measured sizes agree exactly.
    """
    zeros = numel - nnz
    return min((nnz + zeros // 2**k) * (bits + k) for k in INDEX_BITS)


def bits_for(density: float) -> int:
    """The largest allowed bit-width not above ``density * 32``."""
    return max([b for b in BITS if b <= density * 32 + 1e-9] or [BITS[0]])


def lowrank_shapes(decomposition: str, out_ch: int, in_ch: int, kh: int, kw: int,
                   rank: int) -> list[tuple[int, int, int]]:
    """The factors of a rank-``rank`` decomposition as ``(out, in, kernel elements)`` each,
    in execution order: svd = in->r, r->out; tucker2 = 1x1 in->r, kxk r->r, 1x1 r->out;
    spatial = kx1 in->r, 1xk r->out."""
    if decomposition == "svd":
        return [(rank, in_ch * kh * kw, 1), (out_ch, rank, 1)]
    if decomposition == "tucker2":
        return [(rank, in_ch, 1), (rank, rank, kh * kw), (out_ch, rank, 1)]
    if decomposition == "spatial":
        return [(rank, in_ch, kh), (out_ch, rank, kw)]
    raise ValueError(f"decomposition {decomposition!r} is not one of {', '.join(DECOMPOSITIONS)}")


def max_rank(decomposition: str, out_ch: int, in_ch: int, kh: int, kw: int) -> int:
    """The largest rank a decomposition can have (where it is exact)."""
    if decomposition == "tucker2":
        return min(out_ch, in_ch)
    if decomposition == "spatial":
        return min(in_ch * kh, out_ch * kw)
    return min(out_ch, in_ch * kh * kw)


def lowrank_flops(decomposition: str, out_ch: int, in_ch: int, kh: int, kw: int, rank: int,
                  rows: tuple[int, int, int]) -> int:
    """FLOPs (2 per MAC) of the factors; ``rows`` = output positions at the input's
    resolution, after the vertical kx1 (spatial) and at the output's resolution."""
    shapes = lowrank_shapes(decomposition, out_ch, in_ch, kh, kw, rank)
    return sum(2 * p * o * i * k for p, (o, i, k) in zip(factor_positions(decomposition, rows), shapes))


def factor_positions(decomposition: str, rows: tuple[int, int, int]) -> list[int]:
    """The output positions of each factor of a decomposition (see ``lowrank_shapes``),
    from ``rows`` = output positions at the input's resolution, after the vertical kx1
    (spatial) and at the output's resolution: svd's factors both run at the output's
    resolution, tucker2's first 1x1 at the input's."""
    in_rows, mid_rows, out_rows = rows
    if decomposition == "svd":
        return [out_rows, out_rows]
    if decomposition == "tucker2":
        return [in_rows, out_rows, out_rows]
    return [mid_rows, out_rows]


def break_even_rank(decomposition: str, out_ch: int, in_ch: int, kh: int, kw: int,
                    rows: tuple[int, int, int]) -> int:
    """The smallest rank whose factors cost at least the dense layer's FLOPs: every rank
    below it saves work (0 if even rank 1 does not)."""
    return _break_even_rank(decomposition, out_ch, in_ch, kh, kw, tuple(rows))


@functools.lru_cache(maxsize=4096)  # the cost model asks for every rank knob on every candidate
def _break_even_rank(decomposition: str, out_ch: int, in_ch: int, kh: int, kw: int,
                     rows: tuple[int, int, int]) -> int:
    dense = 2 * rows[2] * out_ch * in_ch * kh * kw
    rank = 1
    limit = max_rank(decomposition, out_ch, in_ch, kh, kw)
    while rank <= limit and lowrank_flops(decomposition, out_ch, in_ch, kh, kw, rank, rows) < dense:
        rank += 1
    return rank if rank > 1 else 0


def rank_step(break_even: int) -> int:
    """The step ranks move in: 8 where the break-even rank is at least 16, else 1."""
    return 8 if break_even >= 16 else 1


def rank_for(density: float, break_even: int) -> int:
    """The rank a knob density asks for: ``density`` of the break-even rank, in whole
    ``rank_step``s; 0 means no decomposition."""
    if density >= 1.0 or break_even <= 1:
        return 0
    step = rank_step(break_even)
    rank = max(step, math.floor(density * break_even / step) * step)
    return rank if rank < break_even else 0


def density_for_rank(rank: int, break_even: int) -> float:
    """The knob density ``rank_for`` maps to ``rank`` (the inverse of ``rank_for``): 1.0
    for rank 0 (not factorised).  Raises ValueError for a rank ``rank_for`` never gives
    (not a whole step, or not below the break-even rank)."""
    if rank == 0:
        return 1.0
    step = rank_step(break_even)
    if rank < 0 or rank % step or rank >= break_even:
        raise ValueError(f"rank {rank} is not a multiple of {step} below the break-even rank {break_even}")
    # half a step above the rank (never reaching the break-even rank): floor() lands on it
    return (rank + min(step, break_even - rank) / 2) / break_even
