"""Draw the AnomalySD method schematic for the book's intro page (matplotlib only, no data).

``python book/schematic.py OUT.png`` or ``draw(path)``; the book runner calls ``draw`` while it
stages the site (``anomalysd_core.reproduce.book.stage_book``), so the figure is never stored in git.
"""
from __future__ import annotations

import sys
from pathlib import Path


def draw(path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

    fig, ax = plt.subplots(figsize=(12, 5.0))
    ax.set_xlim(0, 12)
    ax.set_ylim(0, 5.0)
    ax.axis("off")

    def box(x, y, w, h, title, body="", color="#dbe9f6"):
        ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.04,rounding_size=0.12",
                                    fc=color, ec="#33475b", lw=1.2))
        ax.text(x + w / 2, y + h - 0.22, title, ha="center", va="top", fontsize=10.5, weight="bold")
        if body:
            ax.text(x + w / 2, y + h - 0.55, body, ha="center", va="top", fontsize=8.6,
                    linespacing=1.35)

    def arrow(x0, y0, x1, y1, text="", dy=0.12):
        ax.add_patch(FancyArrowPatch((x0, y0), (x1, y1), arrowstyle="-|>", mutation_scale=14,
                                     lw=1.3, color="#33475b"))
        if text:
            ax.text((x0 + x1) / 2, (y0 + y1) / 2 + dy, text, ha="center", va="bottom", fontsize=8.3,
                    style="italic")

    # band labels
    ax.text(0.1, 4.75, "Fine-tuning (Sec. 4.1), once for all classes", fontsize=11, weight="bold",
            color="#1f4e79")
    ax.text(0.1, 2.2, "Inference (Sec. 4.2-4.3), per test image of class c", fontsize=11,
            weight="bold", color="#7a3b00")

    # fine-tuning row
    box(0.1, 2.75, 2.3, 1.8, "K normals / class", "few-shot images x\nof every class c\n(K = 0, 1, 2, 4)")
    box(2.9, 2.75, 2.6, 1.8, "masks + prompts",
        "rectangle m, IoU(m, m_f) > gamma\ngamma in {0, 0.2, 0.5}\ny ~ T_c = {A perfect [c].}\n"
        "  U fine-grained T2_c")
    box(6.0, 2.75, 2.9, 1.8, "SD inpainting U-Net",
        "input [z_t ; m~ ; z_o] (eq 7)\nloss ||eps - eps_theta||^2 (eq 8)\n+ decoder: MSE + 0.1 LPIPS\n(eq 9-10)",
        color="#d9ead3")
    box(9.4, 2.75, 2.5, 1.8, "prototype bank P_c",
        "EfficientNet features psi\nof the same K normals,\nrotated (eq 12-13)", color="#fff2cc")
    arrow(2.4, 3.65, 2.9, 3.65)
    arrow(5.5, 3.65, 6.0, 3.65)

    # inference row
    box(0.1, 0.1, 2.0, 1.8, "test image x", "class c known,\nlabel unknown", color="#fce5cd")
    box(2.6, 0.1, 2.6, 1.8, "masks",
        "85 grid masks M_ij^(k),\nk in {1, 2, 4, 8}\n+ prototype mask M^(p):\nE > r (eq 14-15)",
        color="#fff2cc")
    box(5.7, 0.1, 2.6, 1.8, "inpaint",
        "noise E(x) to lambda*T (eq 11)\nDDIM denoise with\nmean tau(y), y in T_c\n-> x^ per mask",
        color="#d9ead3")
    box(8.8, 0.1, 3.1, 1.8, "score",
        "D(x, x^): LPIPS-style\nfeature distance (eq 16-17)\nS_ms harmonic mean over k\n"
        "S = 0.9 S_ms + 0.1 S_pg (eq 18-21)\nimage score = max S",
        color="#f4cccc")
    arrow(2.1, 1.0, 2.6, 1.0)
    arrow(5.2, 1.0, 5.7, 1.0)
    arrow(8.3, 1.0, 8.8, 1.0)
    arrow(7.45, 2.75, 7.0, 1.9)
    ax.text(7.5, 2.47, "fine-tuned model", fontsize=8.3, style="italic")
    arrow(10.65, 2.75, 4.6, 1.9)
    ax.text(9.6, 2.45, "bank P_c", fontsize=8.3, style="italic")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


if __name__ == "__main__":
    print(draw(sys.argv[1] if len(sys.argv) > 1 else "anomalysd_schematic.png"))
