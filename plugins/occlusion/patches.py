"""Per-position rectangles of a feature map, and moving values in and out of them.

During incremental inference the value of a layer for occluder position i equals
the cached unoccluded activation everywhere except inside a rectangle. All
positions of a layer share the rectangle's size, only its corner differs, so a
batch of positions is one (B, C, h, w) tensor plus (B,) corners: the shape a
convolution can run on in one call.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True, eq=False)
class Region:
    """The rectangle of every position (P,) in a map: rows top..top+height, columns left..left+width."""

    top: torch.Tensor
    left: torch.Tensor
    height: int
    width: int

    def take(self, index: torch.Tensor) -> "Region":
        return Region(self.top[index], self.left[index], self.height, self.width)

    def same_as(self, other: "Region") -> bool:
        return (self.height, self.width) == (other.height, other.width) and bool(
            torch.equal(self.top, other.top) and torch.equal(self.left, other.left))


@dataclass
class Patch:
    """A batch value that equals the cached base outside each position's rectangle."""

    top: torch.Tensor  # (B,)
    left: torch.Tensor  # (B,)
    values: torch.Tensor  # (B, C, h, w): the values inside the rectangles


def _span(start: torch.Tensor, length: int) -> torch.Tensor:
    return start[:, None] + torch.arange(length, device=start.device)


def crop(source: torch.Tensor, top: torch.Tensor, left: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(B, C, height, width) crops of `source` (1 or B, C, H, W) at per-position corners.

    Gathered through a channels-last view: each pixel moves as one run of C values,
    and the result is channels-last, the layout in which CPU convolutions and
    poolings are fastest.
    """
    rows = _span(top, height)[:, :, None]
    cols = _span(left, width)[:, None, :]
    pixels = source.permute(0, 2, 3, 1)
    if source.shape[0] == 1:
        return pixels[0][rows, cols].permute(0, 3, 1, 2)
    return pixels[_batch(top), rows, cols].permute(0, 3, 1, 2)


def _batch(index: torch.Tensor) -> torch.Tensor:
    return torch.arange(index.shape[0], device=index.device)[:, None, None]


def window(patch: Patch, padded_base: torch.Tensor, pad_top: int, pad_left: int,
           top: torch.Tensor, left: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(B, C, height, width) crops of the full (padded) map each position stands for.

    padded_base: the cached map padded by pad_top rows and pad_left columns before
    (and enough after); top/left are corners in padded coordinates. Pixels inside a
    position's rectangle come from the patch, the others from the cache.
    """
    out = crop(padded_base, top, left, height, width)
    ph, pw = patch.values.shape[-2:]
    rows = _span(top - pad_top - patch.top, height)  # patch row of each window row
    cols = _span(left - pad_left - patch.left, width)
    inside_rows = (rows >= 0) & (rows < ph)
    inside_cols = (cols >= 0) & (cols < pw)
    if not bool(inside_rows.any()) or not bool(inside_cols.any()):
        return out
    if int(inside_rows.sum(1).min()) == ph and int(inside_cols.sum(1).min()) == pw:
        # Every patch lies inside its window (the usual case): write it in place.
        first_row, first_col = -rows[:, 0], -cols[:, 0]  # window row / column where each patch starts
        out = out.contiguous(memory_format=torch.channels_last)
        out.permute(0, 2, 3, 1)[_batch(top), _span(first_row, ph)[:, :, None], _span(first_col, pw)[:, None, :]] = (
            patch.values.permute(0, 2, 3, 1))
        return out
    inside = (inside_rows[:, :, None] & inside_cols[:, None, :])[:, None]
    pixels = patch.values.permute(0, 2, 3, 1)
    from_patch = pixels[_batch(top), rows.clamp(0, ph - 1)[:, :, None], cols.clamp(0, pw - 1)[:, None, :]]
    return torch.where(inside, from_patch.permute(0, 3, 1, 2), out)


def paste(patch: Patch, base: torch.Tensor) -> torch.Tensor:
    """The full (B, C, H, W) batch, channels-last: copies of the cached base with each
    position's patch written in."""
    batch = patch.values.shape[0]
    full = base.expand(batch, *base.shape[1:]).contiguous(memory_format=torch.channels_last)
    ph, pw = patch.values.shape[-2:]
    rows = _span(patch.top, ph)[:, :, None]
    cols = _span(patch.left, pw)[:, None, :]
    full.permute(0, 2, 3, 1)[_batch(patch.top), rows, cols] = patch.values.permute(0, 2, 3, 1)
    return full


def output_span(start: torch.Tensor, length: int, kernel: int, stride: int, dilation: int, pad_before: int,
                out_size: int) -> tuple[torch.Tensor, int]:
    """Rows of a window op's output that can change when input rows start..start+length change.

    Output row o reads input rows o * stride - pad_before + j * dilation, j < kernel; it can
    change when that span meets the changed rows. Returns the first row of each position
    and one length for all, moved inward at the far border so every span fits the map.
    """
    reach = dilation * (kernel - 1)
    first = -torch.div(-(start + pad_before - reach), stride, rounding_mode="floor")  # ceil
    last = torch.div(start + length - 1 + pad_before, stride, rounding_mode="floor")
    first, last = first.clamp(min=0), last.clamp(max=out_size - 1)
    size = max(1, int((last - first + 1).max()))
    size = min(size, out_size)
    return (first.clamp(max=out_size - size)), size


def union_span(starts: list[torch.Tensor], lengths: list[int], size: int) -> tuple[torch.Tensor, int]:
    """One span per position covering the spans of every operand, of one length for all."""
    first = torch.stack(starts).amin(0)
    last = torch.stack([s + n - 1 for s, n in zip(starts, lengths)]).amax(0)
    length = min(size, int((last - first + 1).max()))
    return first.clamp(max=size - length), length


def centred_span(centre: torch.Tensor, length: int, size: int) -> torch.Tensor:
    """First row of the `length` rows centred on each position's `centre` (float), kept inside 0..size."""
    first = torch.floor(centre - (length - 1) / 2 + 0.5).long()
    return first.clamp(0, size - length)
