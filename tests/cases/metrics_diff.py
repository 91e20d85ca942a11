"""Differences between two Prometheus text expositions: family names, types, help
texts, label names and label values.

Used by the metrics conformance tests (tests/integration/test_metrics_*.py) to compare
smg's ``/metrics`` with a reference exposition after the same traffic, and importable by
any other suite:

    from tests.cases.metrics_diff import diff, apply_allow_list
    diffs = diff(ours_text, reference_text, normalize=url_map({...}))
    unexplained, unused = apply_allow_list(diffs, ALLOW)

Rules:
- A family is named as it is exposed: counters with their ``_total`` suffix, histograms
  by their base name (their ``le`` label is compared like any other label, as the
  strings written, so ``5`` and ``5.0`` differ).
- Label names are known only from samples: they are compared when both sides have
  some. Label values are compared as sets per label and family. With ``skip_zero`` (the
  default) a counter sample of 0, and every sample of a histogram series whose count is
  0, contribute no label values: a series created ahead of traffic at zero reads the
  same to PromQL as an absent one. Gauges always contribute (a 0 gauge is a reading).
- ``normalize(family, label, value)`` maps a value before comparison (worker URLs on
  different ports, say); returning None drops it.
- Differences come back sorted, each a ``Difference`` whose ``str()`` reads as one line.
"""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from typing import Callable, Iterable

from prometheus_client.parser import text_string_to_metric_families

# kinds of difference, in report order
MISSING = "missing"          # in the reference, not in ours
EXTRA = "extra"              # in ours, not in the reference
TYPE = "type"                # different metric types
HELP = "help"                # different help texts
LABEL_NAMES = "label_names"  # different label names
LABEL_VALUES = "label_values"  # different value sets of one label
KINDS = (MISSING, EXTRA, TYPE, HELP, LABEL_NAMES, LABEL_VALUES)

_SUFFIXES = {"histogram": ("_bucket", "_count", "_sum", "_created"),
             "summary": ("_count", "_sum", "_created"),
             "counter": ("_total", "_created")}


@dataclass
class Family:
    """One parsed family: ``values`` maps each label name to the set of its values."""

    name: str
    type: str
    help: str
    label_names: frozenset = frozenset()
    values: dict = field(default_factory=dict)


@dataclass(frozen=True, order=True)
class Difference:
    family: str
    kind: str
    label: str = ""
    ours: tuple = ()        # what only ours has (values), or our type/help/label names
    reference: tuple = ()   # what only the reference has, or its type/help/label names

    def __str__(self) -> str:
        if self.kind in (MISSING, EXTRA):
            return f"{self.family}: {self.kind}"
        where = f" {self.label!r}" if self.label else ""
        return f"{self.family}: {self.kind}{where}: ours {list(self.ours)} vs reference {list(self.reference)}"


def _exposed_name(name: str, kind: str) -> str:
    # the parser strips a counter's _total; expositions (and dashboards) use it
    return name + "_total" if kind == "counter" and not name.endswith("_total") else name


def families(text: str, normalize: Callable | None = None, skip_zero: bool = True) -> dict:
    """Parses an exposition into ``{exposed family name: Family}``.

    Raises:
        ValueError: the text is not a valid exposition (the parser's error).
    """
    out: dict = {}
    for fam in text_string_to_metric_families(text):
        name = _exposed_name(fam.name, fam.type)
        f = out.get(name)
        if f is None:
            f = out[name] = Family(name, fam.type, fam.documentation)
        names = set(f.label_names)
        # a histogram series (labels without le) counts when its _count is non-zero
        live = None
        if skip_zero and fam.type == "histogram":
            live = {frozenset((k, v) for k, v in s.labels.items() if k != "le")
                    for s in fam.samples if s.name.endswith("_count") and s.value}
        for s in fam.samples:
            if s.name.endswith("_created"):
                continue
            if skip_zero:
                if fam.type == "counter" and not s.value:
                    continue
                if live is not None and frozenset((k, v) for k, v in s.labels.items() if k != "le") not in live:
                    continue
            for k, v in s.labels.items():
                names.add(k)
                if normalize is not None:
                    v = normalize(name, k, v)
                    if v is None:
                        continue
                f.values.setdefault(k, set()).add(v)
        # label names also from samples skipped above
        for s in fam.samples:
            names.update(s.labels)
        f.label_names = frozenset(names)
    return out


def diff(ours: str, reference: str, *, compare_help: bool = True, normalize: Callable | None = None,
         skip_zero: bool = True, only: Iterable[str] | None = None) -> list:
    """The differences of exposition ``ours`` from ``reference``, sorted.

    ``only``: compare just these family names (None: all). Label values are compared
    only for labels both sides have; ``le`` only for histograms.

    Raises:
        ValueError: a text is not a valid exposition.
    """
    a = families(ours, normalize, skip_zero)
    b = families(reference, normalize, skip_zero)
    names = set(a) | set(b)
    if only is not None:
        names &= set(only)
    out = []
    for name in sorted(names):
        fa, fb = a.get(name), b.get(name)
        if fa is None:
            out.append(Difference(name, MISSING))
            continue
        if fb is None:
            out.append(Difference(name, EXTRA))
            continue
        if fa.type != fb.type:
            out.append(Difference(name, TYPE, ours=(fa.type,), reference=(fb.type,)))
        if compare_help and fa.help != fb.help:
            out.append(Difference(name, HELP, ours=(fa.help,), reference=(fb.help,)))
        if fa.label_names != fb.label_names and fa.label_names and fb.label_names:
            out.append(Difference(name, LABEL_NAMES, ours=tuple(sorted(fa.label_names)),
                                  reference=tuple(sorted(fb.label_names))))
        for label in sorted(fa.label_names & fb.label_names):
            va, vb = fa.values.get(label, set()), fb.values.get(label, set())
            if va != vb:
                out.append(Difference(name, LABEL_VALUES, label, tuple(sorted(va - vb)), tuple(sorted(vb - va))))
    out.sort(key=lambda d: (d.family, KINDS.index(d.kind), d.label))
    return out


def url_map(mapping: dict) -> Callable:
    """A ``normalize`` that replaces label values found in ``mapping`` (worker URLs of
    the two runs mapped to the same role names, say) and keeps the rest."""
    def normalize(_family: str, _label: str, value: str):
        return mapping.get(value, value)
    return normalize


def apply_allow_list(diffs: list, allow: dict) -> tuple:
    """Splits ``diffs`` by an allow-list: ``{(family pattern, kind[, label]): reason}``
    (fnmatch patterns on family names; a key without a label matches every label).

    Returns:
        (the differences no entry explains, the entries that explained nothing).
    """
    used = set()
    left = []
    for d in diffs:
        for key in allow:
            pattern, kind = key[0], key[1]
            label = key[2] if len(key) > 2 else None
            if kind == d.kind and fnmatch.fnmatchcase(d.family, pattern) and (label is None or label == d.label):
                used.add(key)
                break
        else:
            left.append(d)
    return left, [k for k in allow if k not in used]
