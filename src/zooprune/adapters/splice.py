"""Rebuild language-model inputs with only the kept visual tokens (family-agnostic tensor code)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class SplicedInputs:
    """Left-padded language-model inputs after pruning.

    Attributes:
        inputs_embeds: ``(B, L', d)`` text embeddings with kept visual tokens in their slots.
        attention_mask: ``(B, L')`` 1 for real tokens, 0 for left padding.
        input_ids: ``(B, L')`` the text ids, ``image_token_id`` at visual slots, ``pad_id`` at padding.
        source_positions: per sample, ``(L'_b,)`` LongTensor: for each unpadded new position, the
            position in the sample's unpadded original sequence it came from (merged tokens map to
            the last position of their image's slot).
    """

    inputs_embeds: Tensor
    attention_mask: Tensor
    input_ids: Tensor
    source_positions: list[Tensor]


def splice_visual_tokens(
    input_ids: Tensor,
    attention_mask: Tensor | None,
    text_embeds: Tensor,
    image_token_id: int,
    tokens_per_image: list[int],
    kept_tokens: list[Tensor],
    kept_sources: list[Tensor],
    pad_id: int = 0,
) -> SplicedInputs:
    """Replace each image's run of N placeholder tokens by its kept tokens, then left-pad.

    Args:
        input_ids: ``(B, L)`` ids from the processor, N_i placeholders per image (any padding side).
        attention_mask: ``(B, L)`` or None (no padding).
        text_embeds: ``(B, L, d)`` input embeddings of ``input_ids``.
        image_token_id: placeholder id.
        tokens_per_image: N_i for every image, in the order images appear across the batch.
        kept_tokens: per image, ``(k_i, d)`` tokens to place in its slot (original order).
        kept_sources: per image, ``(k_i,)`` index in ``[0, N_i)`` each kept token came from.
        pad_id: id written at padded positions of the returned ``input_ids``.
    """
    bsz = input_ids.shape[0]
    mask = torch.ones_like(input_ids, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
    rows_embeds: list[Tensor] = []
    rows_ids: list[Tensor] = []
    rows_src: list[Tensor] = []
    image = 0
    for b in range(bsz):
        ids = input_ids[b][mask[b]]  # (L_b,)
        emb = text_embeds[b][mask[b]]  # (L_b, d)
        slots = (ids == image_token_id).nonzero().flatten()
        pieces, piece_ids, sources = [], [], []
        cursor, used = 0, 0
        while used < len(slots):
            if image >= len(tokens_per_image):
                raise ValueError(
                    f"prompt {b} has {len(slots)} image placeholder tokens but the images only fill {used}"
                )
            n = tokens_per_image[image]
            run = slots[used : used + n]
            start = int(run[0])
            if len(run) != n or int(run[-1]) - start != n - 1:
                raise ValueError(
                    f"prompt {b}: image {image} needs {n} contiguous placeholder tokens, found {len(run)}"
                )
            pieces += [emb[cursor:start], kept_tokens[image].to(emb.dtype)]
            k = kept_tokens[image].shape[0]
            piece_ids += [
                ids[cursor:start],
                torch.full((k,), image_token_id, dtype=ids.dtype, device=ids.device),
            ]
            src = kept_sources[image].to(device=ids.device, dtype=torch.long) + start
            if src.numel() < k:  # merged tokens sit at the end of the slot
                src = torch.cat(
                    [src, torch.full((k - src.numel(),), start + n - 1, dtype=torch.long, device=ids.device)]
                )
            sources += [torch.arange(cursor, start, device=ids.device), src]
            cursor, used, image = start + n, used + n, image + 1
        pieces.append(emb[cursor:])
        piece_ids.append(ids[cursor:])
        sources.append(torch.arange(cursor, ids.shape[0], device=ids.device))
        rows_embeds.append(torch.cat(pieces))
        rows_ids.append(torch.cat(piece_ids))
        rows_src.append(torch.cat(sources))
    if image != len(tokens_per_image):
        raise ValueError(
            f"got {len(tokens_per_image)} images but the prompts hold placeholders for {image}: "
            "every image needs an image token in its prompt"
        )
    longest = max(r.shape[0] for r in rows_embeds)
    d = text_embeds.shape[-1]
    out_embeds = text_embeds.new_zeros(bsz, longest, d)
    out_mask = torch.zeros(bsz, longest, dtype=torch.long, device=input_ids.device)
    out_ids = torch.full((bsz, longest), pad_id, dtype=input_ids.dtype, device=input_ids.device)
    for b, (e, i) in enumerate(zip(rows_embeds, rows_ids)):
        out_embeds[b, longest - e.shape[0] :] = e
        out_mask[b, longest - e.shape[0] :] = 1
        out_ids[b, longest - e.shape[0] :] = i
    return SplicedInputs(out_embeds, out_mask, out_ids, rows_src)
