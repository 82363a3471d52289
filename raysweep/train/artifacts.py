"""Files a finished trial leaves beside its metrics: the sorted posterior variance profile (CSV and
PNG, the paper's figure 1 for one model) and a grid of validation images over their reconstructions."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torch.utils.data import Dataset

from raysweep.names import RECONSTRUCTIONS, VARIANCE_PROFILE_CSV, VARIANCE_PROFILE_PNG, reconstructions_file

RECON_IMAGES = 8
#: The largest side of one image in a validation's grid (``train.log_images``): larger images are
#: downscaled, so a grid stays a few tens of kB at any ``data.image_size``.
STEP_IMAGE_PIXELS = 48


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
def reconstruction_rows(model: nn.Module, dataset: Dataset, device: torch.device,
                        pixels: int | None = None) -> tuple[torch.Tensor, int]:
    """(the first :data:`RECON_IMAGES` images of `dataset` over the model's posterior-mean
    reconstructions, in [0, 1], downscaled to at most `pixels` a side; the images per row). The
    model is left in eval mode; no random number is drawn (the training stream is untouched)."""
    count = min(RECON_IMAGES, len(dataset))  # type: ignore[arg-type]
    images = torch.stack([dataset[i][0] for i in range(count)]).to(device)
    model.eval()
    out = model(images, sample=False)
    grid = (torch.cat([images, out.x_hat.float().clamp(-1, 1)]).float().cpu() + 1) / 2
    if pixels is not None and max(grid.shape[-2:]) > pixels:
        scale = pixels / max(grid.shape[-2:])
        size = (max(1, round(grid.shape[-2] * scale)), max(1, round(grid.shape[-1] * scale)))
        grid = torch.nn.functional.interpolate(grid, size=size, mode="bilinear", antialias=True, align_corners=False)
    return grid.clamp(0, 1), count


def write_reconstruction_grid(out_dir: Path, model: nn.Module, dataset: Dataset, device: torch.device) -> None:
    """``reconstructions.png`` in `out_dir`: top row the first images of `dataset`, bottom row the
    model's posterior-mean reconstructions."""
    from torchvision.utils import save_image

    grid, count = reconstruction_rows(model, dataset, device)
    save_image(grid, out_dir / RECONSTRUCTIONS, nrow=count, padding=1)


def write_step_reconstructions(out_dir: Path, step: int, model: nn.Module, dataset: Dataset,
                               device: torch.device) -> Path:
    """The grid of validation `step` (``out_dir/reconstructions/step_<step>.png``, images at most
    :data:`STEP_IMAGE_PIXELS` a side), written whole or not at all (a reader never sees half a PNG)."""
    from torchvision.utils import save_image

    grid, count = reconstruction_rows(model, dataset, device, STEP_IMAGE_PIXELS)
    path = out_dir / reconstructions_file(step)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    save_image(grid, partial, nrow=count, padding=1, format="png")
    partial.replace(path)
    return path
