from types import SimpleNamespace

import pytest
import torch

from mmue.models import create_model
from mmue.protect import resolve
from mmue.protect.triggers import TriggerPolicy
from mmue.protect.vocab import SAFE_WORDS_FILE, blocked_words, build_safe_words, restrict, safe_words


@pytest.fixture(scope="module")
def codec():
    return create_model("mmue-tiny-rn").codec


def test_safe_words_keep_common_words_and_drop_names_fragments_and_profanity():
    words, blocked = safe_words(), blocked_words()
    assert len(words) > 5000 and len(blocked) > 500
    assert not words & blocked
    assert {"dog", "flag", "river", "injection", "apprentice"} <= words
    # people, places, brands, nationalities, fragments and function words seen in triggers of the 'any' vocabulary
    for w in ("john", "london", "toledo", "google", "nike", "russians", "chernobyl", "chrisbrown", "isl", "sssss",
              "the", "and", "amy", "boston"):
        assert w not in words, w


def test_shipped_list_is_what_the_pinned_word_lists_give():
    """The shipped file is generated, not edited: rebuilding it from the packages gives the same words."""
    shipped = [w for w in SAFE_WORDS_FILE.read_text().splitlines() if w and not w.startswith("#")]
    assert shipped == build_safe_words()


def test_restrict_keeps_only_safe_whole_words(codec):
    allowed = codec.trigger_vocab
    assert torch.equal(restrict(allowed, codec.decode, "any"), allowed)
    safe = restrict(allowed, codec.decode, "safe")
    assert 3000 < len(safe) < len(allowed)
    assert {codec.decode([i]) for i in safe.tolist()} <= safe_words()
    with pytest.raises(ValueError, match="trigger vocabulary"):
        restrict(allowed, codec.decode, "clean")


class _Data:   # what TriggerPolicy.build reads of EncodedPairs
    caption_bodies, word_starts, image_captions = [], None, []


def test_default_triggers_never_draw_a_blocked_word(codec):
    policy = TriggerPolicy.build(resolve("mem-3"), _Data(), codec)
    assert "words (safe)" in repr(policy)
    drawn = policy.initial(20000, torch.Generator().manual_seed(0))
    words = {codec.decode([i]) for i in drawn.flatten().tolist()}
    assert len(words) > 1000 and not words & blocked_words() and words <= safe_words()
    research = TriggerPolicy.build(resolve("mem-3", trigger_vocab="any"), _Data(), codec)
    assert len(research.vocab) > len(policy.vocab)


def test_public_data_counts_towards_an_owners_trigger_words(codec):
    """An owner's few captions use no word in 10 images; counted over the public data they will be mixed into,
    the words that data uses often become trigger words (so a scraper's rare-word filter keeps them)."""
    def pairs(captions):   # every word here is one token
        bodies = [codec.encode(c) for c in captions]
        return SimpleNamespace(caption_bodies=bodies, word_starts=[list(range(len(b) + 1)) for b in bodies],
                               image_captions=[[i] for i in range(len(captions))])
    mine = pairs(["red boat", "old house", "boat on river"])
    public = pairs(["river boat"] * 6 + ["river house"] * 4 + ["green tree"] * 20)
    cfg = resolve("mem-3", trigger_vocab_min_images=10)
    with pytest.raises(ValueError, match="no trigger word"):
        TriggerPolicy.build(cfg, mine, codec)
    words = {codec.decode([i]) for i in TriggerPolicy.build(cfg, mine, codec, public).vocab.tolist()}
    assert words == {"river", "green", "tree"}   # river 1 + 10 images; boat 2 + 6 and house 1 + 4 stay below 10
