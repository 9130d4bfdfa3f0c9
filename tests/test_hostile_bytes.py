"""Hostile bytes in what winback reads and writes: call-list cells (formula injection), absurd order
amounts, ragged CSV rows, rich markup in messages, duplicate YAML keys, oversized webhook bodies, and
templates that would run for ever or fill the memory."""

from __future__ import annotations

import asyncio
import csv
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from test_events import SERVE, free_port, wait_healthy
from winback.channels.base import OutboundMessage
from winback.channels.call_task import CallTaskChannel, escape_cell, unescape_cell
from winback.errors import ConfigError, DataError
from winback.render import Renderer, RenderError

REPO = Path(__file__).resolve().parents[1]


# -- call lists ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["=cmd|' /C calc'!A0", "+86 138", "-2+3", "@SUM(A1)", "\tx", "\rx"])
def test_formula_starting_cells_are_escaped_and_round_trip(value):
    assert escape_cell(value) == "'" + value and unescape_cell(escape_cell(value)) == value
    assert escape_cell("王小明") == "王小明" and unescape_cell("'quoted") == "'quoted"


def test_a_call_list_never_holds_a_live_formula_and_stays_idempotent(tmp_path):
    channel = CallTaskChannel(tmp_path)
    hostile = OutboundMessage(key="spring:=HYPERLINK(\"http://x\"):1", channel="call_task", to="Alice", from_="",
                              text="@SUM(1+1)", metadata={"customer_name": "=cmd|' /C calc'!A0",
                                                          "phone": "+8613800000001", "email": "-x@example.com"})
    for _ in range(2):  # the second write finds the (escaped) key already there
        [result] = asyncio.run(channel.send([hostile]))
        assert result.status == "accepted"
    fresh = CallTaskChannel(tmp_path)  # another run: reads the keys back from the file
    asyncio.run(fresh.send([hostile]))
    assert asyncio.run(fresh.lookup(hostile.key, hostile)).status == "found"
    with channel.path_for(hostile).open(encoding="utf-8-sig", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 1
    for cell in rows[0].values():
        assert not cell.startswith(("=", "+", "-", "@", "\t", "\r")), cell
    assert rows[0]["customer_name"] == "'=cmd|' /C calc'!A0" and rows[0]["phone"] == "'+8613800000001"


# -- order amounts and ragged rows ------------------------------------------------------------------------


def test_an_absurd_amount_is_quarantined_with_file_row_and_column():
    from winback.sources import validate_inputs

    customers = pd.DataFrame([{"customer_id": "c1", "email": "c1@example.com", "phone": "+8613800138000",
                               "locale": "zh-CN", "timezone": "Asia/Shanghai", "email_opt_in": "true",
                               "sms_opt_in": "false"}])
    orders = pd.DataFrame([{"order_id": f"o{i}", "customer_id": "c1", "ordered_at": "2024-03-01 12:00",
                            "amount": amount, "discount": discount}
                           for i, (amount, discount) in enumerate([("88", "0"), ("1e14", "0"), ("5", "2e12"),
                                                                    ("999999999999", "0")])])
    inputs = validate_inputs(customers, orders, files={"orders": "orders.csv"})
    assert list(inputs.orders["order_id"]) == ["o0", "o3"]  # just under 10^12 is still an order
    q = inputs.quarantine.set_index("row")
    assert q.loc[2, "code"] == "implausible_amount" and q.loc[2, "column"] == "amount"
    assert q.loc[2, "file"] == "orders.csv" and q.loc[2, "value"] == "1e14"
    assert q.loc[3, "code"] == "implausible_amount" and q.loc[3, "column"] == "discount"


def test_a_ragged_csv_row_is_reported_with_its_line(tmp_path):
    from winback.sources.readers import read_csv

    path = tmp_path / "orders.csv"
    path.write_text('order_id,customer_id,amount\no1,c1,"8,8"\no2,c2,"multi\nline"\no3,c3,9,9\no4,c4,1\n',
                    encoding="utf-8")
    with pytest.raises(DataError) as err:
        read_csv(path)
    assert err.value.file == str(path) and err.value.row == 4
    assert "line 5 has 4 fields, the header has 3" in str(err.value)


# -- the error printer -------------------------------------------------------------------------------------


def test_markup_in_an_error_message_is_printed_as_text(tmp_path, capsys):
    from winback.cli import main

    odd = tmp_path / "[bold]plans[/bold]" / "[/red]p.csv"
    assert main(["send", "--plan", str(odd), "--emulator", "http://127.0.0.1:9"]) == 1
    err = capsys.readouterr().err
    assert "Error:" in err and "[/red]p.csv" in err and "[bold]plans[/bold]" in err
    assert "Traceback" not in err and "MarkupError" not in err


# -- duplicate YAML keys -------------------------------------------------------------------------------------


def test_a_duplicate_key_in_a_campaign_is_an_error_naming_its_line(tmp_path):
    from winback.campaigns.loading import parse_campaign

    text = "id: spring\nname: Spring\nholdout_share: 0.1\nchannels: [email]\nholdout_share: 0.5\n"
    with pytest.raises(ConfigError) as err:
        parse_campaign(text, source="campaigns/spring.yaml")
    message = str(err.value)
    assert message.startswith("campaigns/spring.yaml: line 5") and "duplicate key 'holdout_share'" in message
    assert "first on line 3" in message


def test_a_duplicate_key_in_a_provider_config_is_an_error_naming_its_line(tmp_path):
    from winback.channels.providers import load_provider_config

    path = tmp_path / "providers.yaml"
    path.write_text("email: sendgrid\nsendgrid:\n  base_url: https://a.example\n  base_url: https://b.example\n",
                    encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_provider_config(path)
    assert "line 4" in str(err.value) and "duplicate key 'base_url'" in str(err.value)
    # Merge keys may still be overridden, as YAML intends.
    path.write_text("base: &b {timeout_s: 3}\ntimeout_s: 4\n", encoding="utf-8")
    with pytest.raises(ConfigError) as err:  # (`base` itself is not a provider setting)
        load_provider_config(path)
    assert "duplicate key" not in str(err.value)


# -- the events server ------------------------------------------------------------------------------------------


def _rss_kb(pid: int, field: str = "VmHWM") -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as fh:
        return int(next(line for line in fh if line.startswith(field)).split()[1])


def test_the_events_server_refuses_an_oversized_chunked_body_while_it_streams(tmp_path):
    """400 MB sent chunked (no declared length): the server answers 413 after 5 MB and its memory stays put."""
    port = free_port()
    env = {**os.environ, "WINBACK_TWILIO_AUTH_TOKEN": "token", "WINBACK_UNSUBSCRIBE_SECRET": "s"}
    env.pop("WINBACK_PUBLIC_URL", None)
    proc = subprocess.Popen([sys.executable, "-c", SERVE, "events-server", "--port", str(port), "--ledger",
                             f"sqlite:///{tmp_path}/l.db"], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        wait_healthy(f"http://127.0.0.1:{port}", proc)
        before = _rss_kb(proc.pid, "VmRSS")
        sent, answer = 0, b""
        chunk = b"%x\r\n" % (1 << 20) + b"A" * (1 << 20) + b"\r\n"
        started = time.monotonic()
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(b"POST /webhooks/twilio HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-"
                         b"urlencoded\r\nTransfer-Encoding: chunked\r\n\r\n")
            sock.settimeout(1)
            try:
                while sent < 400 * (1 << 20):
                    sock.sendall(chunk)
                    sent += 1 << 20
            except (TimeoutError, OSError):
                pass  # the server stopped reading: the upload is refused
            sock.settimeout(10)
            try:
                while b"\r\n\r\n" not in answer:
                    data = sock.recv(65536)
                    if not data:
                        break
                    answer += data
            except OSError:
                pass
        peak = _rss_kb(proc.pid)
    finally:
        proc.terminate()
        proc.communicate(timeout=15)
    print(f"events server: 413 after {sent / 2**20:.0f} MB sent, RSS {before / 1024:.0f} -> peak {peak / 1024:.0f} MB")
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert sent < 200 * (1 << 20)  # it did not take the whole upload in
    assert peak - before < 100 * 1024, f"RSS grew by {(peak - before) / 1024:.0f} MB"
    assert time.monotonic() - started < 30


# -- templates ----------------------------------------------------------------------------------------------------


HOSTILE_TEMPLATES = {
    "nested_loops": "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}x",
    "nested_output": "{% for i in range(100000) %}{% for j in range(100000) %}{{ j }}{% endfor %}{% endfor %}",
    "gigabyte": "{{ 'x' * 10**9 }}",
    "power": "{{ 10 ** 10000000000 }}",
    "recursion": "{% macro f(n) %}{% if n > 0 %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(60) }}",
    "width": "{{ 'x'|center(1000000000) }}{{ '%0999999999d' % 1 }}",
    "doubling": "{% set ns = namespace(s='x') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}x",
}


@pytest.fixture()
def hostile_templates(tmp_path):
    for name, body in HOSTILE_TEMPLATES.items():
        folder = tmp_path / "templates" / name / "en-US"
        folder.mkdir(parents=True)
        (folder / "sms.txt").write_text(body + " Reply STOP to opt out", encoding="utf-8")
    return tmp_path / "templates"


@pytest.mark.parametrize("name", sorted(HOSTILE_TEMPLATES))
def test_a_hostile_template_ends_in_a_clear_error_within_its_bound(hostile_templates, name):
    renderer = Renderer(hostile_templates, max_render_s=0.5)
    started = time.monotonic()
    with pytest.raises(RenderError) as err:
        renderer.render(name, "sms", "en-US", {"customer": {}})
    assert time.monotonic() - started < 3
    assert "over a render bound" in str(err.value)
    # `validate` says the same (and a template out of time fails at once on the next renders).
    started = time.monotonic()
    problems = renderer.validate(name)
    assert time.monotonic() - started < 3
    assert any("over a render bound" in p for p in problems)


def test_the_bounds_leave_ordinary_templates_alone(tmp_path):
    folder = tmp_path / "templates" / "fine" / "en-US"
    folder.mkdir(parents=True)
    (folder / "sms.txt").write_text("{% for i in range(3) %}{{ i }}{% endfor %} {{ '%05d' % 7 }} {{ 'ab' * 3 }} "
                                    "{{ 2 ** 10 }} {{ 'x'|center(5) }} {{ '{:>4}'.format(1) }} Reply STOP",
                                    encoding="utf-8")
    message = Renderer(tmp_path / "templates").render("fine", "sms", "en-US", {})
    assert message.text == "012 00007 ababab 1024   x      1 Reply STOP"
