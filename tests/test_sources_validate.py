"""Validation of customers/orders/complaints: every reason code, quarantine shape, strict mode, properties."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from winback.errors import DataError
from winback.sources import (
    CODES,
    fields,
    load_inputs,
    render_validation_summary,
    validate_inputs,
    write_quarantine,
)


def customer(cid: str, **overrides) -> dict:
    row = {
        "customer_id": cid,
        "email": f"{cid}@example.com",
        "phone": "+8613800138000",
        "locale": "zh-CN",
        "timezone": "Asia/Shanghai",
        "email_opt_in": "true",
        "sms_opt_in": "false",
    }
    return row | overrides


def order(oid: str, cid: str = "c1", **overrides) -> dict:
    return {"order_id": oid, "customer_id": cid, "ordered_at": "2024-03-01 12:00:00", "amount": "88.00"} | overrides


def one_bad_customer(**overrides) -> tuple:
    inputs = validate_inputs(pd.DataFrame([customer("c1"), customer("c2", **overrides)]), pd.DataFrame([order("o1")]))
    return inputs, inputs.quarantine


@pytest.mark.parametrize(
    ("overrides", "code", "column"),
    [
        ({"email": "not-an-email"}, "malformed_email", "email"),
        ({"email": "a@@example.com"}, "malformed_email", "email"),
        ({"email": "a@x.test"}, "malformed_email", "email"),  # special-use domain
        ({"phone": "13800138000"}, "invalid_phone", "phone"),  # no country code: not E.164
        ({"phone": "+861380013800"}, "invalid_phone", "phone"),  # one digit short
        ({"phone": "+999123456"}, "invalid_phone", "phone"),  # no such country code
        ({"timezone": "Asia/Beijing"}, "unknown_timezone", "timezone"),
        ({"locale": "xx-YY"}, "unknown_locale", "locale"),
        ({"email_opt_in": "maybe"}, "bad_boolean", "email_opt_in"),
        ({"sms_opt_in": "2"}, "bad_boolean", "sms_opt_in"),
        ({"customer_id": "  "}, "missing_customer_id", "customer_id"),
        ({"birthday": "31/02/1990"}, "bad_birthday", "birthday"),
        ({"customer_id": "c1"}, "duplicate_customer_id", "customer_id"),
    ],
)
def test_each_customer_problem_quarantines_the_row(overrides, code, column):
    inputs, q = one_bad_customer(**overrides)
    assert list(inputs.customers["customer_id"]) == ["c1"]
    assert len(q) == 1
    row = q.iloc[0]
    assert (row["table"], row["file"], row["row"], row["code"], row["column"]) == (
        "customers", "customers", 2, code, column,
    )
    expected_text = "same customer_id as row 1" if code == "duplicate_customer_id" else CODES[code]
    assert row["reason"] == f"{column}: {expected_text}" + (" (that one is kept)" if code.startswith("dup") else "")
    assert inputs.counts == {code: 1}


@pytest.mark.parametrize(
    ("overrides", "code", "column"),
    [
        ({"ordered_at": "2024-13-45"}, "unparseable_date", "ordered_at"),
        ({"ordered_at": "03/04/2024"}, "unparseable_date", "ordered_at"),  # day/month order is ambiguous
        ({"ordered_at": ""}, "unparseable_date", "ordered_at"),
        ({"amount": "-5"}, "negative_amount", "amount"),
        ({"amount": "abc"}, "non_numeric_amount", "amount"),
        ({"amount": "inf"}, "non_numeric_amount", "amount"),
        ({"amount": None}, "non_numeric_amount", "amount"),
        ({"discount": "-1"}, "negative_amount", "discount"),
        ({"discount": "ten"}, "non_numeric_amount", "discount"),
        ({"customer_id": "nobody"}, "unknown_customer", "customer_id"),
        ({"customer_id": ""}, "missing_customer_id", "customer_id"),
        ({"order_id": None}, "missing_order_id", "order_id"),
        ({"order_id": "o1"}, "duplicate_order_id", "order_id"),
    ],
)
def test_each_order_problem_quarantines_the_row(overrides, code, column):
    orders = pd.DataFrame([order("o1", discount="0"), order("o2", **({"discount": "0"} | overrides))])
    inputs = validate_inputs(pd.DataFrame([customer("c1")]), orders)
    assert list(inputs.orders["order_id"]) == ["o1"]
    q = inputs.quarantine
    assert len(q) == 1
    assert (q.iloc[0]["table"], q.iloc[0]["row"], q.iloc[0]["code"], q.iloc[0]["column"]) == ("orders", 2, code, column)
    assert inputs.counts == {code: 1}


def test_missing_required_column_names_file_and_column():
    frame = pd.DataFrame([customer("c1")]).drop(columns="timezone")
    with pytest.raises(DataError) as err:
        validate_inputs(frame, pd.DataFrame([order("o1")]), files={"customers": "crm/customers.csv"})
    assert err.value.file == "crm/customers.csv" and err.value.column == "timezone"
    assert "crm/customers.csv" in str(err.value) and "timezone" in str(err.value)


def test_column_names_are_trimmed_and_lower_cased():
    frame = pd.DataFrame([customer("c1")]).rename(columns={"customer_id": " Customer_ID ", "email": "EMAIL"})
    inputs = validate_inputs(frame, pd.DataFrame([order("o1")]).rename(columns={"amount": "Amount"}))
    assert list(inputs.customers["customer_id"]) == ["c1"] and len(inputs.orders) == 1


def test_orders_of_a_quarantined_customer_say_so():
    customers = pd.DataFrame([customer("c1"), customer("c2", email="broken@")])
    orders = pd.DataFrame([order("o1", "c1"), order("o2", "c2"), order("o3", "zz")])
    inputs = validate_inputs(customers, orders, files={"customers": "customers.csv", "orders": "orders.csv"})
    q = inputs.quarantine.set_index(["table", "row"])
    assert q.loc[("orders", 2), "code"] == "unknown_customer"
    assert "quarantined in customers.csv (row 2)" in q.loc[("orders", 2), "reason"]
    assert "not found in customers.csv" in q.loc[("orders", 3), "reason"]
    assert inputs.counts == {"unknown_customer": 2, "malformed_email": 1}


def test_duplicates_keep_the_first_otherwise_valid_row():
    customers = pd.DataFrame(
        [customer("c1", email="bad@"), customer("c1", first_name="Second"), customer("c1", first_name="Third")]
    )
    inputs = validate_inputs(customers, pd.DataFrame([order("o1")]))
    assert list(inputs.customers["first_name"]) == ["Second"]
    assert dict(zip(inputs.quarantine["row"], inputs.quarantine["code"], strict=True)) == {
        1: "malformed_email", 3: "duplicate_customer_id",
    }
    assert "same customer_id as row 2" in inputs.quarantine.iloc[1]["reason"]


def test_several_problems_make_one_quarantine_row_listing_all():
    customers = pd.DataFrame([customer("c1"), customer("c2", email="x", phone="12", timezone="Nowhere/Town")])
    q = validate_inputs(customers, pd.DataFrame([order("o1")])).quarantine
    assert len(q) == 1
    assert q.iloc[0]["code"] == "malformed_email" and q.iloc[0]["value"] == "x"
    for text in ("email:", "phone:", "timezone:"):
        assert text in q.iloc[0]["reason"]


def test_friendly_spellings_are_normalised():
    customers = pd.DataFrame(
        [
            customer("c1", locale="zh_CN", timezone="asia/shanghai", phone="+86 138-0013-8000",
                     email_opt_in="是", sms_opt_in="否", birthday="1990-05-17"),
            customer("c2", locale="en-us", timezone="America/New_York", email_opt_in="YES", sms_opt_in="0",
                     phone="", email=""),
        ]
    )
    c = validate_inputs(customers, pd.DataFrame([order("o1")])).customers.set_index("customer_id")
    assert c.loc["c1", "locale"] == "zh-CN" and c.loc["c2", "locale"] == "en-US"
    assert c.loc["c1", "timezone"] == "Asia/Shanghai"
    assert c.loc["c1", "phone"] == "+8613800138000" and pd.isna(c.loc["c2", "phone"])
    assert pd.isna(c.loc["c2", "email"])
    assert c["email_opt_in"].tolist() == [True, True] and c["sms_opt_in"].tolist() == [False, False]
    assert c.loc["c1", "birthday"] == pd.Timestamp("1990-05-17") and pd.isna(c.loc["c2", "birthday"])
    assert c["email_opt_in"].dtype == bool and str(c["birthday"].dtype) == "datetime64[ns]"


def test_empty_values_get_documented_defaults_and_are_counted():
    customers = pd.DataFrame([customer("c1", timezone="", locale=None, email_opt_in="")])
    inputs = validate_inputs(customers, pd.DataFrame([order("o1")]), default_timezone="Europe/Berlin")
    c = inputs.customers.iloc[0]
    assert (c["timezone"], c["locale"], c["email_opt_in"]) == ("Europe/Berlin", "zh-CN", False)
    assert inputs.filled == {"customers.timezone": 1, "customers.locale": 1, "customers.email_opt_in": 1}
    assert inputs.quarantine.empty


def test_naive_times_use_the_customer_time_zone_and_zoned_times_convert_to_utc():
    customers = pd.DataFrame([customer("sh"), customer("ny", timezone="America/New_York")])
    orders = pd.DataFrame(
        [
            order("o1", "sh", ordered_at="2024-03-01 08:00"),
            order("o2", "ny", ordered_at="2024-03-01 08:00"),
            order("o3", "ny", ordered_at="2024-03-01T08:00:00+08:00"),
            order("o4", "sh", ordered_at="2024/03/02"),
            order("o5", "ny", ordered_at="2024-07-01T00:00:00Z"),
        ]
    )
    got = validate_inputs(customers, orders).orders.set_index("order_id")["ordered_at"]
    assert str(got.dtype) == "datetime64[ns, UTC]"
    assert got["o1"] == pd.Timestamp("2024-03-01 00:00", tz="UTC")
    assert got["o2"] == pd.Timestamp("2024-03-01 13:00", tz="UTC")  # EST = UTC-5
    assert got["o3"] == pd.Timestamp("2024-03-01 00:00", tz="UTC")
    assert got["o4"] == pd.Timestamp("2024-03-01 16:00", tz="UTC")
    assert got["o5"] == pd.Timestamp("2024-07-01 00:00", tz="UTC")


def test_typed_columns_from_parquet_or_sql_are_accepted():
    customers = pd.DataFrame(
        {"customer_id": [1001, 1002], "email": ["a@example.com", None], "phone": [None, None],
         "locale": ["en-US", "zh-CN"], "timezone": ["UTC", "UTC"], "email_opt_in": [True, False],
         "sms_opt_in": [1, 0]}
    )
    orders = pd.DataFrame(
        {"order_id": [1, 2], "customer_id": [1001.0, 1002.0],
         "ordered_at": pd.to_datetime(["2024-03-01 10:00", "2024-03-02 10:00"]).tz_localize("Asia/Tokyo"),
         "amount": [10.5, 0.0], "discount": [1.0, np.nan]}
    )
    inputs = validate_inputs(customers, orders)
    assert inputs.quarantine.empty
    assert inputs.customers["customer_id"].tolist() == ["1001", "1002"]
    assert inputs.orders["customer_id"].tolist() == ["1001", "1002"]
    assert inputs.orders["discount"].tolist() == [1.0, 0.0]
    assert inputs.orders["ordered_at"].iloc[0] == pd.Timestamp("2024-03-01 01:00", tz="UTC")


def test_money_text_with_currency_signs_and_thousands():
    orders = pd.DataFrame([order("o1", amount="¥1,234.50"), order("o2", amount="88元"), order("o3", amount=" 7 ")])
    got = validate_inputs(pd.DataFrame([customer("c1")]), orders).orders["amount"].tolist()
    assert got == [1234.5, 88.0, 7.0]


def test_complaints_are_validated_against_customers():
    complaints = pd.DataFrame(
        {
            "customer_id": ["c1", "c1", "zz", "c1"],
            "created_at": ["2024-03-01 09:00", "soon", "2024-03-01", "2024-03-02"],
            "kind": ["delivery", "quality", "price", None],
            "resolved": ["否", "yes", "no", "perhaps"],
        }
    )
    inputs = validate_inputs(pd.DataFrame([customer("c1")]), pd.DataFrame([order("o1")]), complaints)
    assert len(inputs.complaints) == 1
    assert inputs.complaints.iloc[0]["resolved"] == np.False_
    assert inputs.complaints.iloc[0]["created_at"] == pd.Timestamp("2024-03-01 01:00", tz="UTC")
    assert dict(zip(inputs.quarantine["row"], inputs.quarantine["code"], strict=True)) == {
        2: "unparseable_date", 3: "unknown_customer", 4: "bad_boolean",
    }


def test_no_complaints_gives_an_empty_contract_frame():
    inputs = validate_inputs(pd.DataFrame([customer("c1")]), pd.DataFrame([order("o1")]))
    assert inputs.complaints.empty and list(inputs.complaints.columns) == ["customer_id", "created_at", "kind", "resolved"]
    assert "complaints" not in inputs.rows_read


def test_strict_mode_raises_on_the_first_bad_row():
    customers = pd.DataFrame([customer("c1"), customer("c2"), customer("c3", phone="12345")])
    with pytest.raises(DataError) as err:
        validate_inputs(customers, pd.DataFrame([order("o1")]), strict=True, files={"customers": "c.csv"})
    assert (err.value.file, err.value.row, err.value.column) == ("c.csv", 3, "phone")
    assert "invalid_phone" in str(err.value)
    orders = pd.DataFrame([order("o1"), order("o2", amount="-3"), order("o3", amount="x")])
    with pytest.raises(DataError) as err:
        validate_inputs(pd.DataFrame([customer("c1")]), orders, strict=True)
    assert (err.value.row, err.value.column) == (2, "amount")


def test_departed_managers_are_kept_on_inputs():
    inputs = validate_inputs(
        pd.DataFrame([customer("c1", account_manager="王芳")]), pd.DataFrame([order("o1")]),
        departed_managers=["王芳", " Li Lei ", "王芳"],
    )
    assert inputs.departed_managers == ("王芳", "Li Lei")
    assert inputs.customers.loc[0, "account_manager"] == "王芳"


def test_extra_columns_are_kept():
    inputs = validate_inputs(pd.DataFrame([customer("c1", city="杭州")]), pd.DataFrame([order("o1", store="S1")]))
    assert inputs.customers.loc[0, "city"] == "杭州" and inputs.orders.loc[0, "store"] == "S1"


def test_write_quarantine_and_load_inputs_writes_it(tmp_path):
    customers = pd.DataFrame([customer("c1"), customer("c2", email="@")])
    path = tmp_path / "out" / "quarantine.csv"
    inputs = load_inputs(customers, pd.DataFrame([order("o1")]), quarantine_path=path)
    back = pd.read_csv(path, encoding="utf-8-sig")
    assert list(back.columns) == ["table", "file", "row", "column", "value", "code", "reason"]
    assert back.loc[0, "code"] == "malformed_email" and back.loc[0, "row"] == 2
    write_quarantine(inputs.quarantine, tmp_path / "q.parquet")
    assert pd.read_parquet(tmp_path / "q.parquet")["code"].tolist() == ["malformed_email"]


def test_summary_table_shows_counts():
    from rich.console import Console

    customers = pd.DataFrame([customer("c1"), customer("c2", email="@")])
    inputs = validate_inputs(customers, pd.DataFrame([order("o1"), order("o2", amount="-1")]))
    console = Console(record=True, width=120)
    console.print(render_validation_summary(inputs))
    text = console.export_text()
    assert "customers" in text and "malformed_email" in text and "negative_amount" in text


# --- properties ------------------------------------------------------------------------------------

ids = st.sampled_from([f"c{i}" for i in range(8)] + ["", " c1 "])
emails = st.sampled_from(["a@example.com", "b.c+tag@example.org", "bad@", "x@x.test", "", "张三@例子.中国"])
phones = st.sampled_from(["+8613800138000", "+12025550123", "12345", "", "+86 138 0013 8001"])
zones = st.sampled_from(["Asia/Shanghai", "America/New_York", "Mars/Base", "", "utc"])
locales = st.sampled_from(["zh-CN", "en_US", "xx", "", "zh-hant-tw"])
bools = st.sampled_from(["true", "0", "是", "maybe", ""])
customer_rows = st.fixed_dictionaries(
    {"customer_id": ids, "email": emails, "phone": phones, "timezone": zones, "locale": locales,
     "email_opt_in": bools, "sms_opt_in": bools}
)
order_rows = st.fixed_dictionaries(
    {
        "order_id": st.sampled_from([f"o{i}" for i in range(12)] + [""]),
        "customer_id": ids,
        "ordered_at": st.sampled_from(["2024-03-01", "2024-03-01T10:00:00+08:00", "2024-13-01", "", "2024/05/06 07:08"]),
        "amount": st.sampled_from(["1", "0", "-1", "abc", "", "1,200.5", "¥3"]),
    }
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(customer_rows, max_size=15), st.lists(order_rows, max_size=25))
def test_every_row_is_either_valid_or_quarantined_once(customer_list, order_list):
    customers = pd.DataFrame(
        customer_list,
        columns=["customer_id", "email", "phone", "timezone", "locale", "email_opt_in", "sms_opt_in"],
    )
    orders = pd.DataFrame(order_list, columns=["order_id", "customer_id", "ordered_at", "amount"])
    inputs = validate_inputs(customers, orders)
    q = inputs.quarantine
    for table, frame, valid in (("customers", customers, inputs.customers), ("orders", orders, inputs.orders)):
        rows = q.loc[q["table"] == table, "row"]
        assert len(valid) + len(rows) == len(frame)
        assert rows.is_unique and rows.between(1, max(len(frame), 1)).all()
    assert inputs.customers["customer_id"].is_unique
    assert inputs.orders["order_id"].is_unique
    assert inputs.orders["customer_id"].isin(inputs.customers["customer_id"]).all()
    assert (inputs.orders["amount"] >= 0).all() and inputs.orders["ordered_at"].notna().all()
    assert sum(inputs.counts.values()) == len(q)


@settings(max_examples=200, deadline=None)
@given(
    st.one_of(
        st.emails(),
        st.text(alphabet=st.sampled_from("ab.-_+@Z9é中 "), max_size=20),
        st.builds(lambda a, b: f"{a}@{b}", st.from_regex(r"[a-z.]{1,10}", fullmatch=True),
                  st.from_regex(r"[a-z0-9-]{1,8}(\.[a-z0-9-]{1,6}){0,2}", fullmatch=True)),
    )
)
def test_vectorized_email_check_agrees_with_email_validator(address):
    from email_validator import EmailNotValidError, validate_email

    value = address.strip()
    assume(value)
    try:
        validate_email(value, check_deliverability=False)
        expected = True
    except EmailNotValidError:
        expected = False
    assert bool(fields.valid_emails(pd.Series([value], dtype="str"))[0]) == expected
