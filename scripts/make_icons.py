"""Draw the agent's icons with Pillow: one tray icon per state and the application icon.

    python scripts/make_icons.py           # (re)write agent/icons/*
    python scripts/make_icons.py --check   # exit 1 if the committed files differ from a redraw

The drawing is plain geometry (no fonts, no randomness), drawn at 4x and scaled down with a
Lanczos filter for smooth edges, so a redraw gives the same pixels. `--check` compares pixels,
not file bytes: another zlib or Pillow version may compress the same image differently.

The glyph is a hub with three spokes (one router fanning out to nodes) in white on a disc. The
tray icons colour the disc by the agent's state; the application icon (Windows shortcut, MSI,
`llm-router.ico`) uses a neutral blue.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from PIL import Image, ImageChops, ImageDraw

ICONS = Path(__file__).resolve().parent.parent / "agent" / "icons"
# Keep in step with agent/tray.py COLOURS (the tray's tests compare the two).
STATE_COLOURS = {
    "online": (46, 160, 67),
    "degraded": (230, 160, 20),
    "offline": (200, 45, 45),
}
APP_COLOUR = (37, 99, 235)
OUTLINE = (30, 30, 30)
TRAY_SIZE = 64
ICO_SIZES = (16, 24, 32, 48, 64, 128, 256)
SUPERSAMPLE = 4


def draw_icon(colour: tuple[int, int, int], size: int) -> Image.Image:
    """The disc and glyph at `size` x `size`, RGBA with a transparent background."""
    big = size * SUPERSAMPLE
    image = Image.new("RGBA", (big, big), (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    pad = big * 0.04
    ring = max(1.0, big * 0.035)
    draw.ellipse((pad, pad, big - pad, big - pad), fill=(*OUTLINE, 255))
    draw.ellipse((pad + ring, pad + ring, big - pad - ring, big - pad - ring), fill=(*colour, 255))
    centre = big / 2
    white = (255, 255, 255, 255)
    spoke = big * 0.30
    line = max(1, round(big * 0.075))
    leaf = big * 0.095
    hub = big * 0.12
    for angle in (-90.0, 30.0, 150.0):  # three nodes, evenly spread, one on top
        rad = math.radians(angle)
        x, y = centre + spoke * math.cos(rad), centre + spoke * math.sin(rad)
        draw.line((centre, centre, x, y), fill=white, width=line)
        draw.ellipse((x - leaf, y - leaf, x + leaf, y + leaf), fill=white)
    draw.ellipse((centre - hub, centre - hub, centre + hub, centre + hub), fill=white)
    return image.resize((size, size), Image.Resampling.LANCZOS)


def images() -> dict[str, Image.Image]:
    """File name -> image, for every file this script writes (the .ico holds all its sizes)."""
    out = {
        f"tray-{state}.png": draw_icon(colour, TRAY_SIZE) for state, colour in STATE_COLOURS.items()
    }
    out["llm-router.png"] = draw_icon(APP_COLOUR, 256)
    out["llm-router.ico"] = draw_icon(APP_COLOUR, 256)
    return out


def write(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, image in images().items():
        path = directory / name
        if name.endswith(".ico"):
            # Each size drawn on its own would be sharper still, but Pillow's ICO writer scales
            # one image; from 256 with Lanczos the small sizes stay clean for this simple glyph.
            image.save(path, format="ICO", sizes=[(s, s) for s in ICO_SIZES])
        else:
            image.save(path, format="PNG", optimize=True)
        written.append(path)
    return written


def differences(directory: Path) -> list[str]:
    """Names of files that are missing or whose pixels differ from a redraw."""
    bad = []
    for name, image in images().items():
        path = directory / name
        if not path.is_file():
            bad.append(f"{name}: missing")
            continue
        with Image.open(path) as stored:
            if name.endswith(".ico"):
                sizes = sorted(stored.info.get("sizes", set()))
                if sizes != [(s, s) for s in ICO_SIZES]:
                    bad.append(f"{name}: sizes {sizes}")
                    continue
                stored.size = (256, 256)  # the largest image in the file
            got = stored.convert("RGBA")
        if got.size != image.size or ImageChops.difference(got, image).getbbox() is not None:
            bad.append(f"{name}: pixels differ")
    return bad


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    parser.add_argument("--out", type=Path, default=ICONS, help="default: %(default)s")
    args = parser.parse_args(argv)
    if args.check:
        bad = differences(args.out)
        for line in bad:
            print(line, file=sys.stderr)
        return 1 if bad else 0
    for path in write(args.out):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
