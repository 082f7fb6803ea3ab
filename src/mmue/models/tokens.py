"""Token rows for CLIP text towers: captions, an optional trigger, truncation that keeps end-of-text.

MEM puts a k-token trigger into every caption of an image (before its first word, or at a word boundary).
The trigger must survive publication as text, so it is written as words and must re-tokenise to the same ids;
and it must never be truncated away, so long captions are cut around it with the end-of-text token kept (the
reference code drops it).
"""
from __future__ import annotations

from functools import cached_property
from typing import Sequence

import torch


_TRIGGER_VOCABS: dict[tuple, torch.Tensor] = {}


class TokenCodec:
    """Wraps an open_clip ``SimpleTokenizer``-like object (``encode``/``decode``, sot/eot ids)."""

    def __init__(self, tokenizer, context_length: int):
        if not hasattr(tokenizer, "encode") or not hasattr(tokenizer, "sot_token_id"):
            raise TypeError(
                f"{type(tokenizer).__name__} is not supported: MMUE needs open_clip's SimpleTokenizer "
                "(BPE with start/end-of-text ids)")
        self.tokenizer = tokenizer
        self.context_length = int(context_length)
        self.sot = int(tokenizer.sot_token_id)
        self.eot = int(tokenizer.eot_token_id)
        self.vocab_size = int(tokenizer.vocab_size)
        self.special_ids = frozenset(int(i) for i in tokenizer.all_special_ids)

    def __repr__(self) -> str:
        return f"TokenCodec(vocab={self.vocab_size}, context_length={self.context_length})"

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text))

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode([int(i) for i in ids]).strip()

    def row(self, body_ids: Sequence[int], trigger_ids: Sequence[int] = (), at: int = 0) -> list[int]:
        """[sot] + body[:at] + trigger + body[at:] (cut to fit) + [eot]; raises if the trigger alone does not
        fit. ``at`` (a word boundary, in tokens) is pulled back into the context if the body is cut before it."""
        room = self.context_length - 2 - len(trigger_ids)
        if room < 0:
            raise ValueError(f"trigger of {len(trigger_ids)} tokens does not fit context {self.context_length}")
        body = list(body_ids)[:room]
        at = min(at, len(body))
        return [self.sot, *body[:at], *trigger_ids, *body[at:], self.eot]

    def rows(self, bodies: Sequence[Sequence[int]], triggers: Sequence[Sequence[int]] | None = None,
             at: Sequence[int] | None = None) -> torch.Tensor:
        """Padded [N, context_length] long tensor (pad id 0, as open_clip); ``at``: trigger offsets per row."""
        out = torch.zeros(len(bodies), self.context_length, dtype=torch.long)
        for i, body in enumerate(bodies):
            ids = self.row(body, triggers[i] if triggers is not None else (), at[i] if at is not None else 0)
            out[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        return out

    def tokenize(self, texts: Sequence[str]) -> torch.Tensor:
        return self.rows([self.encode(t) for t in texts])

    @cached_property
    def trigger_vocab(self) -> torch.Tensor:
        """Ids usable in a trigger: whole words that decode to text which re-encodes to exactly that id.

        Excludes special tokens (an end-of-text id would hijack argmax pooling) and sub-word fragments
        (they would merge differently once written as text). Computed once per vocabulary in a process (a few
        seconds for 49k ids; every open_clip model shares one), then shared by every codec of it.
        """
        key = (type(self.tokenizer).__qualname__, self.vocab_size,
               tuple(self.decode([i]) for i in range(0, self.vocab_size, 499)))   # a fingerprint of the vocabulary
        if key not in _TRIGGER_VOCABS:
            _TRIGGER_VOCABS[key] = self._whole_words()
        return _TRIGGER_VOCABS[key]

    def _whole_words(self) -> torch.Tensor:
        keep = []
        for i in range(self.vocab_size):
            if i in self.special_ids:
                continue
            word = self.decode([i])
            if not word or not any(ch.isalpha() for ch in word):
                continue
            if self.encode(word) == [i]:
                keep.append(i)
        return torch.tensor(keep, dtype=torch.long)

    def trigger_text(self, ids: Sequence[int]) -> str:
        return self.decode(ids)


class HFTokenizerAdapter:
    """A Hugging Face (WordPiece/BERT-style) tokenizer seen through the interface ``TokenCodec`` uses:
    ``[CLS]`` as start of text, ``[SEP]`` as end, pad id 0 (what open_clip's HF text tower masks out)."""

    def __init__(self, path: str):
        from transformers import AutoTokenizer
        self.tok = AutoTokenizer.from_pretrained(str(path))
        if self.tok.pad_token_id != 0 or self.tok.cls_token_id is None or self.tok.sep_token_id is None:
            raise TypeError(f"{path}: MMUE needs a tokenizer with [CLS]/[SEP] and pad id 0 "
                            f"(got pad {self.tok.pad_token_id})")
        self.sot_token_id, self.eot_token_id = int(self.tok.cls_token_id), int(self.tok.sep_token_id)
        self.vocab_size = int(self.tok.vocab_size)
        self.all_special_ids = list(self.tok.all_special_ids)

    def encode(self, text: str) -> list[int]:
        return list(self.tok.encode(text, add_special_tokens=False))

    def decode(self, ids) -> str:
        return self.tok.decode([int(i) for i in ids])
