"""mmbench.plugins.Registry: lazy targets, did-you-mean errors, the base-class check, entry-point groups."""

from __future__ import annotations

import importlib.metadata
import sys
from collections.abc import Callable

import pytest

from latentdiff.sampling import SAMPLERS, get_sampler, pc_sampler
from mmbench import registry
from mmbench.cli import COMMANDS
from mmbench.data import registry as data_registry
from mmbench.metrics.base import METRICS, get_metric
from mmbench.plugins import Registry, load_target
from mmbench.suites import SUITES, get_suite


class Shape:
    """A base class for the test registries."""


class Square(Shape):
    pass


SQUARE = Square()


def _plugin_module(tmp_path, monkeypatch, name: str, body: str) -> None:
    (tmp_path / f"{name}.py").write_text(body)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, name, raising=False)


def _fake_entry_points(monkeypatch, group: str, points: dict[str, str]) -> None:
    real = importlib.metadata.entry_points

    def entry_points(**params):
        if params.get("group") == group:
            return [importlib.metadata.EntryPoint(name, value, group) for name, value in points.items()]
        return real(**params)

    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)


def test_targets_are_imported_on_first_resolution_only(tmp_path, monkeypatch):
    _plugin_module(tmp_path, monkeypatch, "t_lazy_shapes", f"from {__name__} import Shape\nclass Circle(Shape):\n    pass\n")
    shapes: Registry[type] = Registry("shape", expects=Shape, classes=True)
    shapes.register("circle", "t_lazy_shapes:Circle", "a round one", radius=2)
    assert shapes.names() == ["circle"] and "circle" in shapes
    assert shapes.entry("circle").defaults == (("radius", 2),)
    assert "t_lazy_shapes" not in sys.modules  # listing and looking up entries imports nothing
    cls = shapes.resolve("circle")
    assert cls.__name__ == "Circle" and "t_lazy_shapes" in sys.modules
    assert shapes["circle"] is cls and dict(shapes) == {"circle": cls}


def test_unknown_names_get_did_you_mean_and_the_known_names():
    shapes: Registry[Shape] = Registry("shape")
    shapes.register("square", SQUARE)
    shapes.register("triangle", SQUARE)
    with pytest.raises(KeyError, match=r"unknown shape 'sqare'\. Did you mean 'square'\? Known shapes: square, triangle\."):
        shapes.resolve("sqare")
    with pytest.raises(KeyError, match="Known shapes: square, triangle") as info:
        shapes.entry("hexagon")
    assert "Did you mean" not in str(info.value)
    assert "hexagon" not in shapes


def test_a_part_of_the_wrong_kind_fails_at_resolution_with_its_name(tmp_path, monkeypatch):
    _plugin_module(tmp_path, monkeypatch, "t_bad_shapes", "class Blob:\n    pass\nBLOB = Blob()\n")
    classes: Registry[type] = Registry("shape", expects=f"{__name__}:Shape", classes=True)
    classes.register("blob", "t_bad_shapes:Blob")
    with pytest.raises(TypeError, match=r"shape 'blob' \(t_bad_shapes:Blob\) is t_bad_shapes\.Blob, not a subclass "
                                        rf"of {__name__}\.Shape"):
        classes.resolve("blob")
    instances: Registry[Shape] = Registry("shape", expects=Shape)
    instances.register("blob", "t_bad_shapes:BLOB")
    instances.register("square", SQUARE)
    with pytest.raises(TypeError, match=rf"shape 'blob' \(t_bad_shapes:BLOB\) is a Blob, not an instance of {__name__}\.Shape"):
        instances.resolve("blob")
    assert instances.resolve("square") is SQUARE
    instances.register("missing", "t_bad_shapes:Nothing")
    with pytest.raises(AttributeError, match="module 't_bad_shapes' has no attribute 'Nothing'"):
        instances.resolve("missing")


def test_a_name_is_registered_once_unless_replaced():
    shapes: Registry[Shape] = Registry("shape")
    shapes.register("square", SQUARE, "four sides")
    shapes.register("square", SQUARE, "four sides")  # the same again: no-op
    with pytest.raises(ValueError, match="shape name 'square' is already registered"):
        shapes.register("square", Square())
    with pytest.raises(ValueError, match="already registered"):
        shapes.register("square", SQUARE, sides=4)
    other = Square()
    shapes.register("square", other, replace=True)
    assert shapes.resolve("square") is other
    shapes.unregister("square")
    assert shapes.names() == []


def test_entry_points_register_plugins_and_builtins_win(tmp_path, monkeypatch):
    _plugin_module(tmp_path, monkeypatch, "t_plugin_shapes", f"from {__name__} import Square\nPLUGIN = Square()\n")
    _fake_entry_points(monkeypatch, "t.shapes", {"plugged": "t_plugin_shapes:PLUGIN", "square": "t_plugin_shapes:PLUGIN"})
    shapes: Registry[Shape] = Registry("shape", group="t.shapes", expects=Shape)
    shapes.register("square", SQUARE)
    assert shapes.resolve("square") is SQUARE  # a known name does not even scan the entry points
    assert shapes.names() == ["square", "plugged"]
    assert shapes.resolve("square") is SQUARE  # the built-in wins over the plugin of the same name
    assert shapes.resolve("plugged") is sys.modules["t_plugin_shapes"].PLUGIN
    assert shapes.entry("plugged").summary == "plugin shape from an installed package"


def test_load_target_names_the_form():
    assert load_target("latentdiff.sampling:pc_sampler") is pc_sampler
    assert load_target("mmbench.plugins:Registry.resolve") is Registry.resolve
    with pytest.raises(ValueError, match="'package.module:attribute'"):
        load_target("latentdiff.sampling.pc_sampler")


# -------------------------------------------------------------------- the registries on the one type


def toy_sampler(score_fn, sde, x_init, **kwargs):
    raise NotImplementedError("listed, never called")


PLUGGED_METRIC = get_metric("f1")


@pytest.mark.parametrize(("kind", "group", "target", "lookup"), [
    (SAMPLERS, "mmbench.samplers", f"{__name__}:toy_sampler", get_sampler),
    (SUITES, "mmbench.suites", "mmbench.suites.synthetic:SYNTHETIC", get_suite),
    (METRICS, "mmbench.metrics", f"{__name__}:PLUGGED_METRIC", get_metric),
    (registry.MODELS, "mmbench.models", "mmbench.dummy:DummyModel", registry.resolve_class),
    (data_registry.DATASETS, "mmbench.datasets", "mmbench.data.synthetic:PatternsSource", data_registry.source_class),
])
def test_each_kind_takes_plugins_from_its_entry_point_group(monkeypatch, kind: Registry, group: str, target: str,
                                                            lookup: Callable):
    kind.names()  # the built-ins first
    monkeypatch.setattr(kind, "_plugins_loaded", False)
    _fake_entry_points(monkeypatch, group, {"t-plugged": target})
    try:
        assert "t-plugged" in kind.names()
        assert lookup("t-plugged") is load_target(target)
    finally:
        kind.unregister("t-plugged")


def test_the_five_registries_check_their_kind(monkeypatch):
    registry.register("t-not-a-model", f"{__name__}:Square", "not a model")
    try:
        with pytest.raises(TypeError, match=r"model 't-not-a-model' .* not a subclass of mmbench\.contract\.MultimodalModel"):
            registry.build("t-not-a-model", ("m0",))
    finally:
        registry.MODELS.unregister("t-not-a-model")
    for kind, wrong in ((SAMPLERS, SQUARE), (SUITES, SQUARE), (METRICS, SQUARE), (COMMANDS, SQUARE)):
        kind.register("t-wrong", wrong)
        try:
            with pytest.raises(TypeError, match=f"{kind.kind} 't-wrong' .* is a Square, not an instance of"):
                kind.resolve("t-wrong")
        finally:
            kind.unregister("t-wrong")
    with pytest.raises(KeyError, match="Did you mean 'dummy'"):
        registry.build("dumy", ("m0",))
