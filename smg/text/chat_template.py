"""Hugging Face compatible chat templates: messages in, prompt text out.

A model's chat template is a Jinja2 program shipped with its tokenizer. This module runs it
the way ``transformers``' ``apply_chat_template`` does, so a prompt built by the gateway is
byte-for-byte the prompt the engine's own OpenAI server would have built.

Rules this module keeps:

- **HF's environment.** Templates compile once, in a
  ``jinja2.sandbox.ImmutableSandboxedEnvironment`` with ``trim_blocks`` and
  ``lstrip_blocks`` on and the ``loopcontrols`` extension, plus HF's helpers:
  ``raise_exception(msg)``, ``tojson`` (``json.dumps`` with ``ensure_ascii=False`` by
  default and the ``indent``/``separators``/``sort_keys`` arguments), ``strftime_now(fmt)``
  (local time, from an injected clock) and the ``{% generation %}`` block (rendered as
  its body: assistant-token masks are a training feature). The sandbox refuses
  attribute access to Python internals (``__class__`` and friends) and the immutable
  variant refuses mutating methods such as ``list.append``, exactly as in HF, so a
  template that relies on them fails here as it fails there. As in HF 5, ``dict`` only
  builds dicts and ``namespace`` refuses underscore-prefixed names.
- **HF's variables.** ``messages``, ``tools`` and ``documents`` (``None`` when absent, as
  HF passes them), ``add_generation_prompt``, the tokenizer's special tokens
  (``bos_token``, ``eos_token``, others from ``special``) and every
  ``chat_template_kwargs`` entry as a top-level variable (``enable_thinking``,
  ``reasoning_effort``, ...). ``continue_final_message`` is passed too (as SMG and vLLM
  do; a few templates read it).
- **continue_final_message** follows HF (transformers 5): the final message's text
  (its last text part when it is a list) gets a tag appended, the template renders
  without a generation prompt, and the prompt is cut at the tag; if the template trimmed
  the tag's trailing space the text before it is right-trimmed too. A template that
  drops or rewrites the final text is a ``TemplateError``, as in HF.
- **Content format.** A template is *parts-aware* ("openai") when it iterates a
  message's content (``{% for part in message['content'] %}``, directly, through a
  variable set from it, or through a macro that iterates the argument it is given) or
  indexes it by number (``message.content[0]``), where the message is a loop variable
  over ``messages`` (or over a variable derived from it). Otherwise it is "string". A
  ``content is string`` test alone does not make a template parts-aware: most templates
  use it only to pick a branch (Qwen3 renders '' for non-string content, Llama 3.1 uses
  it for the system prompt), so handing them parts would lose text. This is SMG's AST
  rule (``crates/tokenizer/src/chat_template.rs``) without its two broad cases
  (``set content = message.content`` and ``content|length``), which misfire on Qwen3.
- **Parts.** For a string template a list content becomes its text parts joined with
  one space (SMG's ``transform_content_field``; vLLM joins with "\\n" — SMG is the drop-in
  target), '' when there is none; image, audio, video and other non-text parts are
  dropped from the text (the multimodal path expands placeholders itself). For a parts-aware template text parts
  pass unchanged and ``image_url``/``video_url``/``audio_url``/``input_audio`` parts
  become ``{"type": "image"|"video"|"audio"}``, which the template renders as its own
  placeholder. String content always stays a string.
- **Tool calls.** An assistant's ``tool_calls[].function.arguments`` arrives as a JSON
  string (OpenAI); templates (Qwen, Hermes, Llama 3.1) expect a mapping, so a string
  that parses to a JSON object is replaced by it before rendering, as HF and vLLM
  callers do. Anything else is left as is. An assistant's reasoning, under any of
  ``reasoning_content``/``thinking``/``reasoning``, is copied to ``reasoning_content``
  and (when unset) ``thinking`` (HF 5's aliasing: Qwen3 reads the first, gpt-oss the
  second). The caller's messages are never mutated. Messages are taken to be plain JSON
  data (they come from a JSON parser), so they are not rebuilt as HF rebuilds rich
  Python objects.
- **Errors.** Every failure is a ``TemplateError`` (status 400): a syntax error at
  compile time (with its line), ``raise_exception`` from the template, and any exception
  escaping a render (undefined misuse, a type error, a sandbox refusal), with the
  template line when Jinja reports it.

No I/O except ``load_template``, which reads a model folder once at startup.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
from typing import Any, Callable, Iterable, Mapping, Sequence

import jinja2
from jinja2 import meta, nodes
from jinja2.ext import Extension
from jinja2.sandbox import ImmutableSandboxedEnvironment

from smg.errors import SmgError

__all__ = [
    "CONTENT_OPENAI",
    "CONTENT_STRING",
    "ChatTemplate",
    "TemplateError",
    "detect_content_format",
    "load_template",
    "template_from_files",
    "prepare_messages",
]

CONTENT_STRING = "string"
CONTENT_OPENAI = "openai"

# Names the renderer sets itself; a chat_template_kwargs entry may not replace them
# (a request swapping ``messages`` or ``tools`` would bypass the request's validation).
RESERVED_VARIABLES = frozenset(
    {"messages", "tools", "documents", "add_generation_prompt", "continue_final_message"}
)

# Media part types and the bare placeholder part a parts-aware template receives
# (SMG's transform_content_field; input_audio is the OpenAI audio-input part).
_MEDIA_PLACEHOLDERS = {
    "image_url": "image",
    "video_url": "video",
    "audio_url": "audio",
    "input_audio": "audio",
}

# Appended to the final message's text under continue_final_message to find the cut
# point (HF's tag, so templates that transform the text cut where HF cuts); its trailing
# space shows whether the template trimmed the text.
_CONTINUE_TAG = "CONTINUE_FINAL_MESSAGE_TAG "

# Names an assistant's reasoning arrives under (OpenAI-compatible servers use
# ``reasoning_content`` or ``reasoning``; gpt-oss templates read ``thinking``). HF copies
# the first one set into ``reasoning_content`` and, when absent, ``thinking``.
_REASONING_FIELDS = ("reasoning_content", "thinking", "reasoning")


class TemplateError(SmgError):
    """A chat template failed to compile or to render.

    Attributes:
        status_hint: 400: the request (or the configured template) cannot be rendered.
        lineno: the template line Jinja blamed, when known.
    """

    status_hint = 400

    def __init__(self, msg: str, lineno: int | None = None) -> None:
        super().__init__(msg)
        self.lineno = lineno


# --- HF's helpers -------------------------------------------------------------------

def _raise_exception(message: Any) -> None:
    raise TemplateError(str(message))


def _tojson(value: Any, ensure_ascii: bool = False, indent: Any = None,
            separators: Any = None, sort_keys: bool = False) -> str:
    # HF's filter is json.dumps with these arguments; jinja's own tojson (HTML-safe
    # escaping of <>&') would change prompts.
    if isinstance(separators, list):
        separators = tuple(separators)
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent,
                      separators=separators, sort_keys=sort_keys)


class _GenerationBlock(Extension):
    """``{% generation %}...{% endgeneration %}``: HF marks assistant text with it for
    training masks; rendering it is rendering its body (a call block, as in HF, so its
    scoping matches)."""

    tags = {"generation"}

    def parse(self, parser: Any) -> nodes.Node:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

    @staticmethod
    def _body(caller: Callable[[], str]) -> str:
        return caller()


class _DictMaker:
    """The template's ``dict``: builds plain dicts, and offers nothing else to reach for
    (the real ``dict`` type would expose its class machinery)."""

    def __call__(self, *args: Any, **kwargs: Any) -> dict[Any, Any]:
        return dict(*args, **kwargs)

    def fromkeys(self, *args: Any) -> dict[Any, Any]:
        return dict.fromkeys(*args)


class _Namespace(jinja2.utils.Namespace):
    """``namespace(...)`` that refuses underscore-prefixed names, so a template cannot
    plant or overwrite dunder attributes on it (HF hardens its namespace the same way)."""

    def __init__(*args: Any, **kwargs: Any) -> None:  # noqa: N805 - Namespace's own trick
        self, rest = args[0], args[1:]
        attrs = dict(*rest, **kwargs)
        for name in attrs:
            _Namespace._check(name)
        jinja2.utils.Namespace.__init__(self, attrs)

    def __setitem__(self, name: str, value: Any) -> None:
        _Namespace._check(name)
        jinja2.utils.Namespace.__setitem__(self, name, value)

    @staticmethod
    def _check(name: Any) -> None:
        if isinstance(name, str) and name.startswith("_"):
            raise jinja2.exceptions.SecurityError(
                f"a namespace may not hold underscore-prefixed names ({name!r})")


def _environment(now: Callable[[], _dt.datetime]) -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True,
        lstrip_blocks=True,
        extensions=[_GenerationBlock, "jinja2.ext.loopcontrols"],
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = lambda fmt: now().strftime(fmt)
    env.globals["dict"] = _DictMaker()
    env.globals["namespace"] = _Namespace
    return env


def _template_lineno(exc: BaseException) -> int | None:
    """The template line of the innermost template frame in exc's traceback (Jinja
    rewrites tracebacks so template frames carry the template's file name and line)."""
    lineno = getattr(exc, "lineno", None)
    if isinstance(lineno, int):
        return lineno
    tb = exc.__traceback__
    found = None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<template>":
            found = tb.tb_lineno
        tb = tb.tb_next
    return found


# --- content format detection --------------------------------------------------------

def _unwrap(node: nodes.Node) -> nodes.Node:
    # ``message.content | selectattr(...)`` still iterates the content
    while isinstance(node, nodes.Filter) and node.node is not None:
        node = node.node
    return node


def _is_sequence_of(node: nodes.Node, names: set[str]) -> bool:
    """node is one of ``names``, or a slice, filter or either-or of them
    (``messages[1:]``, ``messages | reverse``, ``a if c else messages``), not an element."""
    node = _unwrap(node)
    if isinstance(node, nodes.Name):
        return node.name in names
    if isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Slice):
        return _is_sequence_of(node.node, names)
    if isinstance(node, nodes.CondExpr):
        return _is_sequence_of(node.expr1, names) or (
            node.expr2 is not None and _is_sequence_of(node.expr2, names))
    if isinstance(node, nodes.Add):
        return _is_sequence_of(node.left, names) or _is_sequence_of(node.right, names)
    return False


def detect_content_format(source: str) -> str:
    """Whether ``source`` expects content as OpenAI parts.

    Returns:
        ``CONTENT_OPENAI`` for a parts-aware template, else ``CONTENT_STRING`` (also for
        a template that does not parse: compiling it reports that error).
    """
    env = ImmutableSandboxedEnvironment(extensions=[_GenerationBlock, "jinja2.ext.loopcontrols"])
    try:
        tree = env.parse(source)
    except jinja2.TemplateSyntaxError:
        return CONTENT_STRING
    return CONTENT_OPENAI if _ContentScan(tree).parts_aware() else CONTENT_STRING


class _ContentScan:
    """Static scan of a template AST for use of message content as a sequence."""

    def __init__(self, tree: nodes.Template) -> None:
        self.tree = tree
        assigns = [(n.target, n.node) for n in tree.find_all(nodes.Assign)]
        # names holding messages or a slice/filter/copy of them (``loop_messages``)
        derived = {"messages"}
        changed = True
        while changed:
            changed = False
            for target, value in assigns:
                if isinstance(target, nodes.Name) and target.name not in derived \
                        and _is_sequence_of(value, derived):
                    derived.add(target.name)
                    changed = True
        self.message_vars = {
            loop.target.name
            for loop in tree.find_all(nodes.For)
            if isinstance(loop.target, nodes.Name) and _is_sequence_of(loop.iter, derived)
        }
        # a macro parameter that is handed a message is a message too (Kimi-K2's
        # ``render_content(message)``)
        for macro, call, param, arg in self._macro_calls():
            if isinstance(arg, nodes.Name) and arg.name in self.message_vars:
                self.message_vars.add(param)
        # variables set straight from a message's content (``set content = m.content``)
        self.content_vars = {
            target.name
            for target, value in assigns
            if isinstance(target, nodes.Name) and self._is_content(_unwrap(value))
        }

    def _macro_calls(self) -> Iterable[tuple[nodes.Macro, nodes.Call, str, nodes.Node]]:
        """(macro, call, parameter, argument) for every argument of every call of a macro
        defined in the template."""
        macros = {m.name: m for m in self.tree.find_all(nodes.Macro)}
        for call in self.tree.find_all(nodes.Call):
            if not isinstance(call.node, nodes.Name) or call.node.name not in macros:
                continue
            macro = macros[call.node.name]
            params = [a.name for a in macro.args]
            for i, arg in enumerate(call.args):
                if i < len(params):
                    yield macro, call, params[i], arg
            for kw in call.kwargs:
                if kw.key in params:
                    yield macro, call, kw.key, kw.value

    def _is_content(self, node: nodes.Node) -> bool:
        """``m.content``, ``m['content']`` or ``m.get('content', ...)`` for a message
        variable ``m``."""
        if isinstance(node, nodes.Getattr) and node.attr == "content":
            base = node.node
        elif isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const) \
                and node.arg.value == "content":
            base = node.node
        elif isinstance(node, nodes.Call) and isinstance(node.node, nodes.Getattr) \
                and node.node.attr == "get" and node.args \
                and isinstance(node.args[0], nodes.Const) and node.args[0].value == "content":
            base = node.node.node
        else:
            return False
        return isinstance(base, nodes.Name) and base.name in self.message_vars

    def _is_content_ref(self, node: nodes.Node, extra: Iterable[str] = ()) -> bool:
        node = _unwrap(node)
        if self._is_content(node):
            return True
        return isinstance(node, nodes.Name) and (
            node.name in self.content_vars or node.name in extra
        )

    def _uses_as_sequence(self, scope: nodes.Node, extra: Iterable[str] = ()) -> bool:
        extra = tuple(extra)
        for loop in scope.find_all(nodes.For):
            if self._is_content_ref(loop.iter, extra):
                return True
        for item in scope.find_all(nodes.Getitem):
            if isinstance(item.arg, nodes.Const) and type(item.arg.value) is int \
                    and self._is_content_ref(item.node, extra):
                return True
        return False

    def parts_aware(self) -> bool:
        if self._uses_as_sequence(self.tree):
            return True
        # a macro that iterates one of its arguments, called with a message's content
        for macro, _call, param, arg in self._macro_calls():
            if self._is_content_ref(arg) and self._uses_as_sequence(macro, (param,)):
                return True
        return False


# --- message preparation -------------------------------------------------------------

def _flatten(parts: Sequence[Any]) -> str:
    texts = [
        p["text"] for p in parts
        if isinstance(p, Mapping) and p.get("type") == "text" and isinstance(p.get("text"), str)
    ]
    return " ".join(texts)


def _as_parts(parts: Sequence[Any]) -> list[Any]:
    out = []
    for p in parts:
        kind = p.get("type") if isinstance(p, Mapping) else None
        placeholder = _MEDIA_PLACEHOLDERS.get(kind) if isinstance(kind, str) else None
        out.append({"type": placeholder} if placeholder else p)
    return out


def _parse_arguments(tool_calls: Sequence[Any]) -> list[Any] | None:
    """tool_calls with JSON-object argument strings parsed; None when nothing changes."""
    out = []
    changed = False
    for call in tool_calls:
        fn = call.get("function") if isinstance(call, Mapping) else None
        args = fn.get("arguments") if isinstance(fn, Mapping) else None
        if isinstance(args, str):
            try:
                parsed = json.loads(args)
            except ValueError:
                parsed = None
            if isinstance(parsed, dict) and isinstance(fn, Mapping):
                call = {**call, "function": {**fn, "arguments": parsed}}
                changed = True
        out.append(call)
    return out if changed else None


def prepare_messages(messages: Sequence[Mapping[str, Any]], content_format: str) -> list[dict[str, Any]]:
    """Messages reshaped for a template of ``content_format`` (see the module rules).

    Returns:
        new message dicts (shallow copies; the input is not modified).

    Raises:
        TemplateError: a message is not a mapping.
    """
    out = []
    for i, msg in enumerate(messages):
        if not isinstance(msg, Mapping):
            raise TemplateError(f"messages[{i}] is not an object")
        m = dict(msg)
        content = m.get("content")
        if isinstance(content, (list, tuple)):
            m["content"] = _as_parts(content) if content_format == CONTENT_OPENAI else _flatten(content)
        reasoning = next((m[k] for k in _REASONING_FIELDS if m.get(k) is not None), None)
        if reasoning is not None:
            m.setdefault("thinking", reasoning)
            m["reasoning_content"] = reasoning
        calls = m.get("tool_calls")
        if isinstance(calls, (list, tuple)):
            parsed = _parse_arguments(calls)
            if parsed is not None:
                m["tool_calls"] = parsed
        out.append(m)
    return out


# --- the template --------------------------------------------------------------------

class ChatTemplate:
    """One compiled chat template.

    Attributes:
        source: the template text.
        content_format: ``CONTENT_STRING`` or ``CONTENT_OPENAI`` (see the module rules).
        variables: the undeclared names the template reads (``enable_thinking``,
            ``tools``, ...), for a caller that wants to know what a kwarg would change.
        special_tokens: the special-token variables every render receives.
        tool_use: the template to render instead when tools are given (the ``tool_use``
            entry of a named template list), or None.
    """

    def __init__(
        self,
        source: str,
        *,
        bos_token: str = "",
        eos_token: str = "",
        special: Mapping[str, str] | None = None,
        now: Callable[[], _dt.datetime] | None = None,
        tool_use: ChatTemplate | None = None,
    ) -> None:
        """Compile ``source``.

        Args:
            bos_token, eos_token: the tokenizer's tokens, as text.
            special: further template variables from the tokenizer (``unk_token``,
                ``pad_token``, ...); bos/eos given here override the arguments.
            now: the clock behind ``strftime_now`` (default: local time, as HF).
            tool_use: see the attribute.

        Raises:
            TemplateError: the source does not compile (message and ``lineno`` say where).
        """
        if not isinstance(source, str):
            raise TemplateError("a chat template must be a string")
        self.source = source
        self._now = now or _dt.datetime.now
        env = _environment(lambda: self._now())
        try:
            self._template = env.from_string(source)
            tree = env.parse(source)
        except jinja2.TemplateSyntaxError as exc:
            raise TemplateError(f"chat template syntax error at line {exc.lineno}: {exc.message}",
                                lineno=exc.lineno) from exc
        self.variables = frozenset(meta.find_undeclared_variables(tree))
        self.content_format = (CONTENT_OPENAI if _ContentScan(tree).parts_aware()
                               else CONTENT_STRING)
        self.special_tokens: dict[str, str] = {"bos_token": bos_token, "eos_token": eos_token}
        self.special_tokens.update(special or {})
        self.tool_use = tool_use

    def __repr__(self) -> str:
        return f"<ChatTemplate {self.content_format} {len(self.source)} chars>"

    def render(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        tools: Sequence[Any] | None = None,
        documents: Sequence[Any] | None = None,
        add_generation_prompt: bool = True,
        continue_final_message: bool = False,
        chat_template_kwargs: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> str:
        """The prompt text for ``messages``.

        Args:
            messages: OpenAI chat messages (content a string, a list of parts or null).
            tools: OpenAI tool definitions, passed to the template as given.
            documents: RAG documents (Command-R, Granite), passed as given.
            add_generation_prompt: end with the assistant header. Ignored (off) under
                ``continue_final_message``, which HF refuses to combine with it.
            continue_final_message: leave the final message open for the model to go on.
            chat_template_kwargs: the request's field, merged as top-level variables
                (may override special tokens, not the names in ``RESERVED_VARIABLES``).
            **kwargs: further top-level variables, merged after chat_template_kwargs.

        Returns:
            the rendered prompt (no tokenization; special tokens appear as text).

        Raises:
            TemplateError: the template raised or failed, a reserved name was passed in
                chat_template_kwargs, or the final message cannot be found for
                continue_final_message. Any other exception is a bug.
        """
        if tools is not None and self.tool_use is not None:
            return self.tool_use.render(
                messages, tools=tools, documents=documents,
                add_generation_prompt=add_generation_prompt,
                continue_final_message=continue_final_message,
                chat_template_kwargs=chat_template_kwargs, **kwargs,
            )
        extra: dict[str, Any] = {}
        for source in (chat_template_kwargs or {}), kwargs:
            for key, value in source.items():
                if key in RESERVED_VARIABLES:
                    raise TemplateError(f"chat_template_kwargs may not set {key!r}")
                extra[key] = value
        prepared = prepare_messages(messages, self.content_format)
        if continue_final_message:
            return self._render_continued(prepared, tools, documents, extra)
        return self._render(prepared, tools, documents, add_generation_prompt, False, extra)

    def _render(self, messages: list[dict[str, Any]], tools: Any, documents: Any,
                add_generation_prompt: bool, continue_final_message: bool,
                extra: Mapping[str, Any]) -> str:
        context: dict[str, Any] = dict(self.special_tokens)
        context.update(extra)
        context.update(
            messages=messages,
            tools=list(tools) if tools is not None else None,
            documents=list(documents) if documents is not None else None,
            add_generation_prompt=bool(add_generation_prompt),
            continue_final_message=bool(continue_final_message),
        )
        try:
            return self._template.render(context)
        except TemplateError as exc:  # raise_exception from the template
            if exc.lineno is None:
                exc.lineno = _template_lineno(exc)
            raise
        except Exception as exc:  # a template is data: any failure is the request's 400
            lineno = _template_lineno(exc)
            where = f" at line {lineno}" if lineno else ""
            raise TemplateError(f"chat template failed{where}: {type(exc).__name__}: {exc}",
                                lineno=lineno) from exc

    def _render_continued(self, messages: list[dict[str, Any]], tools: Any, documents: Any,
                          extra: Mapping[str, Any]) -> str:
        if not messages:
            raise TemplateError("continue_final_message: the conversation is empty")
        final = dict(messages[-1])
        content = final.get("content")
        if isinstance(content, str):
            text = content
            final["content"] = content + _CONTINUE_TAG
        elif isinstance(content, (list, tuple)):
            parts = list(content)
            for i in range(len(parts) - 1, -1, -1):
                part = parts[i]
                if isinstance(part, Mapping) and isinstance(part.get("text"), str):
                    text = part["text"]
                    parts[i] = {**part, "text": text + _CONTINUE_TAG}
                    break
            else:
                raise TemplateError("continue_final_message: the final message has no text to continue")
            final["content"] = parts
        else:
            raise TemplateError("continue_final_message: the final message has no content to continue")
        rendered = self._render([*messages[:-1], final], tools, documents, False, True, extra)
        tag = _CONTINUE_TAG.strip()
        if text.strip() not in rendered or tag not in rendered:
            raise TemplateError("continue_final_message: the final message does not appear in the "
                                "rendered prompt (the template changes or drops it)")
        at = rendered.rindex(tag)
        if rendered.startswith(_CONTINUE_TAG, at):
            return rendered[:at]  # the template kept the text as given
        return rendered[:at].rstrip()  # it trimmed the tag's space, so trim the text too


# --- loading from a model folder -----------------------------------------------------

def _token_text(value: Any) -> str | None:
    # tokenizer_config.json writes a token as "…" or as an AddedToken object
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping) and isinstance(value.get("content"), str):
        return value["content"]
    return None


def _read_json(path: str) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except ValueError as exc:
        raise TemplateError(f"{path}: not valid JSON: {exc}") from exc


def _specials(config: Mapping[str, Any]) -> dict[str, str]:
    out = {}
    for key, value in config.items():
        if key.endswith("_token") and key != "chat_template":
            text = _token_text(value)
            if text is not None:
                out[key] = text
    return out


def load_template(path: str, *, now: Callable[[], _dt.datetime] | None = None) -> ChatTemplate:
    """The chat template of a model folder or a template file.

    A folder is searched as HF does, first match wins: ``chat_template.jinja``,
    ``chat_template.json`` (``{"chat_template": "..."}``), then ``tokenizer_config.json``'s
    ``chat_template``: a string, or a list of ``{"name", "template"}`` where ``default``
    is used and ``tool_use`` replaces it when a request has tools. Special tokens
    (``bos_token``, ``eos_token``, any ``*_token``; a string or an ``{"content": ...}``
    object) come from the folder's ``tokenizer_config.json`` when there is one. A file
    path may name a ``.jinja`` file (its folder's tokenizer_config.json still supplies
    the tokens) or one of those JSON files.

    Raises:
        TemplateError: no template found, a named list without ``default``, bad JSON, or
            a template that does not compile.
        OSError: the path cannot be read.
    """
    if os.path.isdir(path):
        folder, file = path, None
    else:
        folder, file = os.path.dirname(path) or ".", path
    config_path = os.path.join(folder, "tokenizer_config.json")
    config = _read_json(config_path) if os.path.isfile(config_path) else {}
    if not isinstance(config, Mapping):
        raise TemplateError(f"{config_path}: not a JSON object")

    source: Any = None
    candidates = [file] if file else [
        os.path.join(folder, "chat_template.jinja"),
        os.path.join(folder, "chat_template.json"),
        config_path,
    ]
    origin = None
    for cand in candidates:
        if not os.path.isfile(cand):
            if file:
                raise FileNotFoundError(cand)
            continue
        if cand.endswith(".json"):
            data = config if os.path.abspath(cand) == os.path.abspath(config_path) else _read_json(cand)
            if isinstance(data, Mapping):
                source = data.get("chat_template")
            elif isinstance(data, str):
                source = data
        else:
            with open(cand, encoding="utf-8") as f:
                source = f.read()
        if source is not None:
            origin = cand
            break
    if source is None:
        raise TemplateError(f"no chat template in {path}")

    return _compile(source, config, origin, now)


def template_from_files(files: Mapping[str, bytes], *, origin: str = "tokenizer bundle",
                        now: Callable[[], _dt.datetime] | None = None) -> ChatTemplate:
    """The chat template among a model's files given by base name (a worker's
    ``GetTokenizer`` zip), searched as ``load_template`` searches a folder:
    ``chat_template.jinja``, ``chat_template.json``, then ``tokenizer_config.json``'s
    ``chat_template``; special tokens from ``tokenizer_config.json``.

    Raises:
        TemplateError: no template among the files, bad JSON or UTF-8, or a template
            that does not compile.
    """
    def text(name: str) -> str:
        try:
            return files[name].decode("utf-8")
        except UnicodeDecodeError as exc:
            raise TemplateError(f"{origin}: {name} is not UTF-8") from exc

    def parsed(name: str) -> Any:
        try:
            return json.loads(text(name))
        except ValueError as exc:
            raise TemplateError(f"{origin}: {name} is not valid JSON: {exc}") from exc

    config = parsed("tokenizer_config.json") if "tokenizer_config.json" in files else {}
    if not isinstance(config, Mapping):
        raise TemplateError(f"{origin}: tokenizer_config.json is not a JSON object")
    source: Any = None
    where = origin
    if "chat_template.jinja" in files:
        source, where = text("chat_template.jinja"), f"{origin}: chat_template.jinja"
    if source is None and "chat_template.json" in files:
        data = parsed("chat_template.json")
        source = data.get("chat_template") if isinstance(data, Mapping) else data if isinstance(data, str) else None
        where = f"{origin}: chat_template.json"
    if source is None:
        source, where = config.get("chat_template"), f"{origin}: tokenizer_config.json"
    if source is None:
        raise TemplateError(f"no chat template in {origin}")
    return _compile(source, config, where, now)


def _compile(source: Any, config: Mapping[str, Any], origin: Any,
             now: Callable[[], _dt.datetime] | None) -> ChatTemplate:
    """``source`` (a string, or HF's list of named templates) compiled with the special
    tokens of ``config`` (a parsed tokenizer_config.json)."""
    specials = _specials(config)
    bos = specials.pop("bos_token", "")
    eos = specials.pop("eos_token", "")

    def build(text: Any, tool_use: ChatTemplate | None = None) -> ChatTemplate:
        if not isinstance(text, str):
            raise TemplateError(f"{origin}: chat_template is not a string")
        return ChatTemplate(text, bos_token=bos, eos_token=eos, special=specials, now=now,
                            tool_use=tool_use)

    if isinstance(source, list):
        named = {}
        for entry in source:
            if isinstance(entry, Mapping) and isinstance(entry.get("name"), str):
                named[entry["name"]] = entry.get("template")
        if "default" not in named:
            raise TemplateError(f"{origin}: named chat templates without a 'default' "
                                f"(found {sorted(named)})")
        tool_use = build(named["tool_use"]) if "tool_use" in named else None
        return build(named["default"], tool_use)
    return build(source)
