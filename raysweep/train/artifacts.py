"""Files a finished trial leaves beside its metrics: the sorted posterior variance profile (CSV and
PNG, the paper's figure 1 for one model) and a grid of validation images over their reconstructions."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from raysweep.train.loop import Trainer

RECON_IMAGES = 8


def write_variance_profile(trainer: Trainer) -> None:
    """``variance_profile.csv`` (rank, mean posterior variance) and ``variance_profile.png``."""
    profile = getattr(trainer, "variance_profile", None)
    if profile is None:
        return
    values = profile.flatten().tolist()
    lines = ["rank,mean_posterior_variance"] + [f"{i},{v:.8g}" for i, v in enumerate(values)]
    (trainer.out_dir / "variance_profile.csv").write_text("\n".join(lines) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2), dpi=110)
    ax.plot(range(len(values)), values, marker="o" if len(values) <= 64 else None, markersize=3)
    ax.set_xlabel("latent coordinate (sorted by variance)")
    ax.set_ylabel("mean posterior variance")
    ax.set_yscale("log")
    ax.set_title("Posterior variance profile")
    fig.tight_layout()
    fig.savefig(trainer.out_dir / "variance_profile.png")
    plt.close(fig)


@torch.no_grad()
def write_reconstruction_grid(trainer: Trainer) -> None:
    """``reconstructions.png``: top row validation images, bottom row posterior-mean reconstructions."""
    from torchvision.utils import save_image

    count = min(RECON_IMAGES, len(trainer.val_set))
    images = torch.stack([trainer.val_set[i][0] for i in range(count)]).to(trainer.device)
    trainer.model.eval()
    out = trainer.model(images, sample=False)
    grid = torch.cat([images, out.x_hat.float().clamp(-1, 1)])
    save_image((grid + 1) / 2, trainer.out_dir / "reconstructions.png", nrow=count, padding=1)


def write_artifacts(trainer: Trainer) -> None:
    """Write every artifact of a trial into its output directory (rank 0 only)."""
    write_variance_profile(trainer)
    write_reconstruction_grid(trainer)
