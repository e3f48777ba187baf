"""Draws the connectivity masks of dydnn's presets as PNG pictures (docs/connectivity.md).

Usage: python docs/make_mask_pictures.py [outdir]     (default: docs/images next to this script)

One picture per preset for G = 4 groups: a G x G grid with output groups as rows and
input groups as columns; a filled cell means output group j reads input group i. The
masks and the valid configs are read from the library itself (dydnn.Connectivity), so
the pictures always show what the code does. `make docs` runs this script.
"""
import string
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display needed
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import Patch, Rectangle  # noqa: E402

import dydnn  # noqa: E402

G = 4
READ_COLOUR = "#2b6cb0"    # a block the mask allows
CROSS_COLOUR = "#dd6b20"   # a fluid cross edge (reads an earlier island)
EMPTY_COLOUR = "#ffffff"   # a block the mask forbids (zeros in the dense weight)

PRESETS = [
    ("prefix", "prefix", dydnn.Connectivity.prefix(G)),
    ("incremental", "incremental", dydnn.Connectivity.incremental(G)),
    ("independent", "independent", dydnn.Connectivity.independent(G)),
    ("fluid_cross", "fluid, islands AB / CD, cross edges on", dydnn.Connectivity.fluid([[0, 1], [2, 3]], True)),
    ("fluid_no_cross", "fluid, islands AB / CD, cross edges off", dydnn.Connectivity.fluid([[0, 1], [2, 3]], False)),
]


def island_of(connectivity):
    """Maps each group to the index of its island (one island for non-fluid masks)."""
    out = {}
    for k, island in enumerate(connectivity.islands):
        for g in island:
            out[g] = k
    return out


def wrap_configs(names, per_line=8):
    """The valid configs as text lines of at most `per_line` names."""
    lines = [", ".join(names[k:k + per_line]) for k in range(0, len(names), per_line)]
    return "\n".join(lines)


def draw(connectivity, title, path):
    mask = connectivity.mask
    islands = island_of(connectivity)
    letters = list(string.ascii_uppercase[:G])
    has_cross = False

    fig, ax = plt.subplots(figsize=(4.2, 5.0))
    for j in range(G):          # output group: a row, A at the top
        for i in range(G):      # input group: a column, A on the left
            colour = EMPTY_COLOUR
            if mask[j][i]:
                cross = islands[i] != islands[j]
                has_cross |= cross
                colour = CROSS_COLOUR if cross else READ_COLOUR
            ax.add_patch(Rectangle((i, G - 1 - j), 1, 1, facecolor=colour, edgecolor="#4a5568", linewidth=1.2))

    ax.set_xlim(0, G)
    ax.set_ylim(0, G)
    ax.set_aspect("equal")
    ax.set_xticks([k + 0.5 for k in range(G)])
    ax.set_xticklabels(letters)
    ax.set_yticks([k + 0.5 for k in range(G)])
    ax.set_yticklabels(list(reversed(letters)))
    ax.xaxis.set_ticks_position("top")
    ax.xaxis.set_label_position("top")
    ax.set_xlabel("input group i")
    ax.set_ylabel("output group j")
    ax.tick_params(length=0)

    names = [c.name for c in connectivity.valid_configs]
    fig.suptitle(f"{title}\nvalid configs: {wrap_configs(names)}", fontsize=9)
    legend = [Patch(facecolor=READ_COLOUR, edgecolor="#4a5568", label="j reads i")]
    if has_cross:
        legend.append(Patch(facecolor=CROSS_COLOUR, edgecolor="#4a5568", label="cross edge"))
    if not all(all(row) for row in mask):
        legend.append(Patch(facecolor=EMPTY_COLOUR, edgecolor="#4a5568", label="no block (zeros)"))
    ax.legend(handles=legend, loc="upper center", bbox_to_anchor=(0.5, -0.04), ncol=len(legend), fontsize=7,
              frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv):
    outdir = Path(argv[1]) if len(argv) > 1 else Path(__file__).resolve().parent / "images"
    outdir.mkdir(parents=True, exist_ok=True)
    for stem, title, connectivity in PRESETS:
        path = outdir / f"mask_{stem}.png"
        draw(connectivity, title, path)
        print(f"[dydnn.docs] wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
