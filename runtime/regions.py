"""Where each sound of a composed picture goes: layouts -> boxes -> soft weights over the latents that sum to one.

Place in the data flow of ``compose`` (and ``generate --stereo``): ``parse_layout`` turns ``--layout`` into at most
``MAX_REGIONS`` boxes (fractions of the picture), refusing anything else in one line; ``region_weights`` turns
boxes into one soft mask per region at the latent size, plus one for the background prompt where it is given;
``runtime.pipeline.Pipeline.denoise`` blends the regions' noise predictions with them at every step
(MultiDiffusion-style, Bar-Tal et al. 2023: one canvas, per-region noise predictions averaged under their masks), the
unconditional prediction shared by all.

``layout_picture`` draws the weights (each region's colour, numbered) for ``compose --preview-layout`` and docs/editing-and-composing.md.

Soft masks: each box rises from 0 to 1 over ``blend`` (a fraction of the picture's shorter side) centred on its
edges, except at the picture's own border; with a background, the background's weight is what the boxes leave
(1 - their sum, floored at 0); then the weights are divided by their sum, so they sum to one at every latent pixel.
Written here: no maintained library does region weights for diffusion (MultiDiffusion's reference code is a
research script).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from runtime.errors import ConfigError, shown

NAMED_LAYOUTS = {
    "left,right": ((0.0, 0.0, 0.5, 1.0), (0.5, 0.0, 1.0, 1.0)),
    "right,left": ((0.5, 0.0, 1.0, 1.0), (0.0, 0.0, 0.5, 1.0)),
    "top,bottom": ((0.0, 0.0, 1.0, 0.5), (0.0, 0.5, 1.0, 1.0)),
    "bottom,top": ((0.0, 0.5, 1.0, 1.0), (0.0, 0.0, 1.0, 0.5)),
}
LAYOUT_HELP = (
    "left,right | top,bottom (and reversed) | ROWSxCOLS, e.g. 2x2 (row by row) | boxes as fractions "
    "x0,y0,x1,y1;x0,y0,x1,y1 (0,0 is the top left)"
)
DEFAULT_BLEND = 0.125  # the soft edge of a region, as a fraction of the picture's shorter side
MAX_REGIONS = 16  # a 4x4 grid: a smaller cell is narrower than its two soft edges (DEFAULT_BLEND each)
_GRID = re.compile(r"([0-9]+)x([0-9]+)")  # ROWSxCOLS in ASCII digits (str.isdigit passes "²", which int() refuses)


@dataclass(frozen=True)
class Box:
    """A region, in fractions of the picture: left, top, right, bottom."""

    x0: float
    y0: float
    x1: float
    y1: float

    def describe(self) -> str:
        return f"{self.x0:g},{self.y0:g},{self.x1:g},{self.y1:g}"

    def overlap(self, other: Box) -> float:
        """The area both boxes cover, as a fraction of the picture."""
        width = min(self.x1, other.x1) - max(self.x0, other.x0)
        height = min(self.y1, other.y1) - max(self.y0, other.y0)
        return max(width, 0.0) * max(height, 0.0)


def grid(rows: int, cols: int) -> tuple[Box, ...]:
    """``rows`` x ``cols`` equal cells, row by row from the top left."""
    return tuple(Box(c / cols, r / rows, (c + 1) / cols, (r + 1) / rows) for r in range(rows) for c in range(cols))


def parse_layout(text: str) -> tuple[Box, ...]:
    """``--layout`` -> 1 to ``MAX_REGIONS`` boxes; refuse empty, outside, overlapping or too many boxes in one line.
    The count is checked before any number is read, so a hostile layout ("99999999x99999999", thousands of boxes)
    costs no more than its own length."""
    layout = text.replace(" ", "").lower()
    if layout in NAMED_LAYOUTS:
        return tuple(Box(*box) for box in NAMED_LAYOUTS[layout])
    if "x" in layout and ";" not in layout and "," not in layout:
        grid_size = _GRID.fullmatch(layout)
        rows, cols = map(_grid_count, grid_size.groups()) if grid_size else (0, 0)
        if rows * cols < 1:
            raise ConfigError(f"--layout {shown(text)}: a grid is ROWSxCOLS, e.g. 2x2", hint=LAYOUT_HELP)
        if rows * cols > MAX_REGIONS:
            raise _too_many(text)
        return grid(rows, cols)
    items = layout.split(";")
    if len(items) > MAX_REGIONS:
        raise _too_many(text)
    boxes = []
    for item in items:
        try:
            values = [float(v) for v in item.split(",")]
        except ValueError:
            values = []
        if len(values) != 4 or not all(np.isfinite(values)):
            raise ConfigError(f"--layout {shown(text)}: {shown(item)} is not a box x0,y0,x1,y1", hint=LAYOUT_HELP)
        boxes.append(Box(*values))
    return check_boxes(tuple(boxes), text)


def _grid_count(digits: str) -> int:
    """A grid's number of rows or columns; a count of more than three digits reads as MAX_REGIONS + 1 (too many),
    so that a thousand-digit one is never converted."""
    significant = digits.lstrip("0")
    return int(significant or "0") if len(significant) <= 3 else MAX_REGIONS + 1


def _too_many(text: str) -> ConfigError:
    return ConfigError(
        f"--layout {shown(text)}: more than {MAX_REGIONS} regions; a layout holds at most {MAX_REGIONS}",
        hint="one region per sound; a 4x4 grid is the finest (smaller regions are narrower than their soft edges)",
    )


def check_boxes(boxes: tuple[Box, ...], text: str) -> tuple[Box, ...]:
    for box in boxes:
        if not (0 <= box.x0 < box.x1 <= 1 and 0 <= box.y0 < box.y1 <= 1):
            raise ConfigError(
                f"--layout {shown(text)}: box {box.describe()} is empty or leaves the picture",
                hint="each box needs 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1",
            )
    for i, a in enumerate(boxes):
        for b in boxes[i + 1 :]:
            if a.overlap(b) > 1e-9:
                raise ConfigError(
                    f"--layout {shown(text)}: boxes {a.describe()} and {b.describe()} overlap",
                    hint="regions must not overlap; their soft edges already blend them",
                )
    return boxes


def box_mask(box: Box, size: tuple[int, int], blend: float) -> np.ndarray:
    """A soft mask [h, w] of ``box`` over latent pixels (centres at (i + 0.5) / n): 1 inside, 0 outside, a linear
    ramp ``blend`` wide (a fraction of the shorter side) across each edge that is not the picture's border."""
    h, w = size
    ramp = max(blend * min(h, w), 1e-6)  # in latent pixels

    def axis(n: int, low: float, high: float) -> np.ndarray:
        centres = np.arange(n) + 0.5  # [n]
        rise = np.ones(n) if low <= 0 else np.clip((centres - low * n) / ramp + 0.5, 0, 1)  # [n]
        fall = np.ones(n) if high >= 1 else np.clip((high * n - centres) / ramp + 0.5, 0, 1)  # [n]
        return rise * fall  # [n]

    return np.outer(axis(h, box.y0, box.y1), axis(w, box.x0, box.x1))  # [h, w]


def region_weights(
    boxes: tuple[Box, ...], size: tuple[int, int], *, background: bool, blend: float = DEFAULT_BLEND
) -> np.ndarray:
    """One weight map per region (and last, the background's when ``background``): [C, 1, h, w] float32, summing
    to one at every latent pixel; refuse a layout that leaves pixels to nobody without a background."""
    masks = np.stack([box_mask(box, size, blend) for box in boxes])  # [R, h, w]
    covered = masks.sum(axis=0)  # [h, w]
    if background:
        masks = np.concatenate([masks, np.clip(1.0 - covered, 0.0, None)[None]])  # [R + 1, h, w]
        covered = masks.sum(axis=0)  # [h, w]
    elif np.any(covered <= 0):
        raise ConfigError(
            f"the layout's boxes ({'; '.join(b.describe() for b in boxes)}) leave part of the picture to no sound",
            hint='add --background "a park at dusk" (or another prompt) for the rest, or boxes that cover it',
        )
    return (masks / covered)[:, None].astype(np.float32)  # [C, 1, h, w]


PALETTE = ((230, 80, 60), (60, 140, 230), (90, 190, 90), (240, 190, 50))  # region 1..4; the background is grey
BACKGROUND_GREY = (150, 150, 150)


def layout_picture(weights: np.ndarray, boxes: tuple[Box, ...], size: tuple[int, int]):
    """What a layout does, as a PIL picture of ``size`` (width, height): each region's colour mixed by its weight
    (the background grey), each box numbered at its centre; for ``compose --preview-layout`` and docs/editing-and-composing.md."""
    from PIL import Image, ImageDraw

    colours = np.array([PALETTE[k % len(PALETTE)] for k in range(len(boxes))] + [BACKGROUND_GREY], np.float32)
    mixed = np.einsum("chw,ck->hwk", weights[:, 0], colours[: len(weights)])  # [h, w, 3]
    picture = Image.fromarray(np.round(mixed).astype(np.uint8), mode="RGB").resize(size, Image.BILINEAR)
    draw = ImageDraw.Draw(picture)
    width, height = size
    for k, box in enumerate(boxes):
        centre = ((box.x0 + box.x1) / 2 * width, (box.y0 + box.y1) / 2 * height)
        draw.text(centre, str(k + 1), fill=(255, 255, 255), anchor="mm", font_size=max(12, min(size) // 8))
    return picture


def stereo_boxes(left_energy: float, right_energy: float) -> tuple[Box, Box]:
    """A left and a right region split where the channels' energies put the balance (equal: in the middle), each
    side at least a tenth of the picture."""
    split = float(np.clip(left_energy / (left_energy + right_energy), 0.1, 0.9))
    return Box(0.0, 0.0, split, 1.0), Box(split, 0.0, 1.0, 1.0)
