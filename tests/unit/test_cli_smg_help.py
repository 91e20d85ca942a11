"""smg-proxy launch accepts SMG's whole command line: checked against the text of
``smg launch --help`` (the installed binary), option by option.

The help text is parsed mechanically (``parse_help``): each option's spellings, metavar
form (flag, one value, a list), choices, default and heading. Every option and alias must
be a flag of ``smg-proxy launch`` with the same kind, choices (smg may offer more, listed
below) and default (normalised: SMG's "None" is smg's unset, empty string or empty list),
listed under the same heading in ``--help``, and accepted at its default.

Run ``python -m tests.unit.test_cli_smg_help`` for a report of every difference (the
regeneration aid when SMG's command line changes). The tests skip when the binary is
absent.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass

import pytest

from smg.cli import config_from, launch
from smg.config.groups import grouped
from smg.config.schema import SETTINGS

SMG = os.path.join(os.path.dirname(__file__), "..", "..", "bench", ".venvs", "smg-rust", "bin", "smg")

#: Defaults that differ on purpose, with the reason (SMG's value as its help prints it).
DEFAULT_DIFFERS = {
    "request_id_headers": "SMG prints None and means its built-in header list, which smg spells out",
    "rate_limit_tokens_per_second": "smg's 0 and SMG's unset both mean no rate limit",
    "discovery_check_interval_secs": "SMG's unset means 30 s, smg's default is 30",
    "prometheus_host": "SMG's unset means the unspecified address of --host's family; smg's 0.0.0.0 "
                       "becomes :: for an IPv6 --host at load time (smg/config/load.py)",
}
#: Choices smg offers beyond SMG's.
EXTRA_CHOICES = {
    "log_level": {"warning", "critical"},   # Python logging's spellings too
    "policy": {"bucket"},                   # SMG offers bucket only as a prefill policy
}
#: SMG options taking one value per flag (appended, or comma-separated) that smg holds as lists.
LIST_OF_SINGLE = {
    "decode": "--decode URL, repeated",
    "model_alias": "--model-alias A=B, repeated",
    "tenant_api_key": "--tenant-api-key T:K, repeated",
    "cache_boundaries": "comma-separated positions",
    "mm_allowed_media_domains": "comma-separated hosts",
}
#: SMG's help lists these under its untitled "options" heading; smg gives them headings.
UNTITLED = {"options": {"Worker Jobs and Load Monitoring", "Multimodal"}}


@dataclass
class Opt:
    flags: tuple        # every spelling, the first is the dest's
    nargs: str          # "0" flag, "1" one value, "*" / "+" a list
    choices: tuple | None
    default: str | None  # as printed by "(default: ...)"
    group: str
    help: str

    @property
    def name(self) -> str:
        return self.flags[0][2:].replace("-", "_")


_OPTION_LINE = re.compile(r"^  (--?[A-Za-z][\w-]*)")


def parse_help(text: str) -> list:
    """The options of an argparse help text, in order, with their headings."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.rstrip() == "options:")
    group, out, cur = "options", [], None
    for line in lines[start:]:
        if line and not line.startswith(" ") and line.rstrip().endswith(":"):
            group, cur = line.rstrip()[:-1], None
            continue
        if _OPTION_LINE.match(line):
            head = line[2:].split("  ")[0]
            flags, nargs, metavar = [], "0", None
            for part in head.split(", "):
                flag, _, mv = part.partition(" ")
                flags.append(flag)
                if mv:
                    metavar = mv
                    nargs = "*" if mv.startswith("[") else "+" if mv.endswith("...]") else "1"
            choices = tuple(metavar[1:-1].split(",")) if metavar and metavar.startswith("{") else None
            cur = Opt(tuple(flags), nargs, choices, None, group, line[2 + len(head):].strip())
            out.append(cur)
        elif cur is not None and line.startswith(" " * 24):
            cur.help = f"{cur.help} {line.strip()}".strip()
    for o in out:
        o.help = re.sub(r"\s+", " ", o.help)
        found = re.findall(r"\(default: ([^()]*)\)\s*$", o.help)
        o.default = found[-1] if found else None
    return [o for o in out if o.flags[0] not in ("-h", "--help")]


def smg_help() -> str | None:
    if not os.access(SMG, os.X_OK):
        return None
    r = subprocess.run([SMG, "launch", "--help"], capture_output=True, text=True, timeout=60)
    return r.stdout if r.returncode == 0 else None


@pytest.fixture(scope="module")
def smg_options() -> list:
    text = smg_help()
    if text is None:
        pytest.skip("the Rust SMG binary is not installed (bench/.venvs/smg-rust)")
    return parse_help(text)


def our_flags() -> dict:
    """flag spelling -> the click option of ``smg-proxy launch`` that takes it."""
    out = {}
    for p in launch.params:
        for f in (*p.opts, *p.secondary_opts):
            out[f] = p
    return out


BY_NAME = {s.name: s for s in SETTINGS}
HEADING = {s.name: g.title for g, rows in grouped(SETTINGS) for s in rows}


def _same_default(smg: str | None, ours) -> bool:
    if smg in (None, "None"):
        return ours in (None, "", [])
    if smg == "[]":
        return ours == []
    if smg in ("True", "False"):
        return ours is (smg == "True")
    try:
        return float(smg) == float(ours)
    except (TypeError, ValueError):
        return smg == ours


def differences(options: list) -> list:
    """Every way ``smg-proxy launch`` departs from SMG's options (allow-lists applied)."""
    flags = our_flags()
    out = []
    for o in options:
        missing = [f for f in o.flags if f not in flags]
        if missing:
            out.append(f"{o.flags[0]}: spellings not accepted: {missing}")
            continue
        s = BY_NAME.get(flags[o.flags[0]].name)
        if s is None or s.name != o.name:
            out.append(f"{o.flags[0]}: not a setting named {o.name}")
            continue
        if o.nargs == "0":
            kind_ok = s.kind is bool
        elif o.nargs in ("*", "+"):
            kind_ok = s.kind is list
        else:
            kind_ok = s.kind is not bool and (s.kind is not list or s.name in LIST_OF_SINGLE)
        if not kind_ok:
            out.append(f"{o.flags[0]}: SMG takes nargs {o.nargs}, smg's kind is {s.kind.__name__}")
        if s.name not in DEFAULT_DIFFERS and not _same_default(o.default, s.default):
            out.append(f"{o.flags[0]}: default {s.default!r}, SMG's {o.default}")
        if o.choices is not None:
            extra = set(s.choices or ()) - set(o.choices)
            if s.choices is None or not set(o.choices) <= set(s.choices) or extra - EXTRA_CHOICES.get(s.name, set()):
                out.append(f"{o.flags[0]}: choices {s.choices}, SMG's {o.choices}")
        if HEADING[s.name] not in UNTITLED.get(o.group, {o.group}):
            out.append(f"{o.flags[0]}: listed under {HEADING[s.name]!r}, SMG's {o.group!r}")
    return out


def test_the_help_text_parses_into_every_option(smg_options):
    # SMG 1.13 has 212 options; a much smaller count means the parser lost track
    assert len(smg_options) >= 200
    assert any(o.flags == ("--cache-threshold", "--cache-match-threshold") for o in smg_options)
    policy = next(o for o in smg_options if o.flags[0] == "--policy")
    assert policy.default == "cache_aware" and "passthrough" in policy.choices


def test_every_smg_option_matches(smg_options):
    assert differences(smg_options) == []


def test_the_allow_lists_name_real_smg_options(smg_options):
    names = {o.name for o in smg_options}
    assert set(DEFAULT_DIFFERS) | set(EXTRA_CHOICES) | set(LIST_OF_SINGLE) <= names


def _args_at_default(o: Opt) -> list:
    """A command line giving option ``o`` its SMG default explicitly (empty when the
    default cannot be written: unset values, a flag left off)."""
    if o.default in (None, "None", "[]", "False"):
        return []
    if o.default == "True":
        return [o.flags[0]]
    return [o.flags[0], o.default]


def test_every_smg_option_given_at_its_default_starts(smg_options):
    """All of SMG's options at once, each given its default: parses, and no setting
    refuses it (a not-yet setting at its default is accepted)."""
    args = [a for o in smg_options if o.name not in DEFAULT_DIFFERS for a in _args_at_default(o)]
    assert len(args) > 150
    ctx = launch.make_context("launch", args)
    cfg = config_from(ctx, None, dict(ctx.params))
    assert cfg.mesh_port == 39527 and cfg.history_backend == "memory" and cfg.max_idle_secs == 14400


def test_every_alias_sets_its_setting(smg_options):
    for o in smg_options:
        s = BY_NAME[o.name]
        for alias in o.flags[1:]:
            if alias.startswith("--no-") or s.kind is bool:
                continue
            value = (s.choices[-1] if s.choices else "7")
            ctx = launch.make_context("launch", [alias, value])
            assert ctx.params[s.name] in (value, 7, 7.0), alias


def main() -> int:
    text = smg_help()
    if text is None:
        print("smg binary not found at", SMG)
        return 1
    options = parse_help(text)
    diffs = differences(options)
    print(f"{len(options)} SMG options, {sum(len(o.flags) for o in options)} spellings")
    print("\n".join(diffs) if diffs else "no differences")
    return 1 if diffs else 0


if __name__ == "__main__":
    sys.exit(main())
