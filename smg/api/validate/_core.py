"""The checking engine the per-API validators are written in.

A request body is judged in the order a typed decoder reads it, so the first fault a
client is told about is the one SMG names:

1. *Decoding* (phase 1): the body's fields in document order, each checked for its
   JSON type, depth first; the first wrong type stops the check (``Bad`` is raised
   from where it was found and collects its path on the way up). A struct's missing
   required fields are reported when the struct's own fields are done, the first in
   declaration order.
2. *Field rules* (phase 2), only when decoding passed: ranges, lengths, allowed
   values of top-level fields; the rule of the first field in declaration order wins.
3. *Cross-field rules* (phase 3), only when both passed: ``param`` is null.

Rules:
- The valid path allocates nothing: a checker returns None, and paths are built only
  when a ``Bad`` travels up.
- ``null`` is what an optional field may always hold; a required field holding null
  is a wrong type. Booleans are never numbers (``type(v) is int`` everywhere).
- Inside an internally tagged object (a chat message, a response format) a fault's
  path stops at that object: ``messages[0]`` for a wrong type,
  ``messages[0].<field>`` for a missing field, as SMG reports them.
- Fields no rule names pass untouched (they are the worker's to judge).
- Each API's validator is a ``Shape`` (below): a screen (smg/api/validate/screen.py,
  native) vouches for the common valid body in one pass, and only a body it cannot
  vouch for is walked here; every answer a client gets is worded here. So that the
  screen knows the checkers, each checker and rule made in this module carries its
  spec in a ``screen`` attribute (``type_spec``/``rule_spec``); a checker without one
  is one the screen never vouches for.
"""
from __future__ import annotations

from smg.api.validate.screen import (CROSS, R_DEC, R_DOUBT, R_INT, R_NONEMPTY, R_STOP, R_TOPK, T_ANY, T_BOOL,
                                     T_DOUBT, T_INT, T_LIST, T_MAP, T_MAPOF, T_NUM, T_OBJ, T_STR, T_STRS, VALID,
                                     Screen)
from smg.api.validate.screen_py import F32_MAX

# error codes (catalogued in smg/api/errors.py)
MISSING = "missing_required_parameter"
INVALID_TYPE = "invalid_type"
INVALID_VALUE = "invalid_value"
INT_BELOW = "integer_below_min_value"
INT_ABOVE = "integer_above_max_value"
DEC_BELOW = "decimal_below_min_value"
DEC_ABOVE = "decimal_above_max_value"

U32_MAX = 4294967295
U64_MAX = 18446744073709551615
I32_MIN, I32_MAX = -2147483648, 2147483647
I64_MIN, I64_MAX = -9223372036854775808, 9223372036854775807

DECODE_PREFIX = "Invalid JSON data: Failed to deserialize the JSON body into the target type: "


class Bad(Exception):
    """A decoding fault: ``code``, the path (innermost first) and what was wrong."""

    __slots__ = ("code", "where", "detail")

    def __init__(self, code: str, detail: str, where: list | None = None) -> None:
        self.code = code
        self.detail = detail
        self.where = where if where is not None else []

    def param(self, start: int = 0) -> str | None:
        """The dotted path (``messages[0].role``); ``start`` 1 leaves out the innermost
        step (a missing field's message names the object it is missing from)."""
        out = ""
        for p in reversed(self.where[start:]):
            if type(p) is int:
                out += f"[{p}]"
            else:
                out = f"{out}.{p}" if out else p
        return out or None


class Invalid:
    """A rejected request: the answer's status, ``code``, ``param`` and message.

    ``plain`` marks a rejection given as plain text (status and message only), the
    way the routes without typed validation answer."""

    __slots__ = ("status", "code", "param", "message", "plain")

    def __init__(self, status: int, code: str | None, param: str | None, message: str, plain: bool = False) -> None:
        self.status = status
        self.code = code
        self.param = param
        self.message = message
        self.plain = plain

    def __repr__(self) -> str:
        return f"Invalid({self.status}, {self.code!r}, {self.param!r})"


def decode_fault(e: Bad, plain: bool = False) -> Invalid:
    """The answer to a decoding fault."""
    param = e.param()
    at = e.param(1) if e.code == MISSING else param
    where = f"{at}: " if at else ""
    if plain:
        return Invalid(422, e.code, None, f"Failed to deserialize the JSON body into the target type: {where}"
                                          f"{e.detail}", True)
    return Invalid(400, e.code, param, f"{DECODE_PREFIX}{where}{e.detail}")


def rule_fault(name: str | None, code: str, message: str) -> Invalid:
    """The answer to a phase-2 (``name`` set) or phase-3 (``name`` None) rule."""
    if name is None:
        return Invalid(400, code, None, f"__all__: {message}")
    return Invalid(400, code, name, f"{name}: {message}")


# -- describing what was found ---------------------------------------------------------

def unexpected(v) -> str:
    t = type(v)
    if v is None:
        return "null"
    if t is bool:
        return f"boolean `{'true' if v else 'false'}`"
    if t is int:
        return f"integer `{v}`"
    if t is float:
        return f"floating point `{v}`"
    if t is str:
        return f'string "{v}"' if len(v) <= 64 else "a string"
    if t is list:
        return "sequence"
    return "map"


def wrong(v, expected: str) -> Bad:
    return Bad(INVALID_TYPE, f"invalid type: {unexpected(v)}, expected {expected}")


def missing(name: str) -> Bad:
    return Bad(MISSING, f"missing field `{name}`", [name])


# -- what the screen knows of a checker or a rule -------------------------------------

_DOUBTFUL = (T_DOUBT, False, None, None)
_NO_RULE = (R_DOUBT, None, None, None)


def screened(spec: tuple):
    """Decorator: the checker or rule ``f`` has the screen spec ``spec``
    (smg/api/validate/screen_py.py states the format)."""
    def mark(f):
        f.screen = spec
        return f
    return mark


def type_spec(check) -> tuple:
    """The screen's type spec of a checker (one without: never vouched for)."""
    return getattr(check, "screen", _DOUBTFUL)


def rule_spec(rule) -> tuple:
    """The screen's rule spec of a phase-2 rule (one without: never vouched for)."""
    return getattr(rule, "screen", _NO_RULE)


def nullable(spec: tuple) -> tuple:
    return (spec[0], True, spec[2], spec[3])


# -- phase-1 checkers: f(v) -> None, or raise Bad ---------------------------------------

@screened((T_STR, False, None, None))
def string(v) -> None:
    if type(v) is not str:
        raise wrong(v, "a string")


@screened((T_STR, True, None, None))
def opt_string(v) -> None:
    if v is not None and type(v) is not str:
        raise wrong(v, "a string")


@screened((T_BOOL, True, None, None))
def opt_bool(v) -> None:
    if v is not None and type(v) is not bool:
        raise wrong(v, "a boolean")


def _int(v, lo: int, hi: int, what: str) -> None:
    if type(v) is not int:
        raise wrong(v, what)
    if v < lo or v > hi:
        code = INT_BELOW if v < 0 and lo == 0 else INVALID_VALUE
        raise Bad(code, f"invalid value: integer `{v}`, expected {what}")


@screened((T_INT, True, 0, U32_MAX))
def opt_u32(v) -> None:
    if v is not None:
        _int(v, 0, U32_MAX, "u32")


@screened((T_INT, False, 0, U32_MAX))
def u32(v) -> None:
    _int(v, 0, U32_MAX, "u32")


@screened((T_INT, True, 0, U64_MAX))
def opt_u64(v) -> None:
    if v is not None:
        _int(v, 0, U64_MAX, "u64")


@screened((T_INT, True, I32_MIN, I32_MAX))
def opt_i32(v) -> None:
    if v is not None:
        _int(v, I32_MIN, I32_MAX, "i32")


@screened((T_INT, True, I64_MIN, I64_MAX))
def opt_i64(v) -> None:
    if v is not None:
        _int(v, I64_MIN, I64_MAX, "i64")


@screened((T_NUM, True, None, None))
def opt_f32(v) -> None:
    if v is not None and type(v) is not float and type(v) is not int:
        raise wrong(v, "f32")


@screened((T_NUM, True, None, None))
def opt_f64(v) -> None:
    if v is not None and type(v) is not float and type(v) is not int:
        raise wrong(v, "f64")


@screened((T_MAP, True, None, None))
def opt_map(v) -> None:
    if v is not None and type(v) is not dict:
        raise wrong(v, "a map")


def opt_object(what: str):
    """An optional object whose inside is not judged here."""
    def check(v) -> None:
        if v is not None and type(v) is not dict:
            raise wrong(v, what)
    check.screen = (T_MAP, True, None, None)
    return check


def opt_list_of(item, what: str = "a sequence"):
    """An optional array each of whose items passes ``item``."""
    def check(v) -> None:
        if v is None:
            return
        if type(v) is not list:
            raise wrong(v, what)
        for i, x in enumerate(v):
            try:
                item(x)
            except Bad as e:
                e.where.append(i)
                raise
    check.screen = (T_LIST, True, type_spec(item), None)
    return check


def opt_map_of(item):
    """An optional map each of whose values passes ``item`` (the key is the path)."""
    def check(v) -> None:
        if v is None:
            return
        if type(v) is not dict:
            raise wrong(v, "a map")
        for k, x in v.items():
            try:
                item(x)
            except Bad as e:
                e.where.append(k)
                raise
    check.screen = (T_MAPOF, True, type_spec(item), None)
    return check


@screened((T_NUM, False, None, None))
def f32_value(v) -> None:
    if type(v) is not float and type(v) is not int:
        raise wrong(v, "f32")


def enum_of(names: tuple, what: str):
    """A required string naming one of ``names``."""
    listed = ", ".join(f"`{n}`" for n in names)

    def check(v) -> None:
        if type(v) is not str:
            raise wrong(v, what)
        if v not in names:
            raise Bad(INVALID_VALUE, f"unknown variant `{v}`, expected one of {listed}")
    return check


def opt(check):
    """``check`` for a value that may also be null."""
    def optional(v) -> None:
        if v is not None:
            check(v)
    optional.screen = nullable(type_spec(check))
    return optional


def struct(fields: dict, required: tuple, what: str):
    """An object with ``fields`` (name -> checker) of which ``required`` (declaration
    order) must be present; other members pass."""
    def check(v) -> None:
        if type(v) is not dict:
            raise wrong(v, what)
        walk(v, fields, required)
    check.screen = (T_OBJ, False, {k: type_spec(c) for k, c in fields.items()}, required)
    return check


def walk(obj: dict, fields: dict, required: tuple) -> None:
    """Phase 1 over one object: its members in document order, then its missing fields."""
    get = fields.get
    for k, v in obj.items():
        c = get(k)
        if c is not None:
            try:
                c(v)
            except Bad as e:
                e.where.append(k)
                raise
    for name in required:
        if name not in obj:
            raise missing(name)


def tagged(v, tag: str, variants: dict, what: str) -> None:
    """An internally tagged object: ``v[tag]`` picks the variant (name -> (fields,
    required)). Paths inside stop at the object (see the module rules)."""
    if type(v) is not dict:
        raise wrong(v, what)
    if tag not in v:
        raise missing(tag)
    name = v[tag]
    if type(name) is not str:
        e = wrong(name, "variant identifier")
        e.where.append(tag)
        raise e
    spec = variants.get(name)
    if spec is None:
        listed = ", ".join(f"`{n}`" for n in variants)
        raise Bad(INVALID_VALUE, f"unknown variant `{name}`, expected one of {listed}", [tag])
    fields, required = spec
    try:
        walk(v, fields, required)
    except Bad as e:
        e.where = [e.where[0]] if e.code == MISSING else []
        raise


# -- phase-2 rules: f(name, v) -> Invalid | None (v is not None) --------------------------

def _num(v) -> str:
    return repr(float(v)) if type(v) is float else str(v)


def dec_range(lo: float | None, hi: float | None, lo_open: bool = False):
    """A decimal between ``lo`` and ``hi`` (``lo`` excluded when ``lo_open``)."""
    def rule(name: str, v):
        if type(v) is float and not -F32_MAX <= v <= F32_MAX:
            return rule_fault(name, INVALID_VALUE, f"Invalid '{name}': {v} is out of range")
        if lo is not None and (v <= lo if lo_open else v < lo):
            op = ">" if lo_open else ">="
            return rule_fault(name, DEC_BELOW, f"Invalid '{name}': decimal below minimum value. Expected a value "
                                               f"{op} {float(lo)}, but got {_num(v)} instead.")
        if hi is not None and v > hi:
            return rule_fault(name, DEC_ABOVE, f"Invalid '{name}': decimal above maximum value. Expected a value "
                                               f"<= {float(hi)}, but got {_num(v)} instead.")
        return None
    rule.screen = (R_DEC, lo, hi, lo_open)
    return rule


def int_range(lo: int | None, hi: int | None):
    def rule(name: str, v):
        if lo is not None and v < lo:
            return rule_fault(name, INT_BELOW, f"Invalid '{name}': integer below minimum value. Expected a value "
                                               f">= {lo}, but got {v} instead.")
        if hi is not None and v > hi:
            return rule_fault(name, INT_ABOVE, f"Invalid '{name}': integer above maximum value. Expected a value "
                                               f"<= {hi}, but got {v} instead.")
        return None
    rule.screen = (R_INT, lo, hi, None)
    return rule


@screened((R_TOPK, None, None, None))
def top_k_rule(name: str, v):
    if v == -1 or v >= 1:
        return None
    return rule_fault(name, INVALID_VALUE, "top_k must be -1 (disabled) or at least 1")


@screened((R_STOP, None, None, None))
def stop_rule(name: str, v):
    """At most 4 stop sequences, none empty."""
    if type(v) is str:
        if not v:
            return rule_fault(name, INVALID_VALUE, "stop sequences cannot be empty")
        return None
    if len(v) > 4:
        return rule_fault(name, "array_above_max_length", f"Invalid '{name}': array too long. Expected an array "
                                                          f"with maximum length 4, but got an array with length "
                                                          f"{len(v)} instead.")
    for s in v:
        if not s:
            return rule_fault(name, INVALID_VALUE, "stop sequences cannot be empty")
    return None


def rules(table: dict) -> dict:
    """A phase-2 table: field -> rule, in the typed request's declaration order, made
    into field -> (position, rule) for ``first_rule_fault``."""
    return {k: (i, r) for i, (k, r) in enumerate(table.items())}


def first_rule_fault(body: dict, table: dict):
    """Phase 2: the fault of the first field (in declaration order) whose rule fails,
    or None. Walks the body's members (fewer than the rules, as a rule)."""
    found = None
    best = 1 << 30
    get = table.get
    for k, v in body.items():
        e = get(k)
        if e is not None and v is not None and e[0] < best:
            f = e[1](k, v)
            if f is not None:
                found = f
                best = e[0]
    return found


# -- shapes shared by several APIs -----------------------------------------------------

@screened((T_STRS, False, None, None))
def string_or_strings(v) -> None:
    """A string or an array of strings (SMG's ``StringOrArray``)."""
    if type(v) is str:
        return
    if type(v) is list:
        for x in v:
            if type(x) is not str:
                break
        else:
            return
    raise Bad(INVALID_TYPE, "data did not match any variant of untagged enum StringOrArray")


@screened((T_STRS, True, None, None))
def opt_string_or_strings(v) -> None:
    if v is not None:
        string_or_strings(v)


def nonempty_rule(rule):
    """Marks a rule that refuses exactly an empty string or array."""
    rule.screen = (R_NONEMPTY, None, None, None)
    return rule


ANY = screened((T_ANY, True, None, None))(lambda v: None)  # any JSON value, null included


# -- one API's validator -------------------------------------------------------------------

class Shape:
    """One API's validator: ``shape(body) -> Invalid | None`` for a parsed body (a dict).

    ``fields``/``required``: phase 1 (``walk``); ``rules``: phase 2 (made by
    ``rules``); ``cross``: phase 3, ``cross(body) -> Invalid | None``, read only when
    one of ``cross_fields`` is present (None: always); ``plain``: decoding faults are
    plain-text answers (``decode_fault``)."""

    __slots__ = ("fields", "required", "rules", "cross", "plain", "spec", "passes")

    def __init__(self, fields: dict, required: tuple, rules: dict | None = None, cross=None,
                 cross_fields: frozenset | None = frozenset(), plain: bool = False) -> None:
        self.fields = fields
        self.required = required
        self.rules = rules or {}
        self.cross = cross
        self.plain = plain
        # the screen's arguments (tests build both twins from them)
        self.spec = ({k: type_spec(c) for k, c in fields.items()}, required,
                     {k: rule_spec(r) for k, (_, r) in self.rules.items()},
                     cross_fields if cross is not None else frozenset())
        screen = Screen(*self.spec)
        self.passes = screen.passes  # VALID: the answer is None (callers may skip the call)

    def __call__(self, body: dict):
        return self.answer(self.passes(body), body)

    def answer(self, verdict: int, body: dict):
        """The answer to ``body`` given the screen's ``verdict`` on it (``passes(body)``,
        for a caller that screened the body already)."""
        if verdict == VALID:
            return None
        if verdict == CROSS:
            return self.cross(body)
        return self.judge(body)

    def judge(self, body: dict):
        """The full walk, every phase: the answer to any body (``__call__`` skips it for a
        body the screen vouches for)."""
        try:
            walk(body, self.fields, self.required)
        except Bad as e:
            return decode_fault(e, self.plain)
        if self.rules:
            f = first_rule_fault(body, self.rules)
            if f is not None:
                return f
        return self.cross(body) if self.cross is not None else None
