"""Registries load entry-point plug-ins from installed distributions, including those still
declared under a group's former name (with a DeprecationWarning naming the new group)."""

from __future__ import annotations

import warnings

import pytest
import torch

from fdm_common.registry import Registry
from fdm_engine.errors import FdmError
from fdm_engine.models.oracle import COVARIANCES


def install_plugin(root, entry_points: str) -> None:
    """A distribution `fake-gp` on sys.path (root) with `entry_points` and its module fake_gp."""
    (root / "fake_gp.py").write_text(
        "import torch\n"
        "def new(d, lengthscale, **_):\n    return torch.exp(-(d / lengthscale) ** 4)\n"
        "def old(d, lengthscale, **_):\n    return 1 / (1 + (d / lengthscale) ** 2)\n"
    )
    info = root / "fake_gp-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fake-gp\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(entry_points)


def test_covariance_plugins_load_from_the_new_and_the_former_group(tmp_path, monkeypatch):
    install_plugin(tmp_path, "[fdm.covariances]\nquartic = fake_gp:new\n\n[fdm.kernels]\ncauchy = fake_gp:old\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    registry = Registry("GP covariance", COVARIANCES.group, COVARIANCES.former_groups)  # fresh: plug-ins not loaded
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        names = registry.names()
    assert {"quartic", "cauchy"} <= set(names)
    deprecations = [str(w.message) for w in caught if issubclass(w.category, DeprecationWarning)]
    assert len(deprecations) == 1 and "'cauchy'" in deprecations[0]
    assert "'fdm.kernels'" in deprecations[0] and "'fdm.covariances'" in deprecations[0]
    d = torch.tensor([0.0, 1.0, 2.0])
    assert torch.allclose(registry.get("cauchy")(d, lengthscale=2.0), torch.tensor([1.0, 0.8, 0.5]))


def test_builtin_entries_win_and_unknown_names_are_one_line():
    registry = Registry("thing", group="fdm.no_such_group", former_groups=("fdm.no_such_former_group",))
    registry.register("a", 1)
    assert registry.names() == ["a"] and "a" in registry
    with pytest.raises(FdmError, match=r"unknown thing 'b' \(known: a\)"):
        registry.get("b")
    assert "ou" in COVARIANCES and "se" in COVARIANCES and "periodic" in COVARIANCES
