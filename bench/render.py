"""Benchmark: plan + render for N customers against a bare jinja2 render loop of the same templates.

    .venv/bin/python bench/render.py [--customers 1000000] [--campaign campaigns/cn_retail_winback.yaml]

Plan: `winback.demo.generate_world` → `segment_customers` → `build_plan` (timed separately).
Render: every treatment row of the plan through `Renderer.render_many` (sandboxed, StrictUndefined,
locale fallback, SMS segments, List-Unsubscribe headers), and the same rows through a bare loop — a
plain `jinja2.Environment` over the same templates and filters, templates pre-loaded, the same parsed
contexts — in the same run, chunk by chunk and interleaved so both see the same machine. Contexts are
parsed from the plan's JSON outside both timings. Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import pandas as pd
from jinja2 import Environment, FileSystemLoader, StrictUndefined

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from winback.render import Renderer  # noqa: E402
from winback.render.formatting import FILTERS  # noqa: E402
from winback.render.renderer import CHANNEL_FILES, _autoescape  # noqa: E402

CHUNK = 20_000


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def build(n: int, campaign_path: Path, as_of: str):
    from winback.campaigns import build_plan, load_campaign
    from winback.demo import generate_world
    from winback.segments import segment_customers

    spec = load_campaign(campaign_path)
    when = pd.Timestamp(as_of, tz="UTC")
    t0 = time.perf_counter()
    world = generate_world(n, seed=7, as_of=when)
    t1 = time.perf_counter()
    segments = segment_customers(world.customers, world.orders, world.complaints, as_of=when)
    plan = build_plan(spec, world.customers, segments, as_of=when)
    t2 = time.perf_counter()
    return spec, plan, t1 - t0, t2 - t1


def bare_environment(templates_dir: Path) -> Environment:
    env = Environment(loader=FileSystemLoader(str(templates_dir)), undefined=StrictUndefined,
                      autoescape=_autoescape, trim_blocks=True, lstrip_blocks=True, auto_reload=False, cache_size=-1)
    env.filters.update(FILTERS)
    return env


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--customers", type=int, default=1_000_000)
    ap.add_argument("--campaign", type=Path, default=REPO / "campaigns" / "cn_retail_winback.yaml")
    ap.add_argument("--as-of", default="2026-11-23")
    args = ap.parse_args()

    spec, plan, t_world, t_plan = build(args.customers, args.campaign, args.as_of)
    print(f"world: {args.customers:,} customers in {t_world:.1f}s; segment + plan in {t_plan:.1f}s "
          f"({args.customers / t_plan:,.0f} customers/s)", flush=True)
    rows = plan[(plan["arm"] == "treatment") & plan["channel"].isin(list(CHANNEL_FILES))]
    rows = rows[["campaign_id", "customer_id", "template", "channel", "locale", "context"]].reset_index(drop=True)
    del plan
    renderer = Renderer(spec.templates_path(), spec.locale_fallback)
    bare = bare_environment(spec.templates_path())
    bare_templates: dict[tuple[str, str, str], tuple] = {}

    def bare_render(template: str, channel: str, locale: str, ctx: dict, url: str | None) -> int:
        key = (template, channel, locale)
        parts = bare_templates.get(key)
        if parts is None:  # pre-loaded once per key: resolution is not what the baseline measures
            resolved = renderer.resolve_locale(template, channel, locale)
            names = CHANNEL_FILES[channel] if channel == "email" else CHANNEL_FILES[channel][:1]
            parts = (resolved, [bare.get_template(f"{template}/{resolved}/{n}") for n in names])
            bare_templates[key] = parts
        variables = dict(ctx)
        variables.update(locale=parts[0], channel=channel, unsubscribe_url=url)
        return sum(len(t.render(variables)) for t in parts[1])

    t_ours = t_bare = 0.0
    n = 0
    for start in range(0, len(rows), CHUNK):
        chunk = rows.iloc[start:start + CHUNK]
        batch = [{"template": r.template, "channel": r.channel, "locale": r.locale,
                  "context": json.loads(r.context),
                  "unsubscribe_url": f"https://crm.example.com/unsubscribe/{r.campaign_id}.{r.customer_id}"
                  if r.channel == "email" else None}
                 for r in chunk.itertuples(index=False)]
        t0 = time.perf_counter()
        size = 0
        for msg in renderer.render_many(batch):
            size += len(msg.text)
        t1 = time.perf_counter()
        for b in batch:
            size += bare_render(b["template"], b["channel"], b["locale"], b["context"], b["unsubscribe_url"])
        t2 = time.perf_counter()
        t_ours += t1 - t0
        t_bare += t2 - t1
        n += len(batch)
    ours, base = n / t_ours, n / t_bare
    channels = rows["channel"].value_counts().to_dict()
    print(f"rendered {n:,} messages {channels}: winback {ours:,.0f} msgs/s ({t_ours:.1f}s), "
          f"bare jinja2 {base:,.0f} msgs/s ({t_bare:.1f}s), ratio {ours / base:.2f}", flush=True)
    print(json.dumps({"bench": "render", "customers": args.customers, "messages": n,
                      "msgs_per_s": round(ours, 1), "baseline_msgs_per_s": round(base, 1),
                      "ratio": round(ours / base, 3), "plan_s": round(t_plan, 2),
                      "peak_rss_mb": round(peak_rss_mb(), 1)}))


if __name__ == "__main__":
    main()
