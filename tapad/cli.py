"""The ``tapad`` command: a thin typer layer that parses options and calls into the package."""

from __future__ import annotations

from typing import Annotated

import typer

from tapad.store import DEFAULT_STORE_URL, StoreConfigError

app = typer.Typer(
    help="tapad: real-time analytics for ad clicks and impressions.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def root(
    version: Annotated[bool, typer.Option("--version", help="Print the version and exit.")] = False,
) -> None:
    """tapad: real-time analytics for ad clicks and impressions."""
    if version:
        from tapad import __version__

        typer.echo(f"tapad {__version__}")
        raise typer.Exit()


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print one clear line on stderr and return the Exit to raise."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


StoreOption = Annotated[
    str,
    typer.Option(
        "--store",
        envvar="TAPAD_STORE",
        show_envvar=True,
        help="sqlite:///path.db, redis://[user:password@]host:port/db, rediss://..., "
        "unix:///path.sock or redis+cluster://host:port,...",
    ),
]


@app.command()
def serve(
    host: Annotated[
        str, typer.Option(envvar="TAPAD_HOST", help="Address to listen on.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(envvar="TAPAD_PORT", min=0, max=65535)] = 8080,
    store: StoreOption = DEFAULT_STORE_URL,
    store_timeout: Annotated[
        float, typer.Option(min=0.05, help="Seconds before a store call counts as failed (503).")
    ] = 1.0,
    max_pending: Annotated[
        int, typer.Option(min=1, help="Events waiting for commit before POST answers 503.")
    ] = 50_000,
    shutdown_timeout: Annotated[
        float, typer.Option(min=0.0, help="Seconds to finish in-flight requests on SIGTERM.")
    ] = 10.0,
) -> None:
    """Run the HTTP server."""
    from tapad.server.run import ServeSettings, StartupError, configure_logging
    from tapad.server.run import serve as run

    configure_logging()
    settings = ServeSettings(
        host=host,
        port=port,
        store_url=store,
        store_timeout=store_timeout,
        max_pending=max_pending,
        shutdown_timeout=shutdown_timeout,
    )
    try:
        run(settings)
    except (StoreConfigError, StartupError) as exc:
        raise fail(str(exc), 2) from None
    except KeyboardInterrupt:
        pass


def main() -> None:
    app()
