"""Lorentz-invariant pairwise features and the attention bias they give (ParT, arXiv 2202.03772)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from encoders.kinematics import delta_phi, pair_mass_squared, rapidity, transverse_momentum

__all__ = ["PAIR_FEATURES", "PairBias", "pairwise_lorentz_features"]

PAIR_FEATURES = ("ln_delta", "ln_kt", "ln_z", "ln_m2")


def pairwise_lorentz_features(four_momenta: Tensor, eps: float = 1e-8) -> Tensor:
    r"""ParT's four pair features for every ordered pair of objects.

    For objects a, b: :math:`\Delta = \sqrt{\Delta y^2 + \Delta\phi^2}` (phi wrapped),
    :math:`k_T = \min(p_{T,a}, p_{T,b})\,\Delta`, :math:`z = \min(p_{T,a}, p_{T,b}) / (p_{T,a} + p_{T,b})`,
    :math:`m^2 = (E_a + E_b)^2 - |\vec p_a + \vec p_b|^2`, each clamped at ``eps`` and logged.

    Args:
        four_momenta: (E, N, 4) as (energy, px, py, pz) in GeV.

    Returns:
        (E, N, N, 4): ln Delta, ln kT, ln z, ln m^2, symmetric in the two object axes.
    """
    pt = transverse_momentum(four_momenta)
    y = rapidity(four_momenta)
    phi = torch.atan2(four_momenta[..., 2], four_momenta[..., 1])
    delta = torch.sqrt(
        (y[:, :, None] - y[:, None, :]) ** 2 + delta_phi(phi[:, :, None], phi[:, None, :]) ** 2
    )
    pt_min = torch.minimum(pt[:, :, None], pt[:, None, :])
    kt = pt_min * delta
    z = pt_min / (pt[:, :, None] + pt[:, None, :]).clamp_min(eps)
    m2 = pair_mass_squared(four_momenta[:, :, None, :], four_momenta[:, None, :, :])
    return torch.log(torch.stack([delta, kt, z, m2], dim=-1).clamp_min(eps))


class PairBias(nn.Module):
    """A per-pair MLP turning Lorentz-invariant pair features into one attention bias per head.

    ParT (arXiv 2202.03772) adds this bias to the attention logits between particles; pairs
    touching a padded object get zero bias.

    Args:
        heads: H, attention heads (one bias each).
        hidden: width of the per-pair MLP.
    """

    def __init__(self, *, heads: int, hidden: int = 32) -> None:
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(len(PAIR_FEATURES), hidden),
            nn.GELU(),
            nn.Linear(hidden, hidden),
            nn.GELU(),
            nn.Linear(hidden, heads),
        )

    def forward(self, four_momenta: Tensor, mask: Tensor) -> Tensor:
        """Attention bias (E, H, N, N) from four-momenta (E, N, 4) and the object mask (E, N).

        The features are symmetric in the pair, so the MLP runs once per unordered pair of real
        objects (the diagonal and upper triangle of the real-object block) and the result is
        mirrored: on events with a few real objects in many slots that is a small fraction of the
        N^2 padded pairs (the same bias as evaluating every ordered pair).
        """
        events, slots = mask.shape
        upper_triangle = torch.ones(slots, slots, dtype=torch.bool, device=mask.device).triu()
        upper = mask[:, :, None] & mask[:, None, :] & upper_triangle
        bias = four_momenta.new_zeros(events, slots, slots, self.mlp[-1].out_features)
        bias[upper] = self.mlp(pairwise_lorentz_features(four_momenta)[upper]).to(bias.dtype)
        bias = torch.where(upper_triangle[None, :, :, None], bias, bias.transpose(1, 2))
        return bias.permute(0, 3, 1, 2)
