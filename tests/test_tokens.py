import pytest

from mmue.models import create_model


@pytest.fixture(scope="module")
def codec():
    return create_model("mmue-tiny-rn").codec


def test_row_keeps_trigger_and_end_of_text(codec):
    body = codec.encode("word " * 100)
    trig = codec.encode("alpha beta gamma")
    row = codec.row(body, trig)
    assert len(row) == codec.context_length
    assert row[0] == codec.sot and row[-1] == codec.eot
    assert row[1:4] == trig
    rows = codec.rows([body, codec.encode("short")], [trig, trig])
    assert rows.shape == (2, codec.context_length)
    assert rows[1, 1:4].tolist() == trig and rows[1].argmax().item() == 5  # eot right after "short"


def test_trigger_that_cannot_fit_is_an_error(codec):
    with pytest.raises(ValueError):
        codec.row([], list(range(codec.context_length)))


def test_tokenize_matches_open_clip(codec):
    import open_clip
    ref = open_clip.get_tokenizer("mmue-tiny-rn")(["a red circle", "x " * 50])
    assert codec.tokenize(["a red circle", "x " * 50]).equal(ref)


def test_trigger_vocab_round_trips(codec):
    vocab = codec.trigger_vocab
    assert 20_000 < len(vocab) < codec.vocab_size
    assert codec.eot not in vocab.tolist() and codec.sot not in vocab.tolist()
    sample = vocab[:: max(1, len(vocab) // 300)][:300].tolist()
    for a, b, c in zip(sample, sample[1:], sample[2:]):
        assert codec.encode(codec.trigger_text([a, b, c])) == [a, b, c]


def test_trimmed_text_encoding_is_exact():
    import torch
    torch.manual_seed(0)
    m = create_model("mmue-tiny-rn").eval()
    ids = m.codec.tokenize(["a red circle", "two shapes including a small striped green star and a bar"])
    with torch.no_grad():
        full = m.encode_text(ids, trim=False)
        trimmed = m.encode_text(ids, trim=True)
    assert m.causal_text
    torch.testing.assert_close(full, trimmed, rtol=1e-5, atol=1e-5)
