"""Files a finished trial leaves beside its metrics: the sorted posterior variance profile (CSV and
PNG, the paper's figure 1 for one model) and a grid of validation images over their reconstructions."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torch.utils.data import Dataset

from raysweep.names import RECONSTRUCTIONS, VARIANCE_PROFILE_CSV, VARIANCE_PROFILE_PNG

RECON_IMAGES = 8


def write_variance_profile(out_dir: Path, profile: torch.Tensor) -> None:
    """``variance_profile.csv`` (rank, mean posterior variance) and ``variance_profile.png`` of a
    sorted profile (J,) in `out_dir`."""
    values = profile.flatten().tolist()
    lines = ["rank,mean_posterior_variance"] + [f"{i},{v:.8g}" for i, v in enumerate(values)]
    (out_dir / VARIANCE_PROFILE_CSV).write_text("\n".join(lines) + "\n")
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
    fig.savefig(out_dir / VARIANCE_PROFILE_PNG)
    plt.close(fig)


@torch.no_grad()
def write_reconstruction_grid(out_dir: Path, model: nn.Module, dataset: Dataset, device: torch.device) -> None:
    """``reconstructions.png`` in `out_dir`: top row the first images of `dataset`, bottom row the
    model's posterior-mean reconstructions."""
    from torchvision.utils import save_image

    count = min(RECON_IMAGES, len(dataset))  # type: ignore[arg-type]
    images = torch.stack([dataset[i][0] for i in range(count)]).to(device)
    model.eval()
    out = model(images, sample=False)
    grid = torch.cat([images, out.x_hat.float().clamp(-1, 1)])
    save_image((grid + 1) / 2, out_dir / RECONSTRUCTIONS, nrow=count, padding=1)
