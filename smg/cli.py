"""smg-proxy: the command line.

``smg-proxy launch [FLAGS]`` and plain ``smg-proxy [FLAGS]`` run the gateway (the same
flags, the same behaviour). With no worker source at all (no ``--worker-urls``,
``--discovery-file`` or ``--service-discovery``, on the command line or in ``--config``)
it starts two built-in mock workers and routes to them (demo mode); with any source, it
never does. ``smg-proxy mock-worker --port N`` runs one mock worker; ``--version``/``-V``
prints the version.

Flags are generated from smg/config/schema.py, one per setting (plus its aliases and,
for negatable booleans, the ``--no-`` forms); ``--help`` lists them under the headings
of smg/config/groups.py. List flags accept ``--worker-urls http://a http://b`` as well as
repeating the flag. A setting smg accepts only at its default (status NOT_YET) given
another value ends start-up with one line on stderr and exit status 2.
"""
from __future__ import annotations

import asyncio
import logging
import signal
import sys

import click
from click.core import ParameterSource

from smg._version import __version__
from smg.config.groups import grouped
from smg.config.load import NotSupportedYet, build_config
from smg.config.schema import NOT_YET, SETTINGS, GatewayConfig
from smg.errors import ConfigError

_LIST_FLAGS = {f for s in SETTINGS if s.kind is list for f in (s.flag, *s.aliases)}
_SETTING_NAMES = frozenset(s.name for s in SETTINGS)
_CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def _expand_list_flags(args: list) -> list:
    """``--worker-urls a b --port 1`` → ``--worker-urls a --worker-urls b --port 1``."""
    out: list = []
    i = 0
    while i < len(args):
        a = args[i]
        flag, eq, val = a.partition("=")
        if flag in _LIST_FLAGS:
            values = [val] if eq else []
            i += 1
            while i < len(args) and not args[i].startswith("-") and not eq:
                values.append(args[i])
                i += 1
            for v in values:
                out += [flag, v]
            continue
        out.append(a)
        i += 1
    return out


class _GroupedHelp:
    """``--help`` with the settings under their headings (smg/config/groups.py), the
    command's own options (``--config``, ``--version``, ``--help``) first."""

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        params = self.get_params(ctx)
        by_name = {p.name: p for p in params}
        own = [r for p in params if p.name not in _SETTING_NAMES if (r := p.get_help_record(ctx))]
        with formatter.section("Options"):
            formatter.write_dl(own)
        for group, settings in grouped(SETTINGS):
            rows = [r for s in settings if (p := by_name.get(s.name)) is not None
                    if (r := p.get_help_record(ctx))]
            if rows:
                with formatter.section(f"{group.title} ({group.about})"):
                    formatter.write_dl(rows)
        if isinstance(self, click.Group):
            self.format_commands(ctx, formatter)


class _Group(_GroupedHelp, click.Group):
    def parse_args(self, ctx, args):
        return super().parse_args(ctx, _expand_list_flags(list(args)))


class _Launch(_GroupedHelp, click.Command):
    pass


def _option(s) -> click.Option:
    kw = {"help": s.help + (" [not supported yet: accepted only at its default]"
                            if s.status == NOT_YET else ""), "show_default": True}
    decls = [s.flag, *s.aliases]
    if s.kind is list:
        kw.update(multiple=True, default=None, show_default=False, type=float if s.item is float else str)
    elif s.kind is bool:
        if s.negatable:
            decls = [f"{f}/--no-{f[2:]}" for f in decls]
        else:
            kw.update(is_flag=True)
        kw.update(default=s.default, show_default=s.default is not None)
    else:
        kw.update(type=s.kind if s.choices is None else click.Choice(s.choices), default=s.default)
    return click.Option(decls + [s.name], **kw)


def _options(fn):
    """The shared options of ``smg-proxy`` and ``smg-proxy launch``."""
    params = fn.__dict__.setdefault("__click_params__", [])
    params.extend(_option(s) for s in reversed(SETTINGS))  # click reverses the list back
    fn = click.option("--config", "config_file", type=click.Path(dir_okay=False), default=None,
                      help="YAML file whose keys mirror the flags (flags given on the command line win).")(fn)
    return click.version_option(__version__, "-V", "--version", prog_name="smg-proxy",
                                message="%(prog)s %(version)s")(fn)


def given_flags(ctx: click.Context, values: dict) -> dict:
    """{setting name: value} of the flags the user gave (they win over the YAML file)."""
    given = {}
    for name, value in values.items():
        if ctx.get_parameter_source(name) in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT):
            given[name] = list(value) if isinstance(value, tuple) else value
    return given


def config_from(ctx: click.Context, config_file: str | None, values: dict) -> GatewayConfig:
    """The config of a parsed command line: only flags the user gave override the YAML
    file and the defaults.

    Raises:
        ConfigError: (NotSupportedYet included) naming the flag or key at fault.
    """
    return build_config(given_flags(ctx, values), config_file)


def _launch(ctx: click.Context, config_file: str | None, values: dict) -> None:
    given = given_flags(ctx, values)
    try:
        cfg = build_config(given, config_file)
    except NotSupportedYet as e:  # one line, no usage text: the flag is right, smg lacks the feature
        click.echo(f"smg-proxy: {e}", err=True)
        sys.exit(2)
    except ConfigError as e:
        raise click.UsageError(str(e)) from None
    sys.exit(run(cfg, given, config_file))


@click.group(cls=_Group, invoke_without_command=True, context_settings=_CONTEXT)
@_options
@click.pass_context
def main(ctx: click.Context, config_file: str | None, **values) -> None:
    """smg-proxy: a high-performance LLM inference gateway.

    Run it with ``smg-proxy launch [FLAGS]`` (or ``smg-proxy [FLAGS]``)."""
    if ctx.invoked_subcommand is not None:
        return
    _launch(ctx, config_file, values)


@main.command("launch", cls=_Launch, context_settings=_CONTEXT)
@_options
@click.pass_context
def launch(ctx: click.Context, config_file: str | None, **values) -> None:
    """Run the gateway (the same as smg-proxy with these flags)."""
    _launch(ctx, config_file, values)


def has_worker_source(cfg: GatewayConfig) -> bool:
    """True when workers are configured: URLs, a discovery file or Kubernetes discovery
    (the Workers API alone is not a source: demo mode is for a bare ``smg-proxy``)."""
    return bool(cfg.worker_urls or cfg.discovery_file or cfg.service_discovery)


def run(cfg: GatewayConfig, given: dict | None = None, config_file: str | None = None) -> int:
    """Runs the gateway on uvloop until SIGTERM/SIGINT; returns the exit status. SIGHUP
    re-reads ``config_file`` (with the flags ``given`` winning again) and applies it."""
    import uvloop

    return uvloop.run(_serve(cfg, given or {}, config_file))


def _reload(gw, given: dict, config_file: str | None, demo_urls: list) -> bool:
    """SIGHUP: the configuration re-read and applied (smg/server/reload.py), or refused
    with one log line and the running configuration kept. Without ``--config`` only the
    TLS certificate is re-read."""
    from smg.server.reload import ReloadRefused

    log = logging.getLogger("smg.gateway")
    if config_file is None:
        if gw.tls is None:
            log.info("SIGHUP: no --config file to re-read and no TLS certificate; nothing to reload")
            return False
        return gw.reload_tls()
    try:
        new = build_config(given, config_file)
        if demo_urls and not has_worker_source(new):
            new = new.replace(worker_urls=demo_urls)
        changes = gw.reconfigure(new)
    except (ConfigError, ReloadRefused) as e:
        log.error("configuration reload refused, the running configuration stays: %s", e)
        return False
    log.info("configuration reloaded from %s: %s", config_file,
             ", ".join(changes) + " changed" if changes else "no setting changed")
    return True


async def _serve(cfg: GatewayConfig, given: dict, config_file: str | None) -> int:
    from smg.observability.logs import AccessLog, HandlerStream, setup_logging
    from smg.server import systemd
    from smg.server.app import Gateway
    from smg.server.service import Service

    handler = setup_logging(cfg.log_level, cfg.log_json, cfg.log_dir)
    access = AccessLog(HandlerStream(handler), cfg.log_json) \
        if logging.getLogger().isEnabledFor(logging.INFO) else None
    tracing = None
    if cfg.enable_trace:
        from smg.observability.tracing import Tracing

        try:
            tracing = Tracing(cfg.otlp_traces_endpoint)
        except ConfigError as e:
            click.echo(f"smg-proxy: {e}", err=True)
            return 2

    notifier = systemd.Notifier.from_env()
    try:
        sockets = systemd.listen_sockets()  # socket activation (LISTEN_FDS)
    except ConfigError as e:
        click.echo(f"smg-proxy: {e}", err=True)
        return 2
    mocks = []
    if not has_worker_source(cfg):
        from smg.testing.mock_worker import MockConfig, MockWorker

        for i in range(2):
            m = MockWorker(MockConfig(worker_id=f"mock-{i + 1}"))
            await m.start("127.0.0.1", 0)
            mocks.append(m)
        cfg = cfg.replace(worker_urls=[m.url for m in mocks])
    try:
        gw = Gateway(cfg, access_log=access, tracing=tracing, sockets=sockets)
    except ConfigError as e:  # TLS material that does not load
        click.echo(f"smg-proxy: {e}", err=True)
        for m in mocks:
            await m.stop()
        return 2
    host = "127.0.0.1" if cfg.host in ("0.0.0.0", "::", "") else cfg.host
    scheme = "https" if gw.tls is not None else "http"
    service = Service(notifier, lambda: f"listening on {scheme}://{host}:{gw.port}", gw.registry.ready_count)
    demo_urls = list(cfg.worker_urls) if mocks else []
    gw.on_sighup = lambda: service.reload(lambda: _reload(gw, given, config_file, demo_urls))
    try:
        await gw.start()
    except ConfigError as e:  # a worker URL naming a listener of its own; a start-up tokenizer not loading
        click.echo(f"smg-proxy: {e}", err=True)
        await gw.workers.stop()
        return 2
    except OSError as e:  # the message names the listener and address (smg/server/app.py _bind)
        click.echo(f"smg-proxy: {e.strerror or e}", err=True)
        return 1
    for name, sock in sockets.items():
        if (name == "metrics" and gw.metrics_server is None) or (name == "control" and gw.control_server is None):
            click.echo(f"WARNING: the socket passed for the {name} listener is not used "
                       f"(that listener is off)", err=True)
            sock.close()
    click.echo(f"smg-proxy listening on {scheme}://{host}:{gw.port} with policy {cfg.policy}", err=True)
    exposed, posture = gw.security_posture()  # what is open to anyone who reaches the port
    click.echo(("WARNING: " if exposed else "") + posture, err=True)
    if gw.metrics_server is not None:
        click.echo(f"metrics on http://{host if cfg.prometheus_host in ('0.0.0.0', '::', '') else cfg.prometheus_host}"
                   f":{gw.metrics_port}/metrics", err=True)
    if mocks:
        click.echo("demo mode: routing to 2 built-in mock workers (" + ", ".join(m.url for m in mocks)
                   + "); give --worker-urls, --discovery-file or --service-discovery to use real ones",
                   err=True)
        click.echo(f"try:\n  curl {scheme}://{host}:{gw.port}/v1/chat/completions -H 'content-type: application/json' "
                   "-d '{\"model\": \"mock-model\", \"messages\": [{\"role\": \"user\", \"content\": \"Hello!\"}]}'",
                   err=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    ready = asyncio.ensure_future(service.started(cfg.systemd_wait_for_worker))  # READY=1, watchdog
    await stop.wait()
    ready.cancel()
    logging.getLogger("smg.gateway").info("shutting down (grace %.0f s)", cfg.shutdown_grace_period_secs)
    service.stopping(gw.inflight())
    await gw.shutdown(cfg.shutdown_grace_period_secs)
    service.close()
    for m in mocks:
        await m.stop()
    return 0


def _attach_mock_worker() -> None:
    try:
        from smg.testing.mock_worker import mock_worker_command
    except ImportError:  # pragma: no cover - the harness ships with the package
        return
    main.add_command(mock_worker_command, "mock-worker")


_attach_mock_worker()
