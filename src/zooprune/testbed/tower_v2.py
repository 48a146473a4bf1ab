"""Vision-tower pretraining pieces of the testbed v2 recipe (``train_v2``'s clip stage).

- :class:`TextEncoder` and :func:`clip_loss`: the contrastive image-caption objective (CLIP's).
- :func:`sincos_positions`: fixed 2-D sine-cosine position embeddings (the MAE / ViT-style table),
  written into the stock ``CLIPVisionModel`` and kept out of the optimiser, so patch features
  carry where they are (the learned table of runs 1-2 stayed at a tenth of the content's scale
  and the features' position probe at chance).
- :func:`patch_targets` and the reconstruction term: each patch's last-layer feature predicts its
  own pixels (grey levels at full resolution plus its mean colour) through a linear head, an
  image-modelling term like masked-image modelling without the mask, the same for every patch
  (no category is named), so fine detail such as a tile's digit has to stay in the features.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .scenes import GRID, PATCH
from .stream_v2 import MAX_TEXT

EMBED = 128
RECON_DIM = PATCH * PATCH + 3  # grey levels of the 16x16 patch + its mean colour


class TextEncoder(nn.Module):
    """A small transformer over description tokens, mean-pooled to an ``EMBED``-d unit vector."""

    def __init__(self, vocab: int, pad_id: int, dim: int = 128, layers: int = 2) -> None:
        super().__init__()
        self.pad_id = pad_id
        self.tok = nn.Embedding(vocab, dim)
        self.pos = nn.Embedding(MAX_TEXT, dim)
        layer = nn.TransformerEncoderLayer(dim, 4, 4 * dim, dropout=0.0, batch_first=True, norm_first=True)
        self.enc = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.out = nn.Linear(dim, EMBED)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """``ids`` [B, T] -> unit vectors [B, EMBED]."""
        keep = ids != self.pad_id
        x = self.tok(ids) + self.pos(torch.arange(ids.shape[1]))[None]
        h = self.enc(x, src_key_padding_mask=~keep)
        h = (h * keep[..., None]).sum(1) / keep.sum(1, keepdim=True).clamp_min(1)
        return F.normalize(self.out(h), dim=-1)


def clip_loss(img: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE; image -> text also ranks every image's hard negative text. All [B, E]."""
    texts = torch.cat([pos, neg])  # [2B, E]
    logits = scale * img @ texts.T  # [B, 2B]
    target = torch.arange(img.shape[0])
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits[:, : img.shape[0]].T, target))


def sincos_positions(dim: int, grid: int = GRID, norm: float = 2.0) -> torch.Tensor:
    """[1 + grid * grid, dim] table: a zero CLS row, then per patch (row-major) sin/cos of its
    column in the first half of the channels and of its row in the second (MAE's 2-D table),
    every patch row scaled to L2 norm ``norm``."""
    if dim % 4:
        raise ValueError(f"dim must be a multiple of 4, got {dim}")
    quarter = dim // 4
    freq = 1.0 / (10000 ** (torch.arange(quarter, dtype=torch.float64) / quarter))

    def axis(x: torch.Tensor) -> torch.Tensor:
        ang = x[:, None].double() * freq[None]
        return torch.cat([ang.sin(), ang.cos()], 1)  # [n, dim / 2]

    pos = torch.arange(grid * grid)
    table = torch.cat([axis(pos % grid), axis(pos // grid)], 1)
    table = norm * table / table.norm(dim=1, keepdim=True)
    return torch.cat([torch.zeros(1, dim, dtype=torch.float64), table]).float()


def position_table(tower: nn.Module) -> nn.Embedding:
    """The ``position_embedding`` of a stock HF ``CLIPVisionModel``."""
    (emb,) = [m for n, m in tower.named_modules() if n.endswith("embeddings.position_embedding")]
    return emb


def set_fixed_positions(tower: nn.Module, norm: float) -> None:
    """Write :func:`sincos_positions` into the tower (idempotent; the optimiser must skip it)."""
    emb = position_table(tower)
    with torch.no_grad():
        emb.weight.copy_(sincos_positions(emb.weight.shape[1], norm=norm))


def patch_targets(pixel_values: torch.Tensor) -> torch.Tensor:
    """[B, 3, 224, 224] normalised pixels -> [B, 196, RECON_DIM] per patch (row-major): its 256
    grey levels (channel mean) and its mean colour."""
    b = pixel_values.shape[0]
    patches = pixel_values.reshape(b, 3, GRID, PATCH, GRID, PATCH).permute(0, 2, 4, 1, 3, 5)
    patches = patches.reshape(b, GRID * GRID, 3, PATCH * PATCH)
    return torch.cat([patches.mean(2), patches.mean(3)], -1)


def recon_loss(head: nn.Module, feats: torch.Tensor, pixel_values: torch.Tensor) -> torch.Tensor:
    """Mean squared error of ``head(feats)`` [B, 196, RECON_DIM] against :func:`patch_targets`."""
    return F.mse_loss(head(feats.float()), patch_targets(pixel_values))


__all__ = [
    "EMBED",
    "RECON_DIM",
    "TextEncoder",
    "clip_loss",
    "patch_targets",
    "position_table",
    "recon_loss",
    "set_fixed_positions",
    "sincos_positions",
]
