"""The Renderer: a sandboxed, strict jinja2 environment over the templates folder, with locale fallback.

Templates are compiled once and kept (`auto_reload=False`, one cache entry per file, plus a cache of
the resolved files per (template, channel, locale)), so a render costs what the template itself costs.

A render is bounded in time and size, whatever the template does (`winback validate` and every send
render templates someone wrote): loops, calls and macro recursion check a deadline (`max_render_s`);
`'x' * 10**9`, `10 ** 10 ** 10`, a huge format width or `center`/`indent` width is refused before
it is computed; string concatenation, filter results and the whole output are held under
`max_output_chars`. Going past a bound is a `RenderError` that says which one — and a template that ran
out of time fails at once on later renders in this run (the next thousand rows do not each wait).
"""

from __future__ import annotations

import contextvars
import json
import math
import os
import re
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jinja2
from jinja2 import FileSystemLoader, StrictUndefined, Template, nodes, pass_eval_context
from jinja2.filters import do_center, do_format, do_indent, do_replace
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.visitor import NodeTransformer

from winback.errors import ConfigError
from winback.render.formatting import FILTERS, normalize_locale
from winback.render.samples import sample_context
from winback.render.sms import sms_segments
from winback.vocab import CHANNELS, OFFER_KINDS

DEFAULT_LOCALE_FALLBACK: dict[str, str] = {"zh-*": "zh-CN", "*": "en-US"}
DEFAULT_MAX_SMS_SEGMENTS = 3

# Files per channel, the first one decides whether a locale folder serves the channel.
CHANNEL_FILES: dict[str, tuple[str, ...]] = {
    "email": ("email.html", "email.subject", "email.txt"),
    "sms": ("sms.txt",),
    "call_task": ("call.txt",),
    "webhook": ("webhook.txt",),
}
# A webhook (app push, chat bot, CRM) carries a short text: its own file, else the SMS text.
_WEBHOOK_FALLBACK = "sms.txt"
KNOWN_FILES = frozenset(f for files in CHANNEL_FILES.values() for f in files)
# Words that show an SMS carries an opt-out instruction (CN regulation and US carriers require one).
SMS_OPT_OUT_MARKERS = ("STOP", "退订", "拒收")

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_BLANK_LINES = re.compile(r"\n[ \t]*\n(?:[ \t]*\n)+")
_SPACE = re.compile(r"\s+")


class RenderError(ConfigError):
    """A template failed to render (unknown variable, sandbox violation, bad filter input)."""


# -- bounds on one render ---------------------------------------------------------------------------------

DEFAULT_MAX_RENDER_S = 1.0  # a real message renders in milliseconds
DEFAULT_MAX_OUTPUT_CHARS = 1_000_000  # per part (subject, text, html); an email is ~100 KB at most
_MAX_WIDTH = 10_000  # a padding or format width no message needs more of


class RenderLimitError(Exception):
    """A render went past its time or size bound (raised inside the template, reported as a RenderError)."""


class _Bounds:
    __slots__ = ("deadline", "max_chars", "max_render_s", "ticks")

    def __init__(self, max_render_s: float, max_chars: int) -> None:
        self.max_render_s = max_render_s
        self.deadline = time.monotonic() + max_render_s
        self.max_chars = max_chars
        self.ticks = 0

    def tick(self) -> None:
        """Count one step (a loop iteration, a call); look at the clock every 64 steps."""
        self.ticks += 1
        if not self.ticks & 63 and time.monotonic() > self.deadline:
            raise RenderLimitError(f"rendering took longer than {self.max_render_s:g} s (a loop or recursion "
                                   "too long?)")

    def size(self, value: Any) -> Any:
        if isinstance(value, str | list | tuple) and len(value) > self.max_chars:
            raise RenderLimitError(f"a value of {len(value):,} characters or items is over the render limit of "
                                   f"{self.max_chars:,}")
        return value


_BOUNDS: contextvars.ContextVar[_Bounds | None] = contextvars.ContextVar("winback_render_bounds", default=None)


def _loop_guard(iterable: Any) -> Any:
    """What every `{% for %}` iterates over: the same items, with the render's deadline checked."""
    bounds = _BOUNDS.get()
    if bounds is None:
        yield from iterable
        return
    for item in iterable:
        bounds.tick()
        yield item


def _size_guard(value: Any) -> Any:
    bounds = _BOUNDS.get()
    return bounds.size(value) if bounds is not None else value


def _width(value: Any) -> None:
    if isinstance(value, int) and abs(value) > _MAX_WIDTH:
        raise RenderLimitError(f"a width of {value:,} is over the render limit of {_MAX_WIDTH:,}")


_FORMAT_WIDTH = re.compile(r"\d{" + str(len(str(_MAX_WIDTH)) + 1) + ",}")  # a number over _MAX_WIDTH


def _check_format_string(fmt: str) -> None:
    """Refuse `%0999999999d` / `{:>999999999}`: the width alone would make a gigabyte string."""
    if _FORMAT_WIDTH.search(fmt):
        raise RenderLimitError(f"a format width over the render limit of {_MAX_WIDTH:,}")


def _center(value: str, width: int = 80) -> str:
    _width(width)
    return do_center(value, width)


def _indent(value: str, width: int | str = 4, first: bool = False, blank: bool = False) -> str:
    _width(width if isinstance(width, int) else len(width))
    return do_indent(value, width, first, blank)


def _format(value: str, *args: Any, **kwargs: Any) -> str:
    _check_format_string(str(value))
    for arg in (*args, *kwargs.values()):
        _width(arg)
    return do_format(value, *args, **kwargs)


@pass_eval_context
def _replace(eval_ctx, value: str, old: str, new: str, count: int | None = None) -> str:
    bounds = _BOUNDS.get()
    text, old_text, new_text = str(value), str(old), str(new)
    if bounds is not None and len(new_text) > len(old_text):  # each occurrence grows by the difference
        occurrences = len(text) + 1 if not old_text else text.count(old_text)
        if count is not None and count >= 0:
            occurrences = min(occurrences, count)
        if len(text) + occurrences * (len(new_text) - len(old_text)) > bounds.max_chars:
            raise RenderLimitError(f"a replace over the render limit of {bounds.max_chars:,} characters")
    return do_replace(eval_ctx, value, old, new, count)


class _Guards(NodeTransformer):
    """Passes every loop's iterable through `_loop_guard` and every `~` concatenation through
    `_size_guard`, as filters: a filter compiles to a direct call, cheaper than a sandboxed call."""

    def _wrap(self, guard: str, node: nodes.Expr) -> nodes.Filter:
        return nodes.Filter(node, guard, [], [], None, None, lineno=node.lineno)

    def visit_For(self, node: nodes.For) -> nodes.Node:
        self.generic_visit(node)
        node.iter = self._wrap(_LOOP_GUARD, node.iter)
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:
        self.generic_visit(node)
        return self._wrap(_SIZE_GUARD, node)


_LOOP_GUARD = "__winback_loop_guard"
_SIZE_GUARD = "__winback_size_guard"


class _BoundedSandbox(ImmutableSandboxedEnvironment):
    """Jinja's immutable sandbox, plus the render bounds (see the module docstring)."""

    intercepted_binops = frozenset(["*", "**", "%", "+"])

    def _parse(self, source, name, filename):
        return _Guards().visit(super()._parse(source, name, filename))

    def call(__self, __context, __obj, *args, **kwargs):  # the names are Jinja's: keyword arguments pass through
        bounds = _BOUNDS.get()
        if bounds is not None:
            bounds.tick()
        result = super().call(__context, __obj, *args, **kwargs)
        return bounds.size(result) if bounds is not None else result

    def call_binop(self, context, operator, left, right):
        if _BOUNDS.get() is not None:
            _check_binop(operator, left, right, _BOUNDS.get().max_chars)
        return _size_guard(super().call_binop(context, operator, left, right))

    def wrap_str_format(self, value):
        wrapped = super().wrap_str_format(value)
        if wrapped is None:
            return None
        _check_format_string(value.__self__)
        return wrapped


def _check_binop(operator: str, left: Any, right: Any, max_chars: int) -> None:
    """Refuse, before computing it, a result that would blow the size bound or take for ever."""
    sequence = (str, list, tuple)
    if operator == "*":
        if isinstance(left, sequence) and isinstance(right, int) or isinstance(right, sequence) and isinstance(left, int):
            seq, times = (left, right) if isinstance(left, sequence) else (right, left)
            if len(seq) * max(times, 0) > max_chars:
                raise RenderLimitError(f"a repetition of {len(seq):,} × {times:,} is over the render limit of "
                                       f"{max_chars:,}")
    elif operator == "**" and isinstance(left, int | float) and isinstance(right, int | float):
        if abs(left) > 1 and right > 0 and right * math.log2(abs(left)) > 4096:
            raise RenderLimitError("a power over the render limit (more than 4096 bits)")
    elif operator == "%" and isinstance(left, str):
        _check_format_string(left)
        if "*" in left:  # `%*d`: the width comes from the arguments
            for arg in right if isinstance(right, tuple) else (right,):
                _width(arg)


@dataclass(frozen=True, slots=True)
class RenderedMessage:
    """One rendered message: what a channel adapter sends."""

    template: str
    channel: str
    locale: str  # the locale actually used after fallback
    subject: str | None
    html: str | None
    text: str
    sms_segments: int | None
    sms_encoding: str | None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Problem:
    """One finding of `Renderer.check`: `error` (the template is unusable) or `warning`."""

    severity: str
    file: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}: {'warning: ' if self.severity == 'warning' else ''}{self.message}"


@dataclass(frozen=True, slots=True)
class _Compiled:
    locale: str
    subject: Template | None
    html: Template | None
    text: Template


def _autoescape(name: str | None) -> bool:
    # Only HTML is escaped: subjects, plain text and SMS go out as typed (escaping them would show &amp;).
    return bool(name) and name.endswith(".html")


def _clean_text(text: str) -> str:
    # Conditionals leave runs of blank lines; keep at most one, and no leading/trailing blank lines.
    return _BLANK_LINES.sub("\n\n", text).strip()


class Renderer:
    """Render templates from `templates_dir` per channel and locale (see `winback.render` for the layout)."""

    def __init__(self, templates_dir: str | os.PathLike[str], locale_fallback: Mapping[str, str] | None = None,
                 *, max_sms_segments: int = DEFAULT_MAX_SMS_SEGMENTS, unsubscribe_mailto: str | None = None,
                 max_render_s: float = DEFAULT_MAX_RENDER_S, max_output_chars: int = DEFAULT_MAX_OUTPUT_CHARS) -> None:
        self.templates_dir = Path(templates_dir)
        if not self.templates_dir.is_dir():
            raise ConfigError("templates folder not found", path=str(self.templates_dir))
        fallback = DEFAULT_LOCALE_FALLBACK if locale_fallback is None else locale_fallback
        self.locale_fallback: dict[str, str] = {}
        for pattern, target in fallback.items():
            self.locale_fallback[str(pattern)] = normalize_locale(target)
        self.max_sms_segments = int(max_sms_segments)
        self.unsubscribe_mailto = unsubscribe_mailto
        self.max_render_s = float(max_render_s)
        self.max_output_chars = int(max_output_chars)
        self._out_of_time: dict[tuple[str, str, str], str] = {}  # templates that ran out of time, and why
        self.env = _BoundedSandbox(
            loader=FileSystemLoader(str(self.templates_dir), encoding="utf-8"),
            undefined=StrictUndefined,
            autoescape=_autoescape,
            auto_reload=False,
            cache_size=-1,
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=False,
        )
        self.env.filters.update(FILTERS)
        self.env.filters.update({"center": _center, "indent": _indent, "format": _format, "replace": _replace,
                                 _LOOP_GUARD: _loop_guard, _SIZE_GUARD: _size_guard})
        self._compiled: dict[tuple[str, str, str], _Compiled] = {}
        self._inventory: dict[str, dict[str, frozenset[str]]] = {}

    # ----- what is there -------------------------------------------------------------------------
    def templates(self) -> list[str]:
        """The template names: every folder of the templates dir not starting with `_` or `.`."""
        return sorted(p.name for p in self.templates_dir.iterdir()
                      if p.is_dir() and not p.name.startswith(("_", ".")))

    def inventory(self, template: str) -> dict[str, frozenset[str]]:
        """The locale folders of a template and the files in each: `{"zh-CN": {"email.html", …}}`."""
        inv = self._inventory.get(template)
        if inv is None:
            if not _NAME_RE.match(template or ""):
                raise ConfigError(f"not a template name: {template!r}")
            folder = self.templates_dir / template
            if not folder.is_dir():
                raise ConfigError(f"template {template!r} not found",
                                  path=str(folder), hint=f"templates: {', '.join(self.templates()) or '(none)'}")
            inv = {p.name: frozenset(f.name for f in p.iterdir() if f.is_file())
                   for p in sorted(folder.iterdir()) if p.is_dir() and not p.name.startswith(("_", "."))}
            self._inventory[template] = inv
        return inv

    def channels(self, template: str, locale: str) -> list[str]:
        """The channels a template's locale folder serves (by which files it has)."""
        files = self.inventory(template).get(locale, frozenset())
        out = [c for c, names in CHANNEL_FILES.items() if names[0] in files]
        if "webhook" not in out and _WEBHOOK_FALLBACK in files:
            out.append("webhook")
        return out

    # ----- locale fallback -----------------------------------------------------------------------
    def locale_candidates(self, locale: str | None) -> list[str]:
        """Locales to try, in order: exact, the fallback rules (`zh-*` → zh-CN), same language, the `*` rule."""
        out: list[str] = []
        try:
            exact = normalize_locale(locale) if locale else None
        except ConfigError:
            exact = None  # an unreadable locale in the data falls through to the default
        if exact:
            out.append(exact)
            for pattern, target in self.locale_fallback.items():
                if pattern != "*" and fnmatchcase(exact.lower(), pattern.lower()):
                    out.append(target)
            out.append(exact.split("-")[0])  # a same-language folder, matched in resolve_locale
        if "*" in self.locale_fallback:
            out.append(self.locale_fallback["*"])
        return list(dict.fromkeys(out))

    def resolve_locale(self, template: str, channel: str, locale: str | None) -> str:
        """The locale folder used for (template, channel, customer locale) after fallback."""
        if channel not in CHANNELS:
            raise ConfigError(f"unknown channel {channel!r} (one of {', '.join(CHANNELS)})")
        inv = self.inventory(template)
        serving = [loc for loc in inv if channel in self.channels(template, loc)]
        for cand in self.locale_candidates(locale):
            if cand in serving:
                return cand
            if "-" not in cand:  # bare language: any folder of that language, in name order
                same = [loc for loc in serving if loc.split("-")[0].lower() == cand.lower()]
                if same:
                    return sorted(same)[0]
        raise ConfigError(
            f"template {template!r} has no {channel} files for locale {locale!r} or its fallbacks "
            f"({', '.join(self.locale_candidates(locale)) or 'none'})",
            path=str(self.templates_dir / template),
            hint=f"{channel} needs {', '.join(CHANNEL_FILES[channel])} in a locale folder",
        )

    # ----- rendering -----------------------------------------------------------------------------
    def _load(self, name: str) -> Template:
        try:
            return self.env.get_template(name)
        except jinja2.TemplateSyntaxError as exc:
            raise ConfigError(f"line {exc.lineno}: {exc.message}",
                              path=str(self.templates_dir / (exc.name or name))) from None
        except jinja2.TemplateNotFound as exc:
            raise ConfigError(f"template file not found: {exc.name}", path=str(self.templates_dir / name)) from None

    def _prepare(self, template: str, channel: str, locale: str | None) -> _Compiled:
        resolved = self.resolve_locale(template, channel, locale)
        files = self.inventory(template)[resolved]
        base = f"{template}/{resolved}/"
        if channel == "email":
            missing = [f for f in CHANNEL_FILES["email"] if f not in files]
            if missing:
                raise ConfigError(f"email needs {', '.join(missing)} as well", path=str(self.templates_dir / base))
            compiled = _Compiled(resolved, self._load(base + "email.subject"), self._load(base + "email.html"),
                                 self._load(base + "email.txt"))
        else:
            name = CHANNEL_FILES[channel][0]
            if channel == "webhook" and name not in files:
                name = _WEBHOOK_FALLBACK
            subject = None
            if channel == "webhook" and "email.subject" in files:
                subject = self._load(base + "email.subject")
            compiled = _Compiled(resolved, subject, None, self._load(base + name))
        self._compiled[(template, channel, locale or "")] = compiled
        return compiled

    def render(self, template: str, channel: str, locale: str | None, context: Mapping[str, Any] | str, *,
               unsubscribe_url: str | None = None, unsubscribe_mailto: str | None = None) -> RenderedMessage:
        """Render one message; `context` is the plan's render context (a dict or its JSON string)."""
        compiled = self._compiled.get((template, channel, locale or "")) or self._prepare(template, channel, locale)
        if isinstance(context, str):
            try:
                context = json.loads(context)
            except ValueError as exc:
                raise RenderError(f"context is not valid JSON ({exc})", path=template) from None
        variables = dict(context)
        variables["locale"] = compiled.locale
        variables["channel"] = channel
        variables["unsubscribe_url"] = unsubscribe_url
        where = (template, channel, compiled.locale)
        if where in self._out_of_time:
            raise RenderError(self._out_of_time[where], path=f"{template}/{compiled.locale}", field=channel)
        token = _BOUNDS.set(_Bounds(self.max_render_s, self.max_output_chars))
        try:
            text = _clean_text(self._render_part(compiled.text, variables))
            subject = None
            if compiled.subject is not None:
                # One line: a newline in a header would let data inject headers.
                subject = _SPACE.sub(" ", self._render_part(compiled.subject, variables)).strip()
            html = self._render_part(compiled.html, variables) if compiled.html is not None else None
        except RenderLimitError as exc:
            if "took longer" in str(exc):
                self._out_of_time[where] = f"over a render bound: {exc}"
            raise RenderError(f"over a render bound: {exc}", path=f"{template}/{compiled.locale}",
                              field=channel) from None
        except RecursionError:
            raise RenderError("over a render bound: recursion too deep", path=f"{template}/{compiled.locale}",
                              field=channel) from None
        except Exception as exc:  # any failure inside a template is a template problem for this row
            raise RenderError(f"{type(exc).__name__}: {exc}",
                              path=f"{template}/{compiled.locale}", field=channel) from None
        finally:
            _BOUNDS.reset(token)
        segments = encoding = None
        headers: dict[str, str] = {}
        if channel == "sms":
            segments, encoding = sms_segments(text)
        elif channel == "email" and unsubscribe_url:
            headers = self.unsubscribe_headers(unsubscribe_url, unsubscribe_mailto or self.unsubscribe_mailto)
        return RenderedMessage(template, channel, compiled.locale, subject, html, text, segments, encoding, headers)

    def _render_part(self, template: Template, variables: dict[str, Any]) -> str:
        """One part, its output counted as it is produced: past `max_output_chars` the render stops.

        What `Template.render` does (its render function's chunks, joined), with the count in between.
        """
        out: list[str] = []
        append, size, limit = out.append, 0, self.max_output_chars
        for chunk in template.root_render_func(template.new_context(variables)):
            size += len(chunk)
            if size > limit:
                raise RenderLimitError(f"the output is over the render limit of {limit:,} characters")
            append(chunk)
        return "".join(out)

    def render_many(self, rows: Iterable[Mapping[str, Any]]) -> Iterator[RenderedMessage]:
        """Render a batch: each row has `template`, `channel`, `locale`, `context`, optional `unsubscribe_url`.

        A plan DataFrame works too (`renderer.render_many(plan.to_dict("records"))`). Lazy, so a
        million rows never sit in memory at once.
        """
        render = self.render
        for row in rows:
            yield render(row["template"], row["channel"], row["locale"], row["context"],
                         unsubscribe_url=row.get("unsubscribe_url"))

    @staticmethod
    def unsubscribe_headers(url: str, mailto: str | None = None) -> dict[str, str]:
        """RFC 2369 List-Unsubscribe (https and, if given, mailto) and RFC 8058 one-click POST."""
        targets = [f"<{url}>"]
        if mailto:
            address = mailto.removeprefix("mailto:")
            token = url.rstrip("/").rsplit("/", 1)[-1] if "/unsubscribe/" in url else ""
            subject = quote(f"unsubscribe {token}".strip())
            targets.append(f"<mailto:{address}?subject={subject}>")
        headers = {"List-Unsubscribe": ", ".join(targets)}
        if url.startswith("https://"):  # RFC 8058: one-click needs an https URI
            headers["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
        return headers

    # ----- validation ----------------------------------------------------------------------------
    def check(self, template: str, *, offer_kind: str | None = None,
              extra_customer_fields: tuple[str, ...] = ()) -> list[Problem]:
        """Every problem of a template: parse errors, renders that fail on a contract context, missing
        email parts or unsubscribe link, unknown files, and SMS over the segment maximum (a warning).

        `offer_kind` is the kind of offer the template carries; by default the template's name when it
        is an offer kind, else any. `extra_customer_fields` are extra customer columns the data carries.
        """
        problems: list[Problem] = []
        folder = f"{self.templates_dir.name}/{template}"
        try:
            inv = self.inventory(template)
        except ConfigError as exc:
            return [Problem("error", folder, exc.reason)]
        if not inv:
            return [Problem("error", folder, "no locale folders (expected e.g. zh-CN/ and en-US/)")]
        kind = offer_kind or (template if template in OFFER_KINDS else None)
        kinds: list[str | None] = [kind or "any"]
        if kind in (None, "reminder"):
            kinds.append(None)  # a reminder or a call may come without any offer
        for locale, files in inv.items():
            where = f"{folder}/{locale}"
            try:
                if normalize_locale(locale) != locale:
                    problems.append(Problem("error", where, f"locale folder should be named {normalize_locale(locale)}"))
                    continue
            except ConfigError as exc:
                problems.append(Problem("error", where, exc.reason))
                continue
            for name in sorted(files - KNOWN_FILES):
                problems.append(Problem("warning", f"{where}/{name}",
                                        f"unknown file (known: {', '.join(sorted(KNOWN_FILES))})"))
            parsed = True
            for name in sorted(files & KNOWN_FILES):
                try:
                    self._load(f"{template}/{locale}/{name}")
                except ConfigError as exc:
                    problems.append(Problem("error", f"{where}/{name}", exc.reason))
                    parsed = False
            email_files = files & set(CHANNEL_FILES["email"])
            if email_files and email_files != set(CHANNEL_FILES["email"]):
                missing = sorted(set(CHANNEL_FILES["email"]) - email_files)
                problems.append(Problem("error", where, f"email needs {', '.join(missing)} as well"))
                parsed = False
            channels = self.channels(template, locale)
            if not channels:
                problems.append(Problem("error", where, "no channel files (email.*, sms.txt, call.txt, webhook.txt)"))
            if not parsed:
                continue
            problems.extend(self._check_renders(template, locale, channels, kinds, extra_customer_fields))
        return problems

    def _check_renders(self, template: str, locale: str, channels: list[str], kinds: list[str | None],
                       extra: tuple[str, ...]) -> list[Problem]:
        problems: list[Problem] = []
        where = f"{self.templates_dir.name}/{template}/{locale}"
        url = "https://example.invalid/unsubscribe/SAMPLE.TOKEN"
        files = self.inventory(template)[locale]
        for channel in channels:
            if channel == "webhook" and CHANNEL_FILES["webhook"][0] not in files:
                continue  # renders sms.txt, checked as the sms channel
            worst = 0
            seen: set[str] = set()
            for k in kinds:
                for sparse in (False, True):
                    ctx = sample_context(locale, k, sparse=sparse, extra_customer_fields=extra)
                    label = f"{'sparse' if sparse else 'complete'} sample context{'' if k else ', offer null'}"
                    try:
                        msg = self.render(template, channel, locale, ctx, unsubscribe_url=url)
                    except ConfigError as exc:
                        # One failure per channel is enough to act on; the others repeat it.
                        if f"{channel} failed" not in seen:
                            seen.add(f"{channel} failed")
                            problems.append(Problem("error", where, f"{channel} fails with the {label}: {exc.reason}"))
                        continue
                    if msg.locale != locale:
                        continue
                    if channel == "email":
                        for part, body in (("email.html", msg.html), ("email.txt", msg.text)):
                            if url not in (body or "") and f"{part} unsub" not in seen:
                                seen.add(f"{part} unsub")
                                problems.append(Problem("error", f"{where}/{part}",
                                                        "does not show the unsubscribe link (unsubscribe_url)"))
                        if not msg.subject:
                            problems.append(Problem("error", f"{where}/email.subject", "renders empty"))
                    if channel == "sms":
                        worst = max(worst, msg.sms_segments or 0)
                        if not any(m in msg.text for m in SMS_OPT_OUT_MARKERS) and "sms optout" not in seen:
                            seen.add("sms optout")
                            problems.append(Problem("warning", f"{where}/sms.txt",
                                                    "no opt-out instruction (e.g. 回T退订 / Reply STOP to opt out)"))
                    if not msg.text.strip():
                        problems.append(Problem("error", where, f"{channel} text renders empty"))
            if worst > self.max_sms_segments:
                problems.append(Problem("warning", f"{where}/sms.txt",
                                        f"SMS is {worst} segments with the sample context, more than the "
                                        f"maximum {self.max_sms_segments}"))
        return problems

    def validate(self, template: str, *, offer_kind: str | None = None,
                 extra_customer_fields: tuple[str, ...] = ()) -> list[str]:
        """The problems of a template as strings (`file: message`; warnings read `file: warning: …`)."""
        return [str(p) for p in self.check(template, offer_kind=offer_kind,
                                           extra_customer_fields=extra_customer_fields)]

    def validate_all(self) -> dict[str, list[str]]:
        """`validate` for every template folder."""
        return {name: self.validate(name) for name in self.templates()}
