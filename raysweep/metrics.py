"""What is measured on every run's held-out set: rate, posterior anisotropy, active units, MIG.

All functions take the encoder's outputs ``mu`` and ``logvar`` of a diagonal Gaussian posterior
``q(z|x) = N(mu(x), diag(exp(logvar(x))))`` against the prior ``N(0, I)``. A latent may be a vector
``(B, D)`` or spatial ``(B, C, H, W)``; every function flattens it per sample to ``(B, J)`` with
``J`` the number of latent coordinates, because the paper's quantities sum or average over all of
them (KL over ``C x H x W``, anisotropy across all coordinates of one posterior).

Per-sample anisotropy (paper eq. 7) and aggregated-posterior anisotropy are different things: the
first is the spread of one posterior's log-variances, the second the spread of the eigenvalues of
the covariance of ``mu(x)`` over the data set. Both are reported.

``PosteriorStats`` accumulates sufficient statistics batch by batch, so a validation loop never has
to hold all latents (except for MIG, which needs them), and can merge them across DDP ranks.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.distributed as dist

# Eigenvalues of the covariance of mu are floored here before taking logs, so that collapsed
# directions (eigenvalue 0, or slightly negative from rounding) give a large finite log instead of
# -inf. Units: squared latent units. 1e-8 is far below the active-unit threshold of 0.01.
EIGENVALUE_FLOOR = 1e-8

# Burda et al. (2016): a latent coordinate is active when Var_x(mu_j(x)) exceeds this.
ACTIVE_UNIT_THRESHOLD = 0.01


def _flatten(x: torch.Tensor) -> torch.Tensor:
    """(B, ...) -> (B, J), promoting half precision to float32 (bf16 sums lose nats)."""
    x = x.detach().reshape(x.shape[0], -1)
    if x.dtype in (torch.float16, torch.bfloat16):
        x = x.float()
    return x


def kl_per_sample(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL( N(mu, diag(exp(logvar))) || N(0, I) ) per sample, in nats, shape ``(B,)``.

    ``0.5 * sum_j (mu_j^2 + exp(logvar_j) - logvar_j - 1)``, summed over every latent coordinate
    (``C x H x W`` for a spatial latent). Computed in at least float32 even when the inputs are
    bf16/fp16 (for example under autocast), because the sum of thousands of terms in bf16 is off by
    whole nats. Not detached: usable inside a training loss.
    """
    mu = mu.reshape(mu.shape[0], -1)
    logvar = logvar.reshape(logvar.shape[0], -1)
    if mu.dtype in (torch.float16, torch.bfloat16):
        mu = mu.float()
    if logvar.dtype in (torch.float16, torch.bfloat16):
        logvar = logvar.float()
    # Autocast does not touch these elementwise ops, but disabling it makes float32 certain.
    with torch.autocast(device_type=mu.device.type, enabled=False):
        return 0.5 * (mu.pow(2) + logvar.exp() - logvar - 1.0).sum(dim=1)


def per_sample_anisotropy(logvar: torch.Tensor) -> torch.Tensor:
    """Per-sample posterior anisotropy (paper eq. 7), shape ``(B,)``, in squared log-variance units.

    ``A(x) = Var_j(logvar_j(x))``, the population variance (divisor J) across the latent
    coordinates of one posterior. 0 when all coordinates share one variance; large when a few are
    precise and the rest sit near the prior.
    """
    return _flatten(logvar).var(dim=1, unbiased=False)


def active_units(mu_all: torch.Tensor, threshold: float = ACTIVE_UNIT_THRESHOLD) -> int:
    """Number of latent coordinates j with ``Var_x(mu_j(x)) > threshold`` (Burda et al. 2016).

    ``mu_all`` is ``(N, J)`` (or ``(N, C, H, W)``) over the evaluation set; the variance is the
    population variance over the N samples, computed in float64.
    """
    mu = _flatten(mu_all).double()
    return int((mu.var(dim=0, unbiased=False) > threshold).sum().item())


# The aggregated anisotropy is reported only from at least this many posterior means per latent
# coordinate (N >= 4 J). Below it the sample covariance is too far from the truth for the
# sampling correction to hold: at N = 2 J a known log-spectrum variance of 1.34 reads 1.48 (+10%).
MIN_MEANS_PER_COORDINATE = 4


@functools.lru_cache(maxsize=256)
def sampling_log_spread(ratio: float) -> float:
    """Variance of the log eigenvalues that sampling alone gives a sample covariance (Marchenko-Pastur).

    For ``N`` samples of an isotropic cloud in ``J`` dimensions with ``ratio = J / N <= 1`` the
    eigenvalues of the sample covariance follow the Marchenko-Pastur law, whose log-eigenvalue
    variance this returns (numerical integration with scipy; about ``ratio`` for small ratios:
    0.032 at 1/32, 0.135 at 1/8, 0.294 at 1/4, 0.723 at 1/2). It is the bias that sampling adds
    to the aggregated anisotropy of any cloud to first order, and what :func:`aggregated_anisotropy`
    subtracts.
    """
    from scipy import integrate

    if not 0.0 < ratio <= 1.0:
        raise ValueError(f"sampling_log_spread needs 0 < J / N <= 1, got {ratio}")
    low, high = (1.0 - math.sqrt(ratio)) ** 2, (1.0 + math.sqrt(ratio)) ** 2

    def density(value: float) -> float:
        return math.sqrt(max((high - value) * (value - low), 0.0)) / (2.0 * math.pi * ratio * value)

    first = integrate.quad(lambda v: density(v) * math.log(v), low, high, limit=200)[0]
    second = integrate.quad(lambda v: density(v) * math.log(v) ** 2, low, high, limit=200)[0]
    return max(second - first**2, 0.0)


#: Up to this many coordinates the sampling spread is measured exactly for the (N, J) at hand by
#: Monte Carlo (:func:`finite_sampling_log_spread`); past it the Marchenko-Pastur limit is within 2%.
FINITE_SIZE_MAX_DIMS = 64
FINITE_SIZE_REPLICATES = 400


@functools.lru_cache(maxsize=256)
def finite_sampling_log_spread(dims: int, num_samples: int) -> float:
    """Expected variance of the log eigenvalues of the centred sample covariance of `num_samples`
    draws of an isotropic Gaussian in `dims` coordinates, at this finite size.

    The Marchenko-Pastur limit (:func:`sampling_log_spread`) under-states it at small ``J``: at
    ``J = 16, N = 65`` the limit is 0.294 and the finite-size value 0.312, so an isotropic cloud
    read 0.027 instead of about 0. For ``dims <= FINITE_SIZE_MAX_DIMS`` this averages
    :data:`FINITE_SIZE_REPLICATES` seeded Wishart draws (deterministic, cached; milliseconds);
    beyond, it returns the limit, which is then within 2% of the finite-size value.
    """
    if dims > FINITE_SIZE_MAX_DIMS:
        return sampling_log_spread(dims / (num_samples - 1))
    rng = np.random.default_rng(dims * 100_003 + num_samples)
    spreads = np.empty(FINITE_SIZE_REPLICATES)
    for i in range(FINITE_SIZE_REPLICATES):
        draws = rng.standard_normal((num_samples, dims))
        draws -= draws.mean(axis=0)
        spreads[i] = np.log(np.linalg.eigvalsh(draws.T @ draws / (num_samples - 1))).var()
    return float(spreads.mean())


def aggregated_anisotropy(
    cov_eigenvalues: torch.Tensor, num_samples: int | None = None, floor: float = EIGENVALUE_FLOOR,
    prefix: str = "aggregated",
) -> dict[str, float]:
    """Non-uniformity of the aggregated posterior from the eigenvalues of ``Cov_x(mu(x))``.

    Returns ``<prefix>_anisotropy``, the **headline** number: the population variance of the log
    eigenvalues (the eq.-7 formula applied to the aggregated posterior's principal variances, so
    the two anisotropies share a scale; 0 for an isotropic cloud of means), and
    ``<prefix>_condition``, max/min eigenvalue, a secondary diagnostic dominated by the single most
    collapsed direction. Eigenvalues are floored at ``floor`` (default 1e-8) first, so collapsed
    directions give finite values.

    ``num_samples``: how many means the covariance was estimated from (None: the eigenvalues are
    exact). A sample covariance spreads its log eigenvalues even for an isotropic cloud (a rank-
    deficient one from ``N <= J`` samples measures ``N / J``, not the model), so the estimate is

        ``Var_j(log lambda_j) - finite_sampling_log_spread(J, N)``  (floored at 0),

    the sampling spread an isotropic cloud of that size shows (measured at the finite size for
    ``J <= 64``, the Marchenko-Pastur limit beyond), reported only when
    ``N >= MIN_MEANS_PER_COORDINATE * J + 1`` (``N - 1 >= 4 J``); otherwise the result is empty
    (the number is withheld; :func:`withheld_reason` says why). Checked on synthetic clouds: an
    isotropic one reads below 0.02 and a known log-spectrum variance within 10% at every size
    where the number is reported (tests/test_metrics.py).
    """
    eig = cov_eigenvalues.detach().double().reshape(-1).clamp_min(floor)
    dims = eig.numel()
    correction = 0.0
    if num_samples is not None:
        if withheld_reason(num_samples, dims) is not None:
            return {}
        correction = finite_sampling_log_spread(dims, num_samples) if dims > 1 else 0.0
    log_eig = eig.log()
    return {
        f"{prefix}_anisotropy": max(float(log_eig.var(unbiased=False).item()) - correction, 0.0),
        f"{prefix}_condition": float((eig.max() / eig.min()).item()),
    }


def withheld_reason(num_samples: int, dims: int) -> str | None:
    """Why an aggregated anisotropy from `num_samples` means of `dims` coordinates is withheld
    (None when it is reported)."""
    if num_samples - 1 >= MIN_MEANS_PER_COORDINATE * dims:
        return None
    return (
        f"{num_samples} posterior means for {dims} latent coordinates: a sound estimate needs at least "
        f"{MIN_MEANS_PER_COORDINATE * dims + 1} ({MIN_MEANS_PER_COORDINATE} per coordinate); raise "
        "data.latent_sample_size (generated datasets) or data.val_size"
    )


def variance_profile(mean_posterior_variance: torch.Tensor) -> torch.Tensor:
    """Variance profile (paper figure 1): per-coordinate mean posterior variance, sorted descending.

    ``mean_posterior_variance[j] = E_x[exp(logvar_j(x))]`` over the evaluation set, shape ``(J,)``.
    Coordinates near 1 are unused (at the prior); small values are the informative ones.
    """
    return torch.sort(mean_posterior_variance.detach().reshape(-1), descending=True).values


def _histogram_discretize(mu: torch.Tensor, n_bins: int) -> torch.Tensor:
    """Equal-width bins per coordinate over [min, max], as disentanglement_lib does with
    ``np.digitize(x, np.histogram(x, n_bins)[1][:-1])``; returns bin indices 0..n_bins-1."""
    lo = mu.min(dim=0).values
    hi = mu.max(dim=0).values
    width = (hi - lo) / n_bins
    # A constant coordinate falls in one bin (numpy widens its range by 0.5 to the same effect).
    safe = torch.where(width > 0, width, torch.ones_like(width))
    return torch.floor((mu - lo) / safe).long().clamp_(0, n_bins - 1)


def _mutual_info_nats(codes: torch.Tensor, factor: torch.Tensor, n_codes: int, n_values: int) -> torch.Tensor:
    """MI in nats between each column of ``codes`` (N, J) and one discrete ``factor`` (N,): (J,)."""
    n, j = codes.shape
    offsets = torch.arange(j, device=codes.device).mul(n_codes * n_values)
    index = offsets + codes * n_values + factor.unsqueeze(1)
    joint = torch.bincount(index.reshape(-1), minlength=j * n_codes * n_values)
    joint = joint.reshape(j, n_codes, n_values).double() / n
    p_code = joint.sum(dim=2, keepdim=True)
    p_factor = joint.sum(dim=1, keepdim=True)
    ratio = joint / (p_code * p_factor).clamp_min(1e-300)
    terms = torch.where(joint > 0, joint * ratio.clamp_min(1e-300).log(), torch.zeros_like(joint))
    return terms.sum(dim=(1, 2))


def _entropy_nats(factor: torch.Tensor, n_values: int) -> float:
    p = torch.bincount(factor, minlength=n_values).double() / factor.numel()
    p = p[p > 0]
    return float(-(p * p.log()).sum().item())


def mutual_info_gap(
    mu_all: torch.Tensor,
    factors: torch.Tensor,
    factor_sizes: Sequence[int] | None = None,
    n_bins: int = 20,
) -> float:
    """Mutual information gap (Chen et al. 2018) as disentanglement_lib computes it; in [0, 1].

    Each latent coordinate of ``mu_all`` (N, J) is discretised into ``n_bins`` equal-width
    histogram bins; the mutual information (nats) between every discretised code and every
    ground-truth factor of ``factors`` (N, K, integer values in ``[0, factor_sizes[k])``) is
    normalised by the factor's entropy, and the score is the mean over factors of
    ``(largest MI - second largest MI) / H(factor)``. Needs J >= 2. A factor that takes a single
    value in the sample has zero entropy and is skipped; if every factor is skipped the result is
    NaN. ``factor_sizes`` only bounds the values (inferred as ``max + 1`` when None).
    """
    mu = _flatten(mu_all).double()
    factors = factors.detach().reshape(factors.shape[0], -1).long().to(mu.device)
    if mu.shape[1] < 2:
        raise ValueError(f"mutual_info_gap needs at least 2 latent coordinates, got {mu.shape[1]}")
    if factors.shape[0] != mu.shape[0]:
        raise ValueError(f"mu_all has {mu.shape[0]} samples but factors has {factors.shape[0]}")
    if factor_sizes is None:
        factor_sizes = [int(v) + 1 for v in factors.max(dim=0).values.tolist()]
    if len(factor_sizes) != factors.shape[1]:
        raise ValueError(
            f"factor_sizes has {len(factor_sizes)} entries but factors has {factors.shape[1]} columns"
        )
    codes = _histogram_discretize(mu, n_bins)
    gaps: list[float] = []
    for k, size in enumerate(factor_sizes):
        factor = factors[:, k]
        if factor.min() < 0 or factor.max() >= size:
            raise ValueError(f"factor {k} has values outside [0, {size})")
        entropy = _entropy_nats(factor, size)
        if entropy <= 0.0:
            continue
        mi = torch.sort(_mutual_info_nats(codes, factor, n_bins, size), descending=True).values
        gaps.append(float((mi[0] - mi[1]).item()) / entropy)
    return sum(gaps) / len(gaps) if gaps else float("nan")


class PosteriorStats:
    """Accumulates posterior statistics over an evaluation set, batch by batch, DDP-aware.

    Keeps sufficient statistics in float64 on the device of the first batch (so a GPU validation
    loop does not synchronise with the host every batch): sample count, sum of KL, sum of
    per-sample anisotropy, ``sum mu`` (J,), ``sum mu mu^T`` (J, J) and ``sum exp(logvar)`` (J,).
    Results over several batches therefore equal results over their concatenation. ``mu`` itself
    (float32, CPU) and the factors are kept only when factors are passed (MIG needs them) or when
    ``keep_mu=True``.

    Memory: the (J, J) second moment costs ``8 J^2`` bytes (134 MB at J = 4096); for very large
    spatial latents pass ``covariance=False`` to skip it, which omits ``aggregated_anisotropy``,
    ``aggregated_condition`` and computes ``active_units`` from the per-coordinate variance only.

    Example::

        stats = PosteriorStats()
        for x, factors in loader:
            mu, logvar = model.encode(x)
            stats.update(mu, logvar, factors)
        stats.all_reduce_()          # no-op unless torch.distributed has world size > 1
        metrics = stats.compute()    # {'rate': ..., 'anisotropy': ..., 'mig': ...}
        profile = stats.compute_profile()
    """

    def __init__(
        self,
        factor_sizes: Sequence[int] | None = None,
        keep_mu: bool = False,
        covariance: bool = True,
        active_threshold: float = ACTIVE_UNIT_THRESHOLD,
        mig_bins: int = 20,
    ) -> None:
        self.factor_sizes = list(factor_sizes) if factor_sizes is not None else None
        self.keep_mu = keep_mu
        self.covariance = covariance
        self.active_threshold = active_threshold
        self.mig_bins = mig_bins
        self.count = 0
        self.sum_kl: torch.Tensor | None = None
        self.sum_anisotropy: torch.Tensor | None = None
        self.sum_mu: torch.Tensor | None = None
        self.sum_mu_sq: torch.Tensor | None = None  # diagonal of sum mu mu^T, kept without covariance
        self.sum_mu_outer: torch.Tensor | None = None
        self.sum_var: torch.Tensor | None = None
        self.mu_batches: list[torch.Tensor] = []
        self.factor_batches: list[torch.Tensor] = []
        # Spatial latents (B, C, H, W): the C x C covariance of mu over every position of every
        # image (channel anisotropy), well estimated at any number of images.
        self.channels: int | None = None
        self.positions = 1
        self.channel_sum: torch.Tensor | None = None
        self.channel_outer: torch.Tensor | None = None
        self._reduced = False

    @property
    def latent_dim(self) -> int | None:
        """Number of latent coordinates J seen so far (None before the first update)."""
        return None if self.sum_mu is None else int(self.sum_mu.numel())

    def _init_sums(self, j: int, device: torch.device, channels: int | None = None) -> None:
        zeros = {"dtype": torch.float64, "device": device}
        if channels is not None:
            self.channels, self.positions = channels, j // channels
            self.channel_sum = torch.zeros(channels, **zeros)
            self.channel_outer = torch.zeros(channels, channels, **zeros)
        self.sum_kl = torch.zeros((), **zeros)
        self.sum_anisotropy = torch.zeros((), **zeros)
        self.sum_mu = torch.zeros(j, **zeros)
        self.sum_mu_sq = torch.zeros(j, **zeros)
        self.sum_var = torch.zeros(j, **zeros)
        self.sum_mu_outer = torch.zeros(j, j, **zeros) if self.covariance else None

    @torch.no_grad()
    def update(self, mu: torch.Tensor, logvar: torch.Tensor, factors: torch.Tensor | None = None) -> None:
        """Add one batch: ``mu`` and ``logvar`` of shape (B, ...), optional ``factors`` (B, K) long."""
        if self._reduced:
            raise RuntimeError("PosteriorStats.update called after all_reduce_; make a new accumulator")
        mu64 = _flatten(mu).double()
        logvar64 = _flatten(logvar).double()
        if self.sum_mu is None:
            self._init_sums(mu64.shape[1], mu64.device, mu.shape[1] if mu.dim() == 4 else None)
        if mu64.shape[1] != self.latent_dim:
            raise ValueError(f"latent size changed from {self.latent_dim} to {mu64.shape[1]}")
        device = self.sum_mu.device
        mu64, logvar64 = mu64.to(device), logvar64.to(device)
        self.count += mu64.shape[0]
        self.sum_kl += kl_per_sample(mu64, logvar64).sum()
        self.sum_anisotropy += per_sample_anisotropy(logvar64).sum()
        self.sum_mu += mu64.sum(dim=0)
        self.sum_mu_sq += mu64.pow(2).sum(dim=0)
        self.sum_var += logvar64.exp().sum(dim=0)
        if self.sum_mu_outer is not None:
            self.sum_mu_outer += mu64.T @ mu64
        if self.channel_outer is not None and self.channel_sum is not None:
            per_position = mu.detach().double().to(device).movedim(1, -1).reshape(-1, self.channels)
            self.channel_sum += per_position.sum(dim=0)
            self.channel_outer += per_position.T @ per_position
        if factors is not None or self.keep_mu:
            self.mu_batches.append(_flatten(mu).float().cpu())
        if factors is not None:
            self.factor_batches.append(factors.detach().reshape(factors.shape[0], -1).long().cpu())

    def _sums(self) -> list[torch.Tensor]:
        sums = [self.sum_kl, self.sum_anisotropy, self.sum_mu, self.sum_mu_sq, self.sum_var]
        if self.sum_mu_outer is not None:
            sums.append(self.sum_mu_outer)
        if self.channel_sum is not None and self.channel_outer is not None:
            sums += [self.channel_sum, self.channel_outer]
        return sums  # type: ignore[return-value]

    def all_reduce_(self) -> PosteriorStats:
        """Merge statistics across DDP ranks in place, so every rank computes the global values.

        A no-op unless torch.distributed is initialised with world size > 1. Sums the sufficient
        statistics with one ``all_reduce(SUM)`` (on the current CUDA device for NCCL, on CPU
        otherwise) and gathers stored ``mu``/factors with ``all_gather_object`` (ranks may hold
        different numbers of samples, or none). Collective: every rank must call it, once.
        """
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() <= 1:
            return self
        if self._reduced:
            raise RuntimeError("PosteriorStats.all_reduce_ called twice; it would double-count")
        meta: list[tuple[int | None, bool, bool, int | None] | None] = [None] * dist.get_world_size()
        dist.all_gather_object(
            meta, (self.latent_dim, bool(self.mu_batches), bool(self.factor_batches), self.channels)
        )
        dims = {m[0] for m in meta if m is not None and m[0] is not None}
        if len(dims) > 1:
            raise ValueError(f"ranks disagree on the latent size: {sorted(dims)}")
        if not dims:
            return self  # no rank saw any data
        if dist.get_backend() == "nccl":
            comm_device = torch.device("cuda", torch.cuda.current_device())
        else:
            comm_device = torch.device("cpu")
        if self.sum_mu is None:  # this rank saw no batch: contribute zeros
            channels = next((m[3] for m in meta if m is not None and m[3] is not None), None)
            self._init_sums(dims.pop(), comm_device, channels)
        home = self.sum_mu.device
        sums = self._sums()
        count = torch.tensor([float(self.count)], dtype=torch.float64, device=home)
        flat = torch.cat([s.reshape(-1) for s in sums] + [count]).to(comm_device)
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        flat = flat.to(home)
        offset = 0
        for s in sums:
            s.copy_(flat[offset:offset + s.numel()].reshape(s.shape))
            offset += s.numel()
        self.count = int(round(flat[offset].item()))
        if any(m is not None and (m[1] or m[2]) for m in meta):
            local = (
                torch.cat(self.mu_batches) if self.mu_batches else None,
                torch.cat(self.factor_batches) if self.factor_batches else None,
            )
            gathered: list[tuple[torch.Tensor | None, torch.Tensor | None] | None] = [None] * len(meta)
            dist.all_gather_object(gathered, local)
            self.mu_batches = [g[0] for g in gathered if g is not None and g[0] is not None]
            self.factor_batches = [g[1] for g in gathered if g is not None and g[1] is not None]
        self._reduced = True
        return self

    def _check_nonempty(self) -> None:
        if self.count == 0 or self.sum_mu is None:
            raise RuntimeError("PosteriorStats.compute called before any update")

    @torch.no_grad()
    def compute(self) -> dict[str, float]:
        """Scalar metrics over everything accumulated (call ``all_reduce_`` first under DDP).

        Keys: ``rate`` (mean KL, nats), ``rate_bits`` (bits), ``anisotropy`` (mean per-sample
        anisotropy, eq. 7), ``aggregated_anisotropy`` (sampling-corrected variance of the log
        eigenvalues of Cov_x(mu), the headline aggregated number) and ``aggregated_condition``
        (max/min eigenvalue) when the covariance is kept and well estimated (see
        :func:`aggregated_anisotropy`; :meth:`withheld` says why otherwise), ``channel_anisotropy``
        and ``channel_condition`` for spatial latents (the same on the C x C covariance over every
        position of every image), ``aggregated_samples`` (the number of means, N), ``active_units``
        (count of coordinates with Var_x(mu_j) above the threshold), and ``mig`` with
        ``mig_samples`` when factors were given and J >= 2.
        """
        self._check_nonempty()
        n = float(self.count)
        rate = float(self.sum_kl.item()) / n
        out: dict[str, float] = {
            "rate": rate,
            "rate_bits": rate / math.log(2.0),
            "anisotropy": float(self.sum_anisotropy.item()) / n,
        }
        mean_mu = self.sum_mu / n
        if self.sum_mu_outer is not None:
            out["aggregated_samples"] = self.count
            if withheld_reason(self.count, int(mean_mu.numel())) is None:
                cov = self.sum_mu_outer / n - torch.outer(mean_mu, mean_mu)
                cov = 0.5 * (cov + cov.T)  # exact symmetry for eigvalsh
                out.update(aggregated_anisotropy(torch.linalg.eigvalsh(cov.cpu()), num_samples=self.count))
        if self.channel_outer is not None and self.channel_sum is not None and self.channels is not None:
            samples = self.count * self.positions
            mean_c = self.channel_sum / samples
            cov_c = self.channel_outer / samples - torch.outer(mean_c, mean_c)
            cov_c = 0.5 * (cov_c + cov_c.T)
            out.update(aggregated_anisotropy(torch.linalg.eigvalsh(cov_c.cpu()), num_samples=samples,
                                             prefix="channel"))
        var_mu = self.sum_mu_sq / n - mean_mu.pow(2)
        out["active_units"] = int((var_mu > self.active_threshold).sum().item())
        if self.factor_batches and self.latent_dim is not None and self.latent_dim >= 2:
            out["mig"] = mutual_info_gap(
                torch.cat(self.mu_batches), torch.cat(self.factor_batches), self.factor_sizes, self.mig_bins
            )
            out["mig_samples"] = sum(len(batch) for batch in self.factor_batches)
        return out

    def withheld(self) -> dict[str, str]:
        """Metrics left out of :meth:`compute` because they would be unsound, with the reason."""
        self._check_nonempty()
        reasons: dict[str, str] = {}
        if self.sum_mu_outer is None:
            reasons["aggregated_anisotropy"] = (
                f"the {self.latent_dim} x {self.latent_dim} covariance of mu is not kept for latents this large"
            )
        else:
            reason = withheld_reason(self.count, int(self.sum_mu.numel()))  # type: ignore[union-attr]
            if reason is not None:
                reasons["aggregated_anisotropy"] = reason
        return reasons

    @torch.no_grad()
    def compute_profile(self) -> torch.Tensor:
        """Variance profile: per-coordinate mean posterior variance, sorted descending, (J,) on CPU."""
        self._check_nonempty()
        return variance_profile((self.sum_var / float(self.count)).cpu())

    def stored_mu(self) -> torch.Tensor | None:
        """All stored ``mu`` (N, J) float32 on CPU, or None when nothing was kept."""
        return torch.cat(self.mu_batches) if self.mu_batches else None
