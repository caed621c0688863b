"""One source for settings: the CLI, ServeSettings, the stores and the README follow the table."""

from __future__ import annotations

import dataclasses
import inspect
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.models import OptionInfo
from typer.testing import CliRunner

from tapad import cli
from tapad.server.config import ServeSettings
from tapad.settings import BY_NAME, SETTINGS, default, markdown_table
from tapad.store import StoreOptions, open_store
from tapad.store.redis.cluster import ClusterStore
from tapad.store.redis.node import RedisStore
from tapad.store.sqlite import SQLiteStore

README = Path(__file__).resolve().parents[1] / "README.md"

# StoreOptions field -> the setting (and ServeSettings field) that gives it
STORE_OPTIONS = {
    "timeout": "store_timeout",
    "commit_deadline": "commit_deadline",
    "shards": "shards",
    "unique": "unique",
    "retention_hours": "retention_hours",
    "dedup_hours": "dedup_hours",
    "allow_eviction": "allow_eviction",
    "exact_uniques_limit": "exact_uniques_limit",
}
NOT_SETTINGS = {"check_every"}  # StoreOptions fields the server sets itself (ServeSettings)


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


def test_serve_hands_on_the_options_as_one_mapping_of_plain_values() -> None:
    seen: dict[str, Any] = {}

    def command(**options: Any) -> None:
        seen.update(options)

    single = typer.Typer()
    single.command()(cli.options_from_table(command))
    result = CliRunner().invoke(single, ["--unique", "HLL", "--port", "9", "--shards", "3"])
    assert result.exit_code == 0, result.output
    expected = {s.name: s.default for s in SETTINGS} | {"unique": "hll", "port": 9, "shards": 3}
    assert seen == expected
    assert type(seen["unique"]) is str  # not the Enum typer offers the words with
    ServeSettings(**seen)  # every option has its field


def test_store_options_default_to_the_table() -> None:
    fields = {f.name: f.default for f in dataclasses.fields(StoreOptions)}
    assert set(fields) == set(STORE_OPTIONS) | NOT_SETTINGS
    for field, setting in STORE_OPTIONS.items():
        assert fields[field] == default(setting), field


def test_serve_settings_hand_every_store_option_on() -> None:
    settings = ServeSettings(
        store_timeout=1.5,
        commit_deadline=7.0,
        shards=3,
        unique="hll",
        retention_hours=9,
        dedup_hours=5,
        allow_eviction=True,
        exact_uniques_limit=11,
        store_check_every=2.0,
    )
    options = settings.store_options()
    assert options == StoreOptions(timeout=1.5, commit_deadline=7.0, shards=3, unique="hll",
                                   retention_hours=9, dedup_hours=5, allow_eviction=True,
                                   exact_uniques_limit=11, check_every=2.0)  # fmt: skip


@pytest.mark.parametrize(
    "opener", [open_store, SQLiteStore, RedisStore, ClusterStore], ids=lambda f: f.__name__
)
def test_stores_take_one_options_object(opener: Callable[..., Any]) -> None:
    """No store parameter has a default of its own: they come in one StoreOptions."""
    parameters = inspect.signature(opener).parameters
    assert parameters["options"].default == StoreOptions()
    assert not set(parameters) & {"timeout", "commit_deadline", *STORE_OPTIONS}


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
    result = CliRunner().invoke(cli.app, ["serve", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    for setting in SETTINGS:
        assert setting.flag in result.output
