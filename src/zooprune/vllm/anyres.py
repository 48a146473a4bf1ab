"""Where each of a LLaVA-NeXT image's packed tokens comes from, in vLLM's packing order.

vLLM's ``LlavaNextForConditionalGeneration._merge_image_patch_embeddings`` ("spatial_unpad")
lays an anyres image out as: the base crop's ``side x side`` tokens, then the high-resolution crops
as one grid, unpadded (transformers' ``unpad_image``), with an image-newline token after every
row. :func:`packed_sources` runs the same steps on an index tensor, so the processor (which has
only the image size) and the model agree on the layout; the model checks it against vLLM's own
packing of the real embeddings on every call.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..adapters.llava_next import crop_groups

__all__ = ["crop_groups", "packed_sources"]


def packed_sources(config: Any, image_size: tuple[int, int]) -> Tensor:
    """``(M, 2)`` LongTensor: per packed token its ``(crop, position in crop)``, ``(-1, -1)`` for a newline.

    Args:
        config: the model's ``LlavaNextConfig`` (vision ``image_size`` / ``patch_size``, pinpoints).
        image_size: the original image's ``(height, width)``.
    """
    from transformers.models.llava_next.modeling_llava_next import get_anyres_image_grid_shape, unpad_image

    side = config.vision_config.image_size // config.vision_config.patch_size
    n = side * side
    rows, cols = get_anyres_image_grid_shape(
        tuple(int(x) for x in image_size), config.image_grid_pinpoints, config.vision_config.image_size
    )
    crops = 1 + rows * cols
    ids = torch.stack(torch.meshgrid(torch.arange(crops), torch.arange(n), indexing="ij"), dim=-1)  # (P, n, 2)
    newline = torch.tensor([-1, -1])
    base = ids[0]  # (n, 2)
    if crops == 1:
        return torch.cat([base, newline[None]], dim=0)
    other = ids[1:].view(rows, cols, side, side, 2)
    other = other.permute(4, 0, 2, 1, 3).contiguous().flatten(1, 2).flatten(2, 3)  # (2, rows*side, cols*side)
    other = unpad_image(other, tuple(int(x) for x in image_size))  # (2, H', W')
    other = torch.cat([other, newline[:, None, None].expand(*other.shape[:-1], 1)], dim=-1)  # (2, H', W'+1)
    return torch.cat([base, other.flatten(1, 2).transpose(0, 1)], dim=0)
