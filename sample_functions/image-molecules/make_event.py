"""Print an image-molecules event: caffeine and paracetamol drawn side by side by RDKit.

    python make_event.py                        # the point is the centre of caffeine
    python make_event.py --molecule paracetamol
    python make_event.py --x 10 --y 10 --png pair.png

Each molecule gets a square panel of --size pixels, so the image is
2*size x size pixels and the centre of panel i is (size*i + size/2, size/2).
"""

from __future__ import annotations

import argparse
import base64
import json
import sys

MOLECULES = {
    "caffeine": "CN1C=NC2=C1C(=O)N(C(=O)N2C)C",
    "paracetamol": "CC(=O)NC1=CC=C(C=C1)O",
}
# osra 2.1.3 read both molecules right at 250 to 500 pixels a panel with
# RDKit's default bond line width (2). At 200 it read one of caffeine's
# imidazole nitrogens as a carbon.
DEFAULT_PANEL_PX = 400


def draw_png(smiles: list[str], panel_px: int = DEFAULT_PANEL_PX, bond_line_width: float | None = None) -> bytes:
    """Draw the molecules in one row of square panels and return the PNG bytes."""
    from rdkit import Chem
    from rdkit.Chem.Draw import rdMolDraw2D

    molecules = []
    for text in smiles:
        molecule = Chem.MolFromSmiles(text)
        if molecule is None:
            raise ValueError(f"RDKit cannot parse the SMILES {text!r}")
        molecules.append(molecule)
    drawer = rdMolDraw2D.MolDraw2DCairo(panel_px * len(molecules), panel_px, panel_px, panel_px)
    if bond_line_width is not None:
        drawer.drawOptions().bondLineWidth = bond_line_width
    drawer.DrawMolecules(molecules)
    drawer.FinishDrawing()
    return drawer.GetDrawingText()


def panel_centre(index: int, panel_px: int = DEFAULT_PANEL_PX) -> tuple[int, int]:
    return panel_px * index + panel_px // 2, panel_px // 2


def make_event(png: bytes, x: int, y: int) -> dict:
    return {"imageBase64": base64.b64encode(png).decode("ascii"), "x": x, "y": y}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--molecule", choices=list(MOLECULES), default="caffeine", help="put the point at the centre of this molecule's panel")
    parser.add_argument("--x", type=int, help="x of the point in pixels (overrides --molecule)")
    parser.add_argument("--y", type=int, help="y of the point in pixels (overrides --molecule)")
    parser.add_argument("--size", type=int, default=DEFAULT_PANEL_PX, help="panel width and height in pixels")
    parser.add_argument("--png", metavar="FILE", help="also write the image to FILE")
    arguments = parser.parse_args(argv)

    png = draw_png(list(MOLECULES.values()), arguments.size)
    x, y = panel_centre(list(MOLECULES).index(arguments.molecule), arguments.size)
    if arguments.x is not None:
        x = arguments.x
    if arguments.y is not None:
        y = arguments.y
    if arguments.png:
        with open(arguments.png, "wb") as output:
            output.write(png)
    json.dump(make_event(png, x, y), sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
