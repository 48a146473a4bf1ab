"""Packing several questions about one image into one sequence, and the LLM forward on it.

Row layout (each question sees the prefix and itself only, exactly as if asked alone)::

    <s> USER : [196 or fewer image tokens] | q1 ... ASSISTANT : a1 </s> | q2 ... ASSISTANT : a2 </s> | ...

Every question block restarts its position ids right after the prefix, and a custom 4-D mask
lets it attend to the prefix and (causally) to its own block only.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from transformers import LlavaForConditionalGeneration

NEG = -1e30


@dataclass
class TokenIds:
    """The token ids the packer needs."""

    bos: int
    eos: int
    pad: int
    image: int
    user: int
    assistant: int
    colon: int


@dataclass
class Packed:
    """A packed batch. B rows, L tokens, Q questions in all, I image tokens in all."""

    input_ids: torch.Tensor  # [B, L]
    position_ids: torch.Tensor  # [B, L]
    mask: torch.Tensor  # [B, 1, L, L] float, 0 = attend, NEG = masked
    img_row: torch.Tensor  # [I] row of each image token
    img_pos: torch.Tensor  # [I] position in the row
    img_src: torch.Tensor  # [I] which of the image's 196 patches
    q_row: torch.Tensor  # [Q] row of each question
    q_pos: torch.Tensor  # [Q] position of the last prompt token (predicts the answer)
    answers: torch.Tensor  # [Q] answer token id
    ground: torch.Tensor  # [Q, L] 1.0 on the image tokens the question is about


def pack(
    ids: TokenIds,
    rows: list[tuple[list[int], list[dict]]],
) -> Packed:
    """Pack ``rows``: each is (kept patch indices of the image, questions).

    A question is a dict with ``q`` (token ids), ``a`` (answer id) and optionally ``ground``
    (bool [196] over patches).
    """
    seqs, poss, spans = [], [], []
    img_row, img_pos, img_src = [], [], []
    q_row, q_pos, answers, grounds = [], [], [], []
    for r, (keep, qas) in enumerate(rows):
        seq = [ids.bos, ids.user, ids.colon] + [ids.image] * len(keep)
        img_row += [r] * len(keep)
        img_pos += list(range(3, 3 + len(keep)))
        img_src += list(keep)
        prefix = len(seq)
        pos = list(range(prefix))
        blocks = []
        for qa in qas:
            start = len(seq)
            seq += list(qa["q"]) + [ids.assistant, ids.colon, qa["a"], ids.eos]
            pos += list(range(prefix, prefix + len(seq) - start))
            blocks.append((start, len(seq)))
            q_row.append(r)
            q_pos.append(len(seq) - 3)
            answers.append(qa["a"])
            g = qa.get("ground")
            grounds.append((r, [3 + i for i, k in enumerate(keep) if g is not None and g[k]]))
        seqs.append(seq)
        poss.append(pos)
        spans.append((prefix, blocks))
    L = max(len(s) for s in seqs)
    B = len(seqs)
    input_ids = torch.full((B, L), ids.pad, dtype=torch.long)
    position_ids = torch.zeros((B, L), dtype=torch.long)
    allow = torch.zeros((B, L, L), dtype=torch.bool)
    causal = torch.ones((L, L), dtype=torch.bool).tril()
    for r, (seq, pos, (prefix, blocks)) in enumerate(zip(seqs, poss, spans)):
        n = len(seq)
        input_ids[r, :n] = torch.tensor(seq)
        position_ids[r, :n] = torch.tensor(pos)
        allow[r, :prefix, :prefix] = causal[:prefix, :prefix]
        for s, e in blocks:
            allow[r, s:e, :prefix] = True
            allow[r, s:e, s:e] = causal[: e - s, : e - s]
        idx = torch.arange(n, L)
        allow[r, idx, idx] = True  # padding attends to itself only
    mask = torch.zeros((B, 1, L, L), dtype=torch.float32)
    mask.masked_fill_(~allow[:, None], NEG)
    ground = torch.zeros((len(grounds), L))
    for i, (_, positions) in enumerate(grounds):
        ground[i, positions] = 1.0
    return Packed(
        input_ids=input_ids,
        position_ids=position_ids,
        mask=mask,
        img_row=torch.tensor(img_row, dtype=torch.long),
        img_pos=torch.tensor(img_pos, dtype=torch.long),
        img_src=torch.tensor(img_src, dtype=torch.long),
        q_row=torch.tensor(q_row, dtype=torch.long),
        q_pos=torch.tensor(q_pos, dtype=torch.long),
        answers=torch.tensor(answers, dtype=torch.long),
        ground=ground,
    )


class Standardize(nn.Module):
    """Per-channel standardisation of vision features: (x - mean) / std, later folded away."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def vision_features(model: LlavaForConditionalGeneration, pixel_values: torch.Tensor) -> torch.Tensor:
    """Patch features of the selected vision layer, [B, 196, d_v] (CLS dropped)."""
    out = model.model.vision_tower(pixel_values, output_hidden_states=True)
    return out.hidden_states[model.config.vision_feature_layer][:, 1:]


def project(model: LlavaForConditionalGeneration, std: Standardize, feats: torch.Tensor) -> torch.Tensor:
    """Projector on standardised features, [B, 196, d_v] -> [B, 196, d_l]."""
    return model.model.multi_modal_projector(std(feats))


def lm_forward(
    model: LlavaForConditionalGeneration,
    img_emb: torch.Tensor,
    p: Packed,
    attentions: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Run the LLM on a packed batch.

    ``img_emb`` [B, 196, d_l]. Returns (answer logits [Q, V], eos logits [Q, V] at the answer
    token, head-averaged attention of layer 1 from each question's last prompt token [Q, L]).
    """
    emb = model.model.language_model.embed_tokens(p.input_ids)
    if len(p.img_row):
        emb = emb.index_put((p.img_row, p.img_pos), img_emb[p.img_row, p.img_src].to(emb.dtype))
    out = model.model.language_model(
        inputs_embeds=emb,
        attention_mask=p.mask,
        position_ids=p.position_ids,
        output_attentions=attentions,
    )
    h = out.last_hidden_state
    logits_a = model.lm_head(h[p.q_row, p.q_pos])
    logits_e = model.lm_head(h[p.q_row, p.q_pos + 1])
    att = None
    if attentions:
        att = out.attentions[1][p.q_row, :, p.q_pos, :].float().mean(1)
    return logits_a, logits_e, att
