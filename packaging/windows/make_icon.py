"""Draws the agent's icon (the tray's "online" circle) as a multi-size Windows .ico.

Run at release time (scripts/release.sh) so no binary is committed: `python make_icon.py OUT`.
"""

from __future__ import annotations

import sys
from pathlib import Path

from PIL import Image, ImageDraw

SIZES = (16, 24, 32, 48, 64, 128, 256)
ONLINE_GREEN = (46, 160, 67)  # agent.tray.COLOURS[ONLINE]


def circle(size: int) -> Image.Image:
    """The tray's filled circle, drawn at `size` so small sizes stay crisp."""
    image = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    pad = max(1, size // 10)
    width = max(1, size // 32)
    draw.ellipse(
        (pad, pad, size - pad - 1, size - pad - 1),
        fill=(*ONLINE_GREEN, 255),
        outline=(30, 30, 30, 255),
        width=width,
    )
    return image


def main(out: str) -> None:
    images = [circle(s) for s in SIZES]
    largest = images[-1]
    largest.save(Path(out), format="ICO", sizes=[(s, s) for s in SIZES], append_images=images[:-1])


if __name__ == "__main__":
    main(sys.argv[1])
