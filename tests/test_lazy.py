import sys
import types

import pytest

from mmue.lazy import lazy_names


def test_a_name_loads_its_module_at_first_use_and_stays():
    pkg = types.ModuleType("mmue_lazy_probe")
    pkg.__getattr__ = lazy_names("mmue_lazy_probe", {"dumps": "json"})
    sys.modules["mmue_lazy_probe"] = pkg
    sub = types.ModuleType("mmue_lazy_probe.json")
    sub.dumps = lambda x: f"<{x}>"
    sys.modules["mmue_lazy_probe.json"] = sub
    try:
        assert "dumps" not in vars(pkg)
        assert pkg.dumps(1) == "<1>" and vars(pkg)["dumps"] is sub.dumps
        with pytest.raises(AttributeError, match="mmue_lazy_probe.*loads"):
            pkg.loads
    finally:
        del sys.modules["mmue_lazy_probe"], sys.modules["mmue_lazy_probe.json"]


def test_the_packages_names_resolve():
    import mmue.models
    import mmue.protect
    for pkg in (mmue.models, mmue.protect):
        assert all(getattr(pkg, name) is not None for name in pkg.__all__)
