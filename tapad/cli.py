"""The ``tapad`` command: a thin typer layer that parses options and calls into the package."""

from __future__ import annotations

import functools
import inspect
import sys
from collections.abc import Callable
from enum import Enum, StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from tapad.loadgen.verify import HLL_TOLERANCE
from tapad.settings import BY_NAME, SETTINGS, Setting, default
from tapad.store import StoreConfigError

# Every Typer app of the command: -h as well as --help, and help printed as written (rich
# markup would take "[user:password@]" for a style tag and drop it; its panels print a
# "<bool>" type beside every flag).
APP_SETTINGS: dict[str, Any] = {
    "context_settings": {"help_option_names": ["-h", "--help"]},
    "rich_markup_mode": None,
}

app = typer.Typer(
    help="tapad: real-time analytics for ad clicks and impressions.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    **APP_SETTINGS,
)


def print_version(value: bool) -> None:
    if value:
        from tapad import __version__

        typer.echo(f"tapad {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=print_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """tapad: real-time analytics for ad clicks and impressions."""


USER_ERROR = 2  # every error a user can cause, as typer's own usage errors


def fail(message: str, code: int = USER_ERROR) -> typer.Exit:
    """Print one clear line on stderr and return the Exit to raise."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


StoreOption = Annotated[
    str,
    typer.Option(
        "--store",
        metavar="URL",
        envvar=BY_NAME["store_url"].env,
        show_envvar=True,
        help=BY_NAME["store_url"].help,
    ),
]


def serve_parameter(setting: Setting) -> inspect.Parameter:
    """The keyword parameter, annotated with its typer option, of one setting of the table."""
    words: Any = StrEnum  # the functional API, with a name known only at run time
    kind = (  # typer offers a fixed set of words as an Enum's values
        words(setting.name, {w: w for w in setting.choices})
        if setting.choices
        else setting.value_type
    )
    option = typer.Option(
        setting.flag,
        metavar=setting.metavar,
        envvar=setting.env,
        show_envvar=setting.env is not None,
        help=setting.help,
        min=setting.min,
        max=setting.max,
        case_sensitive=False,
    )
    return inspect.Parameter(
        setting.name,
        inspect.Parameter.KEYWORD_ONLY,
        default=setting.default,
        annotation=Annotated[kind if setting.default is not None else kind | None, option],
    )


def options_from_table(command: Callable[..., None]) -> Callable[..., None]:
    """``command(**options)`` with one typer option per setting of the table (typer reads a
    command's options from its signature); a word from ``choices`` arrives as a plain str."""

    @functools.wraps(command)
    def with_options(**options: Any) -> None:
        command(**{k: v.value if isinstance(v, Enum) else v for k, v in options.items()})

    parameters = [serve_parameter(setting) for setting in SETTINGS]
    with_options.__signature__ = inspect.Signature(parameters, return_annotation=None)  # type: ignore[attr-defined]
    with_options.__annotations__ = {p.name: p.annotation for p in parameters} | {"return": None}
    return with_options


@app.command()
@options_from_table
def serve(**options: Any) -> None:
    """Run the HTTP server."""
    from tapad.server.auth import Tokens
    from tapad.server.config import ServeSettings, StartupError
    from tapad.server.cors import BadOrigins, parse_origins
    from tapad.server.logs import configure_logging
    from tapad.server.workers import serve as run

    if options["cors_origins"] is not None:
        try:
            parse_origins(options["cors_origins"])  # refused here in one line, not in each worker
        except BadOrigins as exc:
            raise fail(str(exc), 2) from None
    try:
        Tokens.configured(options["write_token"], options["read_token"])  # malformed: exit 2
    except ValueError as exc:
        raise fail(str(exc), 2) from None
    configure_logging()
    settings = ServeSettings(**options)
    try:
        run(settings)
    except (StoreConfigError, StartupError) as exc:
        raise fail(str(exc)) from None
    except KeyboardInterrupt:
        pass


# -- load tools: usernames, loadgen, tally ---------------------------------------

usernames_app = typer.Typer(
    help="User names for load tests: fetch them from the web or generate them offline.",
    no_args_is_help=True,
    **APP_SETTINGS,
)
app.add_typer(usernames_app, name="usernames")


@usernames_app.command("fetch")
def usernames_fetch(
    url: Annotated[
        str,
        typer.Option(
            metavar="URL", help="Source: randomuser.me JSON or plain text, one name a line."
        ),
    ] = "https://randomuser.me/api/?results=100&inc=login",
    count: Annotated[
        int, typer.Option(min=1, metavar="N", help="Distinct names the --out file holds.")
    ] = 1000,
    threads: Annotated[
        int, typer.Option(min=1, max=256, metavar="N", help="Requests in parallel.")
    ] = 8,
    out: Annotated[
        Path, typer.Option(metavar="FILE", help="Names file, merged with what it already holds.")
    ] = Path("usernames.txt"),
    timeout: Annotated[
        float, typer.Option(min=0.01, metavar="SECONDS", help="Seconds per request.")
    ] = 10.0,
    max_failures: Annotated[
        int, typer.Option(min=1, metavar="N", help="Failed requests in a row before giving up.")
    ] = 20,
) -> None:
    """Download distinct user names with a pool of threads into a text file."""
    from tapad.usernames.command import UsernamesError, run_fetch

    try:
        typer.echo(run_fetch(url, count, threads, out, timeout, max_failures))
    except UsernamesError as exc:
        raise fail(str(exc)) from None


@usernames_app.command("generate")
def usernames_generate(
    count: Annotated[int, typer.Option(min=1, metavar="N", help="Distinct names to make.")] = 1000,
    seed: Annotated[int, typer.Option(metavar="N", help="Same seed, same names.")] = 0,
    out: Annotated[
        Path, typer.Option(metavar="FILE", help="Names file to write ('-' for standard output).")
    ] = Path("usernames.txt"),
) -> None:
    """Make realistic user names offline, the same ones for the same seed."""
    from tapad.usernames.command import UsernamesError, run_generate

    try:
        line = run_generate(count, seed, out)
    except UsernamesError as exc:
        raise fail(str(exc)) from None
    if line:
        typer.echo(line)


loadgen_app = typer.Typer(
    help="Send POST or GET load with the 95/5 current/past-hour mix and report on it.",
    no_args_is_help=True,
    **APP_SETTINGS,
)
app.add_typer(loadgen_app, name="loadgen")

UrlOption = Annotated[
    str, typer.Option(metavar="URL", help="The tapad server (…/analytics is added).")
]
RequestsOption = Annotated[
    int, typer.Option("-n", "--requests", min=1, metavar="N", help="Requests to send.")
]
ConcurrencyOption = Annotated[
    int,
    typer.Option(
        "-c", "--concurrency", min=1, max=4096, metavar="N", help="Connections in parallel."
    ),
]
OldRatioOption = Annotated[
    float, typer.Option(min=0.0, max=1.0, metavar="RATIO", help="Share of requests for past hours.")
]
OldHoursOption = Annotated[
    int, typer.Option(min=0, metavar="HOURS", help="How many hours back past requests go.")
]
RateOption = Annotated[
    float | None,
    typer.Option(
        min=0.1, metavar="PER_SECOND", help="Target requests per second (default: flat out)."
    ),
]
RetriesOption = Annotated[
    int,
    typer.Option(min=0, metavar="N", help="Retries of a 503 or connection error, with backoff."),
]
TimeoutOption = Annotated[
    float, typer.Option(min=0.01, metavar="SECONDS", help="Seconds per attempt.")
]
SeedOption = Annotated[
    int | None, typer.Option(metavar="N", help="Seed for a repeatable traffic mix.")
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")]
TokenOption = Annotated[
    str | None,
    typer.Option(
        help="Token to send as 'Authorization: Bearer' (the server's write token for post, "
        "read token for get)."
    ),
]
ProcessesOption = Annotated[
    int,
    typer.Option(
        min=1,
        max=64,
        metavar="N",
        help="Processes sharing the work, when one Python process is the limit.",
    ),
]


def _load(run: Callable[..., int], *args: Any) -> None:
    from tapad.loadgen.command import LoadgenError

    try:
        code = run(*args)
    except LoadgenError as exc:
        raise fail(str(exc)) from None
    raise typer.Exit(code)


@loadgen_app.command("post")
def loadgen_post(
    url: UrlOption = "http://127.0.0.1:8080",
    requests: RequestsOption = 10_000,
    concurrency: ConcurrencyOption = 32,
    old_ratio: OldRatioOption = 0.05,
    old_hours: OldHoursOption = 24,
    click_ratio: Annotated[
        float,
        typer.Option(
            min=0.0,
            max=1.0,
            metavar="RATIO",
            help="Share of events that are clicks (2%: a real CTR).",
        ),
    ] = 0.02,
    users: Annotated[
        Path | None,
        typer.Option(metavar="FILE", help="Names file, one a line (default: 10,000 generated)."),
    ] = None,
    rate: RateOption = None,
    ledger: Annotated[
        Path | None,
        typer.Option(metavar="FILE", help="JSON ledger to add the acknowledged events to."),
    ] = None,
    retries: RetriesOption = 5,
    timeout: TimeoutOption = 10.0,
    seed: SeedOption = None,
    as_json: JsonOption = False,
    processes: ProcessesOption = 1,
    batch: Annotated[
        int,
        typer.Option(
            help="Events per request, sent as NDJSON to /analytics/batch (-n then counts "
            "batches); 0: one POST per event.",
        ),
    ] = 0,
    ids: Annotated[
        bool,
        typer.Option(
            "--ids",
            help="Give every event an id and retry every 503, 504, timeout and broken "
            "connection with it until acknowledged: each event counted exactly once.",
        ),
    ] = False,
    retry_for: Annotated[
        float,
        typer.Option(min=0.0, help="With --ids: seconds an event is retried, from its first send."),
    ] = 300.0,
    token: TokenOption = None,
) -> None:
    """Send POSTs and record what the server acknowledged in a ledger."""
    from tapad.loadgen.command import LoadOptions, run_post
    from tapad.loadgen.traffic import Mix

    options = LoadOptions(
        url, requests, concurrency, Mix(old_ratio, old_hours, click_ratio), rate, retries,
        timeout, seed, as_json, processes, batch, ids, retry_for, token=token,
    )  # fmt: skip
    _load(run_post, options, users, ledger)


@loadgen_app.command("get")
def loadgen_get(
    url: UrlOption = "http://127.0.0.1:8080",
    requests: RequestsOption = 10_000,
    concurrency: ConcurrencyOption = 32,
    old_ratio: OldRatioOption = 0.05,
    old_hours: OldHoursOption = 24,
    rate: RateOption = None,
    verify: Annotated[
        Path | None,
        typer.Option(metavar="FILE", help="Ledger every answer must be at least equal to."),
    ] = None,
    hll: Annotated[
        bool,
        typer.Option(
            "--hll",
            help=f"The server's unique users are approximate: allow {HLL_TOLERANCE:.0%}.",
        ),
    ] = False,
    retries: RetriesOption = 5,
    timeout: TimeoutOption = 10.0,
    seed: SeedOption = None,
    as_json: JsonOption = False,
    processes: ProcessesOption = 1,
    token: TokenOption = None,
) -> None:
    """Send GETs with the same mix; with --verify, check answers against a ledger."""
    from tapad.loadgen.command import LoadOptions, run_get
    from tapad.loadgen.traffic import Mix

    options = LoadOptions(
        url, requests, concurrency, Mix(old_ratio, old_hours), rate, retries, timeout, seed,
        as_json, processes, token=token,
    )  # fmt: skip
    _load(run_get, options, verify, hll)


@app.command()
def tally(
    store: StoreOption = default("store_url"),
    hour: Annotated[
        str | None,
        typer.Option(
            metavar="HOUR", help="YYYY-MM-DDTHH (UTC), 'now' or epoch ms (default: every hour)."
        ),
    ] = None,
    ledger: Annotated[
        Path | None,
        typer.Option(metavar="FILE", help="Ledger from loadgen post to check the store against."),
    ] = None,
    as_json: JsonOption = False,
    exact: Annotated[
        bool,
        typer.Option(
            "--exact",
            help="With --ledger: the store must hold exactly the ledger's events, as when "
            "nothing else writes to it.",
        ),
    ] = False,
) -> None:
    """Read the store directly: users, clicks and impressions per hour; check a ledger.

    With --ledger, each hour of the store must hold at least what the ledger acknowledged
    (clicks, impressions, unique users). When the store holds exactly the ledger's events
    (give or take those of unknown outcome) it is said to agree; when it holds more (other
    writers: the quick start's events, an earlier run) one line says so and the "at least"
    check decides, unless --exact.

    Exit 1 when the store lacks something the ledger acknowledged (or, with --exact, holds
    more): a finding about the store, not a mistake in the command. Exit 2: a user error
    (bad option, no such store or ledger).
    """
    from tapad.commands.tally import TallyError, run_tally

    try:
        code = run_tally(store, hour, ledger, as_json, exact)
    except TallyError as exc:
        raise fail(str(exc)) from None
    raise typer.Exit(code)


class ExportFormat(StrEnum):
    csv = "csv"
    json = "json"


class ExportBy(StrEnum):
    hour = "hour"
    day = "day"


@app.command()
def export(
    store: StoreOption = default("store_url"),
    from_hour: Annotated[
        str | None,
        typer.Option(
            "--from",
            metavar="HOUR",
            help="First hour: YYYY-MM-DDTHH (UTC), 'now' or epoch ms "
            "(default: the oldest hour with data).",
        ),
    ] = None,
    to_hour: Annotated[
        str | None,
        typer.Option(
            "--to", metavar="HOUR", help="Last hour, included (default: the current hour)."
        ),
    ] = None,
    fmt: Annotated[
        ExportFormat | None,
        typer.Option(
            "--format",
            metavar="csv|json",
            case_sensitive=False,
            help="csv or json, as GET /analytics/hours (default: from --out's extension "
            "when it is .csv or .json, else csv).",
        ),
    ] = None,
    out: Annotated[
        Path | None, typer.Option(metavar="FILE", help="File to write (default: standard output).")
    ] = None,
    by: Annotated[
        ExportBy,
        typer.Option(
            "--by",
            case_sensitive=False,
            help="hour: a row per hour; day: a row per UTC day (the range widened to whole "
            "days), with the day's distinct users.",
        ),
    ] = ExportBy.hour,
) -> None:
    """Read the store directly and write every hour of a range, as GET /analytics/hours does."""
    from tapad.commands.export import ExportError, run_export

    try:
        summary = run_export(store, from_hour, to_hour, fmt.value if fmt else None, out, by.value)
    except ExportError as exc:
        raise fail(str(exc)) from None
    typer.echo(summary, err=True)


@app.command()
def delete(
    from_hour: Annotated[
        str,
        typer.Option(
            "--from", help="First hour to remove: YYYY-MM-DDTHH (UTC), 'now' or epoch ms."
        ),
    ],
    to_hour: Annotated[str, typer.Option("--to", help="Last hour to remove, included.")],
    store: Annotated[  # no default: data is never removed from a store nobody named
        str,
        typer.Option(
            "--store", envvar=BY_NAME["store_url"].env, show_envvar=True, help="The store."
        ),
    ],
    yes: Annotated[
        bool, typer.Option("--yes", help="Do not ask first (needed with no terminal to ask on).")
    ] = False,
) -> None:
    """Remove every count, user and id of a range of hours (bad data, a test run)."""
    from tapad.commands.delete import Declined, DeleteError, run_delete

    try:
        lines = run_delete(store, from_hour, to_hour, yes)
    except DeleteError as exc:
        raise fail(str(exc), 2) from None
    except Declined as exc:
        raise fail(str(exc), 1) from None
    for line in lines:
        typer.echo(line)


USAGE_ERROR = USER_ERROR  # the exit code typer gives a usage mistake


def _command_path(exc: typer.TyperException) -> str:
    """``tapad loadgen post`` for an error there; usage errors carry their context."""
    context = getattr(exc, "ctx", None)
    path = getattr(context, "command_path", None)
    return path if isinstance(path, str) else "tapad"


def main() -> None:
    """Run the CLI; a usage mistake (bad option value, unknown option) is one line, exit 2."""
    try:
        code = app(standalone_mode=False)
    except typer.TyperException as exc:  # typer's public base of its usage and option errors
        message = exc.format_message().strip()
        if exc.exit_code == USAGE_ERROR:
            if message:  # empty when there were no arguments at all and the help was shown
                typer.echo(f"error: {message} (see: {_command_path(exc)} --help)", err=True)
        else:
            typer.echo(f"error: {message}", err=True)
        sys.exit(exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        typer.echo("interrupted", err=True)
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    sys.exit(code if isinstance(code, int) else 0)
