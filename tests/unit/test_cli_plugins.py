"""The ``medsearch`` command receives ``embed``, ``nlp`` and the local stack's commands from other distributions
through entry points; a missing one says what to install."""

from __future__ import annotations

from importlib.metadata import EntryPoint, entry_points
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from medsearch.cli import ENTRY_POINT_GROUP, PLUGIN_COMMANDS, command_names, register_plugins
from medsearch.cli import common as cli_common


def _app() -> typer.Typer:
    app = typer.Typer(no_args_is_help=True)

    @app.callback()
    def _root() -> None:
        pass

    return app


def _ep(name: str, value: str) -> EntryPoint:
    return EntryPoint(name=name, value=value, group=ENTRY_POINT_GROUP)


@pytest.mark.parametrize(
    ("argv", "install"),
    [(["nlp", "analyze", "--text", "No effusion."], "medsearch-workers[report]"),
     (["embed", "a.dcm", "--json"], "medsearch-model-server"),
     (["up", "--detach"], "medsearch-dev"),
     (["status"], "medsearch-dev")],
)
def test_a_command_whose_distribution_is_missing_names_what_to_install(argv: list[str], install: str) -> None:
    app = _app()
    assert register_plugins(app, plugins=[]) == {}
    result = CliRunner().invoke(app, argv)
    assert result.exit_code == 2
    assert f"`medsearch {argv[0]}` is not installed here: install {install}" in result.stderr


def test_a_plugin_that_cannot_be_imported_is_reported_with_its_reason() -> None:
    app = _app()
    failed = register_plugins(app, plugins=[_ep("nlp", "medsearch_no_such_package.cli:register")])
    assert set(failed) == {"nlp"} and "medsearch_no_such_package" in failed["nlp"]
    result = CliRunner().invoke(app, ["nlp", "analyze"])
    assert result.exit_code == 2 and "medsearch_no_such_package" in result.stderr


def test_a_registered_plugin_replaces_the_stand_in() -> None:
    app = _app()
    assert register_plugins(app, plugins=[_ep("nlp", "medsearch_workers.cli:register")]) == {}
    result = CliRunner().invoke(app, ["nlp", "analyze", "--help"])
    assert result.exit_code == 0 and "--backend" in result.stdout


def test_every_plugin_command_is_installed_in_the_development_environment() -> None:
    """requirements-dev.txt installs every distribution: each of PLUGIN_COMMANDS comes from its entry point."""
    from medsearch.cli import app

    providers = {ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)}
    assert {ep_name for ep_name, _ in PLUGIN_COMMANDS.values()} <= providers
    assert set(PLUGIN_COMMANDS) <= command_names(app)
    result = CliRunner().invoke(app, ["--help"])
    assert "not installed" not in result.stdout


def test_local_stack_lookup_without_the_dev_tools_finds_none(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(cli_common, "entry_points", lambda **kw: [])
    assert cli_common.local_stack(tmp_path, "demo") is None


def test_local_stack_lookup_through_the_dev_tools(tmp_path: Path) -> None:
    (ep,) = entry_points(group=cli_common.LOCAL_STACK_GROUP, name="locate")
    assert ep.value == "medsearch_dev.cli:locate"
    assert cli_common.local_stack(tmp_path, "demo") is None  # nothing runs from an empty data dir
