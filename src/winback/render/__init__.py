"""Rendering: sandboxed, strict jinja2 templates per channel and locale, babel formatting, SMS
segments and signed unsubscribe links.

Templates folder layout (`templates/README.md` says the same for template writers)::

    templates/
      <template>/                 one folder per template, e.g. percent_off/, service_recovery/
        <locale>/                 BCP 47 tag: zh-CN/, en-US/, …
          email.subject           one line (whitespace is collapsed; newlines never reach the header)
          email.html              HTML body, autoescaped; extends _layouts/<locale>/email.html
          email.txt               plain-text alternative
          sms.txt                 SMS body (segments counted, warned above the maximum)
          call.txt                talking points for the account manager (`call_task` channel), optional
          webhook.txt             short text for the `webhook` channel, optional (else sms.txt)
      _layouts/                   shared layouts, macros and partials (folders starting with `_` are not templates)

Every template sees the render context of docs/CONTRACTS.md (`customer`, `offer`, `coupon_code`,
`history`, `brand`, `survey_url`, `step`) plus `locale` (the folder used), `channel` and
`unsubscribe_url` (None unless given). Filters: `money(currency, locale)`, `date(locale, format)`,
`percent(locale)` (a fraction: 0.15 → 15%), `zhe` (15 % off → 8.5折), `display_name(locale)`,
`category_name(locale)` (`books` → 图书 in zh-*; unknown categories print as they are).

Locale fallback per (template, channel): the customer's exact locale, then the fallback rules in
order (default `{"zh-*": "zh-CN", "*": "en-US"}`; glob patterns), then any folder of the same language,
then the `*` rule. Only HTML is autoescaped; undefined variables raise (StrictUndefined), so
`Renderer.validate` — which renders every file with complete and sparse sample contexts — catches a
template that uses a variable the contract does not provide.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = [
    "CHANNEL_FILES",
    "DEFAULT_LOCALE_FALLBACK",
    "DEFAULT_MAX_SMS_SEGMENTS",
    "InvalidUnsubscribeToken",
    "Problem",
    "RenderError",
    "RenderedMessage",
    "Renderer",
    "category_name",
    "display_name",
    "format_date",
    "make_unsubscribe_token",
    "money",
    "normalize_locale",
    "percent",
    "sample_context",
    "sms_encoding",
    "sms_segments",
    "unsubscribe_url",
    "verify_unsubscribe_token",
    "zhe",
]

if TYPE_CHECKING:
    from winback.render.formatting import (
        category_name,
        display_name,
        format_date,
        money,
        normalize_locale,
        percent,
        zhe,
    )
    from winback.render.renderer import (
        CHANNEL_FILES,
        DEFAULT_LOCALE_FALLBACK,
        DEFAULT_MAX_SMS_SEGMENTS,
        Problem,
        RenderedMessage,
        Renderer,
        RenderError,
    )
    from winback.render.samples import sample_context
    from winback.render.sms import sms_encoding, sms_segments
    from winback.render.tokens import (
        InvalidUnsubscribeToken,
        make_unsubscribe_token,
        unsubscribe_url,
        verify_unsubscribe_token,
    )

_HOME = {
    "category_name": "formatting",
    "display_name": "formatting",
    "format_date": "formatting",
    "money": "formatting",
    "normalize_locale": "formatting",
    "percent": "formatting",
    "zhe": "formatting",
    "CHANNEL_FILES": "renderer",
    "DEFAULT_LOCALE_FALLBACK": "renderer",
    "DEFAULT_MAX_SMS_SEGMENTS": "renderer",
    "Problem": "renderer",
    "RenderedMessage": "renderer",
    "Renderer": "renderer",
    "RenderError": "renderer",
    "sample_context": "samples",
    "sms_encoding": "sms",
    "sms_segments": "sms",
    "InvalidUnsubscribeToken": "tokens",
    "make_unsubscribe_token": "tokens",
    "unsubscribe_url": "tokens",
    "verify_unsubscribe_token": "tokens",
}


def __getattr__(name: str) -> Any:
    # Lazy (PEP 562): `winback --help` imports this package while looking for its cli module;
    # pandas, scipy and friends load only when a name is really used.
    if name in _HOME:
        import importlib

        value = getattr(importlib.import_module(f"winback.render.{_HOME[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'winback.render' has no attribute {name!r}")
