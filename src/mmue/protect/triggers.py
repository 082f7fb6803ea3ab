"""The trigger policy: which words a trigger may use, where it goes in each caption, and how often a caption is
seen without it while optimising. One object, built from a ``ProtectConfig``; the engine asks it, and export
uses the same word positions, so what the model saw is what is published.
"""
from __future__ import annotations

from typing import Sequence

import torch

from ..data.encoded import EncodedPairs
from .placement import trigger_positions
from .vocab import dataset_vocab, restrict, word_images


class TriggerPolicy:
    def __init__(self, k: int, vocab: torch.Tensor | None, position: str = "prefix", dropout: float = 0.0,
                 seed: int = 0, min_images: int = 0, words: str = "any"):
        self.k, self.vocab, self.position, self.dropout, self.seed = k, vocab, position, dropout, seed
        self.min_images, self.words = min_images, words

    @classmethod
    def build(cls, cfg, data: EncodedPairs, codec, public: EncodedPairs | None = None) -> "TriggerPolicy":
        """``public``: others' clean data the protected copy will be mixed into; trigger words are then counted
        over both, so that an owner's triggers can use words that many images of the mix use (a rare-word filter
        keeps them), not only words of the owner's few captions."""
        vocab = None
        if cfg.trigger_len:
            allowed = restrict(codec.trigger_vocab, codec.decode, cfg.trigger_vocab)
            others = (word_images(public.caption_bodies, public.word_starts, public.image_captions)
                      if public is not None and cfg.trigger_vocab_min_images else None)
            vocab = dataset_vocab(data.caption_bodies, data.word_starts, data.image_captions, allowed,
                                  cfg.trigger_vocab_min_images, others)
        return cls(cfg.trigger_len, vocab, cfg.trigger_position, cfg.trigger_dropout if cfg.trigger_len else 0.0,
                   cfg.seed, cfg.trigger_vocab_min_images, cfg.trigger_vocab)

    @staticmethod
    def needs_words_for(cfg) -> bool:
        """Whether the data must be built with word boundaries (``EncodedPairs.build(words=True)``): for
        triggers inside captions and for vocabularies of the dataset's own words."""
        return bool(cfg.trigger_len) and (cfg.trigger_position != "prefix" or cfg.trigger_vocab_min_images > 0)

    def initial(self, n: int, g: torch.Generator) -> torch.Tensor:
        """[n,k] starting triggers: words drawn from the vocabulary."""
        if not self.k:
            return torch.zeros((n, 0), dtype=torch.long)
        return self.vocab[torch.randint(len(self.vocab), (n, self.k), generator=g)]

    def placement(self, word_starts: Sequence[Sequence[int]] | None, n_captions: int, context_length: int
                  ) -> tuple[list[int], list[int]]:
        """Word index (for the published text) and token offset (for the model) of each caption's trigger."""
        if self.position == "prefix" or not self.k:
            return [0] * n_captions, [0] * n_captions
        if word_starts is None:
            raise ValueError(f"trigger_position={self.position!r} needs word boundaries: build the data with "
                             "EncodedPairs.build(..., words=True)")
        words = trigger_positions(word_starts, self.k, context_length, self.position, self.seed)
        return words, [starts[w] for starts, w in zip(word_starts, words)]

    def dropped(self, b: int, g: torch.Generator, device: torch.device | str = "cpu") -> torch.Tensor | None:
        """Which of ``b`` captions go without their trigger this time (None: dropout is off)."""
        if not self.dropout:
            return None
        return (torch.rand(b, generator=g) < self.dropout).to(device)

    def __repr__(self) -> str:
        vocab = f"{len(self.vocab)} words ({self.words})" if self.vocab is not None else "none"
        least = f" (>= {self.min_images} images)" if self.min_images else ""
        return (f"TriggerPolicy(k={self.k}, vocab={vocab}{least}, "
                f"position={self.position}, dropout={self.dropout})")
