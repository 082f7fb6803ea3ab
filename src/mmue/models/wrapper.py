"""``ClipModel``: one CLIP with pixels in [0,1] in and normalisation inside (torchattacks style).

Attacks and protection work in pixel space; the wrapper applies the model's mean/std itself so nobody
has to remember it. ``encode_text_embeds`` runs the text tower from token *embeddings*, which HotFlip
needs for gradients w.r.t. the trigger embeddings.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .tokens import TokenCodec


class ClipModel(nn.Module):
    def __init__(self, clip: nn.Module, codec: TokenCodec, name: str, model_cfg: dict,
                 mean=(0.48145466, 0.4578275, 0.40821073), std=(0.26862954, 0.26130258, 0.27577711)):
        super().__init__()
        self.clip = clip
        self.codec = codec
        self.name = name
        self.model_cfg = model_cfg
        size = model_cfg["vision_cfg"].get("image_size", 224)
        self.image_size = int(size if isinstance(size, int) else size[0])
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    def __repr__(self) -> str:
        n = sum(p.numel() for p in self.parameters()) / 1e6
        return f"ClipModel({self.name!r}, image_size={self.image_size}, context={self.context_length}, params={n:.1f}M)"

    @property
    def context_length(self) -> int:
        return self.codec.context_length

    @property
    def logit_scale(self) -> nn.Parameter:
        return self.clip.logit_scale

    @property
    def hf_text(self) -> nn.Module | None:
        """open_clip's Hugging Face text tower (``HFTextEncoder``), or None for its built-in transformer."""
        text = getattr(self.clip, "text", None)
        return text if text is not None and hasattr(text, "transformer") and hasattr(text, "pooler") else None

    @property
    def token_embedding(self) -> nn.Embedding:
        hf = self.hf_text
        return hf.transformer.get_input_embeddings() if hf is not None else self.clip.token_embedding

    def encode_image(self, pixels: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """pixels: float [B,3,H,W] in [0,1] at ``image_size``."""
        x = (pixels - self.mean.to(pixels.dtype)) / self.std.to(pixels.dtype)
        return self.clip.encode_image(x, normalize=normalize)

    @property
    def causal_text(self) -> bool:
        c = self.clip
        return getattr(c, "attn_mask", None) is not None and getattr(c, "text_pool_type", None) == "argmax"

    def encode_text(self, ids: torch.Tensor, normalize: bool = True, trim: bool = True) -> torch.Tensor:
        """Text features. With a causal text tower pooled at end-of-text, the padding after the longest
        row's end-of-text cannot influence the result, so ``trim`` drops it (exact, and ~2x faster for
        short captions in a 77-token context)."""
        if trim and self.causal_text:
            length = int(ids.argmax(dim=-1).max()) + 1
            if length < ids.shape[1]:
                ids = ids[:, :length]
                return self.encode_text_embeds(self.clip.token_embedding(ids), ids, normalize)
        return self.clip.encode_text(ids, normalize=normalize)

    def encode_text_embeds(self, embeds: torch.Tensor, ids: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """Text tower from token embeddings [B,L,D]; ``ids`` only locate the pooled (end-of-text) position.

        Mirrors open_clip's ``CLIP.encode_text`` after its embedding lookup; for a Hugging Face tower,
        ``HFTextEncoder.forward`` with the word embeddings given (the tower adds its own positions).
        """
        hf = self.hf_text
        if hf is not None:
            mask = (ids != hf.config.pad_token_id).long()
            x = hf.proj(hf.pooler(hf.transformer(inputs_embeds=embeds, attention_mask=mask), mask))
            return F.normalize(x, dim=-1) if normalize else x
        c = self.clip
        if not hasattr(c, "transformer") or not hasattr(c, "ln_final"):
            raise NotImplementedError(f"{type(c).__name__}: text-embedding access needs open_clip's built-in "
                                      "text tower")
        from open_clip.transformer import text_global_pool

        cast = c.transformer.get_cast_dtype()
        n = embeds.shape[1]
        x = embeds.to(cast) + c.positional_embedding[:n].to(cast)
        mask = c.attn_mask[:n, :n] if c.attn_mask is not None else None
        x = c.transformer(x, attn_mask=mask)
        x = c.ln_final(x)
        x = text_global_pool(x, ids, c.text_pool_type, eos_token_id=getattr(c, "text_eos_id", None))
        if c.text_projection is not None:
            x = c.text_projection(x) if isinstance(c.text_projection, nn.Linear) else x @ c.text_projection
        return F.normalize(x, dim=-1) if normalize else x

    def forward(self, pixels: torch.Tensor, ids: torch.Tensor):
        return self.encode_image(pixels), self.encode_text(ids), self.clip.logit_scale.exp()
