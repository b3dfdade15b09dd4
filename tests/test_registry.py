"""Registries fill themselves from the packages that define their entries: a new module
that registers is found without a list to edit, lookups stay lazy (no torch on import),
and a name registered twice is refused."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from cvtrain.errors import UserError
from cvtrain.registry import TASKS, Registry, import_providers

PACKAGE = "widgets_under_test"


def _write(path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))


@pytest.fixture
def widgets(tmp_path, monkeypatch):
    """A package whose registry fills from its `builtin` subpackage (two levels deep), and
    a user module outside it that registers too; forgotten by sys.modules afterwards."""
    _write(tmp_path / PACKAGE / "__init__.py", """
        from cvtrain.registry import Registry
        WIDGETS = Registry("widget", packages=(__name__ + ".builtin",))
    """)
    _write(tmp_path / PACKAGE / "builtin" / "__init__.py", "")
    _write(tmp_path / PACKAGE / "builtin" / "round.py", f"""
        from {PACKAGE} import WIDGETS
        @WIDGETS.register("round", family="a")
        def round_widget(cfg):
            return "round"
    """)
    _write(tmp_path / PACKAGE / "builtin" / "deeper" / "__init__.py", "")
    _write(tmp_path / PACKAGE / "builtin" / "deeper" / "square.py", f"""
        from {PACKAGE} import WIDGETS
        @WIDGETS.register("square", family="b")
        def square_widget(cfg):
            return "square"
    """)
    _write(tmp_path / "user_widgets.py", f"""
        from {PACKAGE} import WIDGETS
        @WIDGETS.register("hexagon", family="a")
        def hexagon_widget(cfg):
            return "hexagon"
    """)
    _write(tmp_path / "broken_widgets.py", "import a_dependency_that_is_not_installed\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield __import__(PACKAGE)
    for name in [m for m in sys.modules if m.split(".")[0] in (PACKAGE, "user_widgets", "broken_widgets")]:
        del sys.modules[name]


def test_a_module_that_registers_is_found_without_being_listed(widgets):
    assert f"{PACKAGE}.builtin.round" not in sys.modules, "nothing is imported before the first lookup"
    assert widgets.WIDGETS.names() == ["round", "square"]
    assert widgets.WIDGETS.get("square", families=("b",))(None) == "square"
    assert f"{PACKAGE}.builtin.deeper.square" in sys.modules


@pytest.mark.parametrize("when", ["before", "after"])
def test_a_provider_outside_the_packages_registers_before_or_after_the_first_lookup(widgets, when):
    registry = widgets.WIDGETS
    if when == "after":
        assert registry.names() == ["round", "square"]
    registry.add_provider("user_widgets")
    assert ("user_widgets" in sys.modules) == (when == "after"), "imported at the first lookup, or at once"
    assert registry.names(("a",)) == ["hexagon", "round"]


def test_import_providers_registers_what_a_config_names(widgets):
    import_providers(["user_widgets"])
    assert widgets.WIDGETS.get("hexagon")(None) == "hexagon"
    import_providers(["user_widgets"])  # again (a second run in the same process): nothing registered twice


def test_a_provider_that_cannot_be_found_is_a_one_line_error_naming_the_fix(widgets):
    with pytest.raises(UserError, match=r"cannot import module 'no_such_widgets'.*PYTHONPATH") as error:
        import_providers(["no_such_widgets"])
    assert "\n" not in str(error.value)
    with pytest.raises(ModuleNotFoundError, match="a_dependency_that_is_not_installed"):
        import_providers(["broken_widgets"])  # the module exists: its own traceback says what it lacks


def test_a_name_registered_twice_with_another_builder_is_refused():
    registry = Registry("widget")

    def first(cfg):
        return 1

    def second(cfg):
        return 2

    registry.register("round", family="a")(first)
    registry.register("round", family="a")(first)  # the same builder again (a module imported twice): fine
    registry.register("round", family="b")(second)  # another family is another name
    with pytest.raises(ValueError, match=r"widget 'round' \(family 'a'\) is registered twice, by .*first and .*second"):
        registry.register("round", family="a")(second)
    assert registry.get("round", families=("a",)) is first


def test_importing_the_registries_and_packages_leaves_torch_unimported():
    code = ("import sys, cvtrain.registry, cvtrain.models, cvtrain.tasks, cvtrain.data, cvtrain.metrics; "
            "print('torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def test_every_task_config_names_a_registered_task():
    from omegaconf import OmegaConf

    from cvtrain.config.groups import CONF_DIR

    configs = sorted((CONF_DIR / "task").glob("*.yaml"))
    assert configs
    for path in configs:
        name = OmegaConf.load(path).task.name
        assert name == path.stem and name in TASKS.names(), path
