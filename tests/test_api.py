"""The API is the one door: every CLI subcommand that does work reaches the layer below through it, with
arguments the function below accepts (checked by binding them to its real signature, without running it)."""
import inspect

import pytest

from mmue import api
from mmue.cli import main


class Reached(Exception):
    pass


def _bound_to(monkeypatch, name: str) -> dict:
    """Replace ``api.<name>`` (a function from a lower layer) by one that binds its arguments to the real
    signature, records them and stops the command there."""
    real, seen = getattr(api, name), {}

    def fake(*args, **kwargs):
        seen.update(inspect.signature(real).bind(*args, **kwargs).arguments)   # TypeError on a bad argument
        raise Reached(name)
    monkeypatch.setattr(api, name, fake)
    return seen


@pytest.mark.parametrize("argv, target, expect", [
    (["demo", "--out", "d", "--strength", "mid", "--epochs", "3", "--device", "cpu"], "run_demo",
     {"strength": "mid", "epochs": 3, "device": "cpu"}),
    (["bench", "--out", "b", "--device", "cpu"], "run_bench", {"device": "cpu"}),
    (["data", "openclipart", "oc", "--size", "32", "--native", "256"], "write_openclipart",
     {"size": 32, "native": 256}),
    (["verify", "--clean", "c.csv", "--protected", "p", "--out", "v", "--scrapers", "none,jpeg-75", "--seed", "3"],
     "run_verify", {"seed": 3, "scrapers": ["none", "jpeg-75"], "epochs": None}),   # None: each model's recipe
])
def test_each_subcommand_reaches_its_workflow_through_the_api(monkeypatch, tmp_path, argv, target, expect):
    monkeypatch.chdir(tmp_path)
    seen = _bound_to(monkeypatch, target)
    with pytest.raises(Reached):
        main(argv)
    assert {k: seen[k] for k in expect} == expect


def test_the_api_lists_what_it_offers():
    for name in api.__all__:
        assert callable(getattr(api, name)), name
    assert {"protect", "train", "bench", "verify", "demo", "check"} <= set(api.__all__)
