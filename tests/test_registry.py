"""Presets as data: the registry, aliases, one source for every knob (CLI flags generated from the config)."""
import json

import pytest

from mmue.cli import build_parser, knob_settings
from mmue.protect import describe_methods, get_method, list_methods, resolve
from mmue.protect.config import ProtectConfig, knobs
from mmue.protect.registry import PRESET_DIR


def test_every_preset_file_resolves_and_aliases_are_one_entry():
    for name in list_methods():
        cfg = resolve(name, "low")
        assert cfg.method == name and cfg.rounds >= 0
    assert resolve("mem") == resolve("mem-3") and "mem" not in list_methods()
    assert "mem" in list_methods(include_aliases=True)
    with pytest.raises(ValueError, match="mmue methods"):
        get_method("nope")
    files = sorted(p.stem for p in (PRESET_DIR / "methods").glob("*.json"))
    assert sorted(list_methods()) == files
    for p in (PRESET_DIR / "methods").glob("*.json"):
        raw = json.loads(p.read_text())
        assert raw["summary"] and raw["cost"] and raw["measured"], p


def test_random_records_no_rounds_from_cli_and_api_alike():
    args = build_parser().parse_args(["protect", "--train-data", "x.csv", "--out", "o", "--method", "random"])
    assert resolve(args.method, args.strength, **knob_settings(args)).rounds == 0
    assert resolve("random", "high").rounds == 0
    assert resolve("random", "high", rounds=2).rounds == 2      # an explicit setting still wins


def test_every_knob_has_a_flag_with_its_units():
    args = build_parser().parse_args(["protect", "--train-data", "x.csv", "--out", "o", "--eps", "4",
                                      "--no-shuffle", "--surrogate-wd", "0.1", "--eot", "rrc-flip|jpeg"])
    s = knob_settings(args)
    assert set(s) == {f.name for f in knobs()}
    cfg = resolve(args.method, args.strength, **s)
    assert cfg.eps_px == 4 and not cfg.shuffle and cfg.surrogate_wd == 0.1 and cfg.eot == "rrc-flip|jpeg"
    assert "eps=4/255" in repr(cfg) and "surrogate_wd=0.1" in repr(cfg)


def test_validation_comes_from_field_metadata():
    for bad, word in ((dict(noise="x"), "noise"), (dict(candidates=0), "candidates"), (dict(eps=0), "eps"),
                      (dict(trigger_dropout=1.0), "trigger_dropout"), (dict(eot="png"), "eot")):
        with pytest.raises(ValueError, match=word):
            resolve("mem-3", **bad)
    assert ProtectConfig().validate()


def test_methods_listing_names_cost_and_measurement():
    from mmue.protect import OFFERED
    text = describe_methods()
    assert f"(the app's choices): {', '.join(OFFERED)};" in " ".join(text.split("\n\n")[0].split())
    assert all(get_method(name).kind in ("paper", "robust") for name in OFFERED)
    for name in list_methods():
        assert name in text
    assert "cost:" in text and "measured:" in text and "strengths:" in text
    # long measurements fold under their column instead of running off the terminal
    assert max(map(len, text.splitlines())) <= 118
    em = text.split("\nem ")[1].split("\ntap ")[0]
    assert em.count("\n" + " " * 40) >= 3 and " ".join(em.split()).count(get_method("em").measured) == 1
