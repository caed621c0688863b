"""One source for settings: the CLI, ServeSettings, the stores and the README follow the table."""

from __future__ import annotations

import dataclasses
import inspect
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.models import OptionInfo

from tapad import cli
from tapad.server.run import ServeSettings
from tapad.settings import BY_NAME, SETTINGS, default, markdown_table
from tapad.store import open_store
from tapad.store.redis.cluster import ClusterStore
from tapad.store.redis.node import RedisStore
from tapad.store.sqlite import SQLiteStore

README = Path(__file__).resolve().parents[1] / "README.md"

# store parameter -> the setting that gives its default
STORE_PARAMETERS = {"timeout": "store_timeout", "commit_deadline": "commit_deadline"}


def serve_options() -> dict[str, tuple[OptionInfo, Any]]:
    """Each ``tapad serve`` parameter: its typer option and its default."""
    hints = typing.get_type_hints(cli.serve, include_extras=True)
    options = {}
    for name, parameter in inspect.signature(cli.serve).parameters.items():
        [info] = [m for m in hints[name].__metadata__ if isinstance(m, OptionInfo)]
        options[name] = (info, parameter.default)
    return options


def test_every_serve_option_comes_from_the_table() -> None:
    options = serve_options()
    assert set(options) == set(BY_NAME)
    for setting in SETTINGS:
        info, value = options[setting.name]
        assert value == setting.default, setting.name
        assert info.help == setting.help, setting.name
        assert info.envvar == setting.env, setting.name
        assert setting.flag in (info.param_decls or (info.default,)), setting.name


def test_serve_settings_defaults_come_from_the_table() -> None:
    fields = {f.name: f.default for f in dataclasses.fields(ServeSettings)}
    for setting in SETTINGS:
        assert fields[setting.name] == setting.default, setting.name


@pytest.mark.parametrize(
    "opener", [open_store, SQLiteStore, RedisStore, ClusterStore], ids=lambda f: f.__name__
)
def test_store_defaults_come_from_the_table(opener: Callable[..., Any]) -> None:
    """A store's timeout and deadline default to the table's (given there, or None for it)."""
    parameters = inspect.signature(opener).parameters
    assert "timeout" in parameters
    for parameter, setting in STORE_PARAMETERS.items():
        if parameter in parameters:
            assert parameters[parameter].default in (None, default(setting)), (opener, parameter)


@pytest.mark.parametrize(
    "url",
    ["sqlite:///{tmp}/t.db", "redis://127.0.0.1:1/0", "redis+cluster://127.0.0.1:1"],
    ids=["sqlite", "redis", "cluster"],
)
def test_a_store_opened_without_a_timeout_uses_the_tables(url: str, tmp_path: Path) -> None:
    store = open_store(url.format(tmp=tmp_path))  # not connected: nothing is reached
    assert store._timeout == default("store_timeout")  # type: ignore[attr-defined]


def test_readme_configuration_table_matches_the_code() -> None:
    text = README.read_text()
    assert markdown_table() in text, (
        "README's configuration table differs from tapad/settings.py; "
        "regenerate it with: python -m tapad.settings"
    )


def test_serve_help_shows_the_table() -> None:
    """What a user sees: ``tapad serve --help`` names every option (wide terminal, no colour)."""
    from typer.testing import CliRunner

    result = CliRunner().invoke(cli.app, ["serve", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    for setting in SETTINGS:
        assert setting.flag in result.output
