"""The command line's forms: launch and plain, --version, grouped --help, negatable and
aliased flags, settings resolved from others, and not-yet settings (accepted only at
their default). No gateway is started: command lines are parsed with click and turned
into a config as ``smg-proxy`` does (smg.cli.config_from)."""
from __future__ import annotations

import pytest
from click.testing import CliRunner

from smg._version import __version__
from smg.cli import _expand_list_flags, config_from, launch, main
from smg.config.groups import GROUPS, OTHER, grouped
from smg.config.load import NotSupportedYet, build_config
from smg.config.schema import NOT_YET, SETTINGS
from smg.errors import ConfigError

NOT_YET_SETTINGS = [s for s in SETTINGS if s.status == NOT_YET]


def parse(*args, config_file=None):
    ctx = launch.make_context("launch", _expand_list_flags(list(args)))
    return config_from(ctx, config_file, dict(ctx.params))


def other_value(s):
    """A value of setting ``s`` other than its default."""
    if s.kind is bool:
        return True
    if s.choices:
        return next(c for c in s.choices if c != s.default)
    if s.kind is list:
        return ["x"]
    if s.kind is int:
        return 7 if s.default != 7 else 8
    if s.kind is float:
        return 0.5 if s.default != 0.5 else 0.25
    return "x"


# -- launch, plain, version, help ---------------------------------------------------------------


@pytest.mark.parametrize("args", [["--version"], ["-V"], ["launch", "--version"], ["launch", "-V"]])
def test_version(args):
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0 and r.output == f"smg-proxy {__version__}\n"


def test_launch_and_plain_take_the_same_flags():
    plain = {p.name for p in main.params}
    assert plain == {p.name for p in launch.params}
    assert {s.name for s in SETTINGS} <= plain


def test_help_lists_settings_under_their_headings():
    out = CliRunner().invoke(main, ["launch", "--help"]).output
    pos = {g.title: out.index(f"\n{g.title} (") for g in GROUPS if g.names}
    assert list(pos) == sorted(pos, key=pos.get)  # headings in the table's order
    mesh = pos["Mesh Server"]
    assert mesh < out.index("--enable-mesh") and out.index("--host ") < pos["Routing Policy"]
    assert "--remove-unhealthy-workers, --worker-auto-recovery / --no-remove-unhealthy-workers, " \
           "--no-worker-auto-recovery" in out
    assert "[not supported yet" in out[mesh:]
    plain = CliRunner().invoke(main, ["--help"]).output
    assert "Routing Policy (" in plain and "launch" in plain and "mock-worker" in plain


def test_every_setting_is_listed_under_one_heading():
    names = [n for g in GROUPS for n in g.names]
    assert len(names) == len(set(names))
    shown = [s.name for _, rows in grouped(SETTINGS) for s in rows]
    assert sorted(shown) == sorted(s.name for s in SETTINGS)
    # new rows without a heading go to OTHER, never disappear
    extra = type(SETTINGS[0])("brand_new", int, 1, "h")
    last_group, last_rows = grouped(SETTINGS + (extra,))[-1]
    assert last_group is OTHER and last_rows[-1] is extra


# -- aliases, negatable flags, resolved settings ----------------------------------------------


def test_aliases():
    cfg = parse("--sticky-key-idle-secs", "60", "--cache-match-threshold", "0.5", "--spill-abs-threshold", "9")
    assert cfg.max_idle_secs == 60 and cfg.cache_threshold == 0.5 and cfg.balance_abs_threshold == 9


@pytest.mark.parametrize("args, expected", [
    ((), False),
    (("--service-discovery",), True),                       # unset: on with a discovery source
    (("--discovery-file", "/tmp/none.json"), True),
    (("--service-discovery", "--no-remove-unhealthy-workers"), False),
    (("--service-discovery", "--no-worker-auto-recovery"), False),
    (("--remove-unhealthy-workers",), True),
    (("--worker-auto-recovery",), True),
])
def test_remove_unhealthy_workers_forms(args, expected):
    assert parse(*args).remove_unhealthy_workers is expected


def test_discovery_provider():
    assert parse("--discovery-provider", "kubernetes").service_discovery is True
    cfg = parse("--discovery-provider", "file", "--discovery-file", "/tmp/w.json")
    assert cfg.discovery_file == "/tmp/w.json" and not cfg.service_discovery
    with pytest.raises(ConfigError, match="not both"):
        parse("--service-discovery", "--discovery-provider", "kubernetes")
    with pytest.raises(ConfigError, match="needs --discovery-file"):
        parse("--discovery-provider", "file")


def test_prometheus_host_follows_an_ipv6_host_unless_given():
    # a loopback --host keeps the metrics listener on that loopback address
    assert parse("--host", "::1").prometheus_host == "::1"
    assert parse("--host", "fd00::5").prometheus_host == "::"
    assert parse("--host", "::1", "--prometheus-host", "127.0.0.1").prometheus_host == "127.0.0.1"
    assert parse("--host", "127.0.0.1").prometheus_host == "127.0.0.1"
    assert parse("--host", "10.0.0.5").prometheus_host == "0.0.0.0"


def test_no_op_flags_are_accepted():
    cfg = parse("--enable-igw", "--disable-tokenizer-autoload", "--disable-worker-overload-protection")
    assert cfg.enable_igw and cfg.disable_tokenizer_autoload and cfg.disable_worker_overload_protection


# -- not-yet settings -------------------------------------------------------------------------------


def test_not_yet_settings_are_many_and_all_have_defaults_that_load():
    assert len(NOT_YET_SETTINGS) > 50  # shrinks as features land
    build_config({})  # every one at its default


@pytest.mark.parametrize("s", NOT_YET_SETTINGS, ids=lambda s: s.name)
def test_a_not_yet_setting_changed_stops_start_up_naming_it(s):
    with pytest.raises(NotSupportedYet) as e:
        build_config({s.name: other_value(s)})
    assert e.value.key == s.flag and "not supported yet" in str(e.value)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("args, flag", [
    (("--enable-mesh",), "--enable-mesh"),
    (("--sticky-sessions",), "--routing-key-override"),
    (("--pd-disaggregation", "--prefill-selector", "role=prefill"), "--prefill-selector"),
    (("--history-backend", "oracle"), "--history-backend"),
    (("--worker-overload-protection",), "--worker-overload-protection"),
    (("--enable-wasm",), "--enable-wasm"),
])
def test_not_yet_flags_on_the_command_line(args, flag):
    with pytest.raises(NotSupportedYet) as e:
        parse(*args)
    assert e.value.key == flag


def test_not_yet_flags_at_their_default_are_accepted():
    cfg = parse("--mesh-port", "39527", "--history-backend", "memory", "--backend", "sglang",
                "--block-size", "16", "--cache-index", "tree", "--parser", "legacy")
    assert cfg.mesh_port == 39527 and cfg.history_backend == "memory"


def test_not_yet_key_in_the_yaml_file_names_the_key(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("enable-mesh: true\n")
    with pytest.raises(NotSupportedYet) as e:
        build_config({}, str(f))
    assert e.value.key == f"{f}: enable_mesh"
    f.write_text("mesh_port: 39527\nhistory_backend: memory\n")
    assert build_config({}, str(f)).mesh_port == 39527


def test_not_yet_choice_still_validated_first():
    with pytest.raises(ConfigError) as e:
        build_config({"history_backend": "sqlite"})
    assert not isinstance(e.value, NotSupportedYet) and e.value.key == "--history-backend"


def test_the_cli_prints_one_line_and_exits_2():
    r = CliRunner().invoke(main, ["launch", "--enable-mesh"])
    assert r.exit_code == 2
    assert r.output.strip().splitlines() == [
        "smg-proxy: --enable-mesh: not supported yet (Mesh Server); smg-proxy accepts it only at its "
        "default (False)"]


def test_yaml_keys_take_aliases_too(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("sticky-key-idle-secs: 60\ncache_match_threshold: 0.5\nworker-auto-recovery: true\n")
    cfg = build_config({}, str(f))
    assert cfg.max_idle_secs == 60 and cfg.cache_threshold == 0.5 and cfg.remove_unhealthy_workers is True


def test_pd_flags_as_smgs_command_line():
    cfg = parse("--pd-disaggregation", "--prefill", "http://p:8000", "9000", "--prefill", "http://q:8000", "none",
                "--prefill", "http://r:8000", "--decode", "http://d:8001", "--decode", "http://e:8001",
                "--policy", "cache_aware", "--prefill-policy", "round_robin")
    assert cfg.pd_disaggregation
    assert list(cfg.prefill) == [("http://p:8000", 9000), ("http://q:8000", None), ("http://r:8000", None)]
    assert list(cfg.decode) == ["http://d:8001", "http://e:8001"]
    assert cfg.prefill_policy == "round_robin" and cfg.decode_policy is None   # decode: --policy


@pytest.mark.parametrize("args, flag", [
    (("--prefill", "http://p:8000"), "--prefill"),                       # needs --pd-disaggregation
    (("--decode", "http://d:8000"), "--decode"),
    (("--pd-disaggregation", "--prefill", "http://p:8000", "99999"), "--prefill"),
    (("--pd-disaggregation", "--prefill", "9000"), "--prefill"),          # a port with no URL
    (("--pd-disaggregation", "--prefill", "ftp://p:8000"), "--prefill"),
])
def test_pd_flags_refused(args, flag):
    with pytest.raises(ConfigError) as e:
        parse(*args)
    assert e.value.key == flag


def test_bucket_is_a_prefill_policy_only():
    import click
    with pytest.raises(click.BadParameter):
        parse("--pd-disaggregation", "--decode-policy", "bucket")
    assert parse("--pd-disaggregation", "--prefill-policy", "bucket").prefill_policy == "bucket"
