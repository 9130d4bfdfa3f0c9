"""Readers against real files and servers: CSV (UTF-8, GBK), Parquet, DuckDB, PostgreSQL; phone check parity."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from winback.errors import ConfigError, DataError
from winback.sources import fields, load_inputs, read_source

CUSTOMERS_CSV = (
    "customer_id,email,phone,locale,timezone,email_opt_in,sms_opt_in,first_name,account_manager\n"
    "007,zhang@example.com,+86 138 0013 8000,zh_CN,Asia/Shanghai,是,否,张三,王芳\n"
    '008,,,zh-CN,Asia/Shanghai,1,0,"李\n四",\n'
    "009,bad-email,,zh-CN,Asia/Shanghai,1,0,王五,\n"
)
ORDERS_CSV = (
    "order_id,customer_id,ordered_at,amount,category\n"
    "A1,007,2024-03-01 20:00,¥1,288.00,服装\n"
    "A2,008,2024-03-02 09:30:00,99,鞋\n"
    "A3,009,2024-03-02 09:30:00,15,鞋\n"
)


def write(path, text: str, encoding: str = "utf-8"):
    path.write_bytes(text.encode(encoding))
    return path


def test_gbk_csv_round_trip_with_encoding_option(tmp_path):
    customers = write(tmp_path / "customers.csv", CUSTOMERS_CSV, "gbk")
    orders = write(tmp_path / "orders.csv", ORDERS_CSV.replace("¥1,288.00", '"1,288.00"'), "gb18030")
    inputs = load_inputs(customers, orders, encoding="gb18030")
    c = inputs.customers.set_index("customer_id")
    assert list(c.index) == ["007", "008"]  # leading zeros kept: ids are never type-guessed
    assert c.loc["007", "first_name"] == "张三" and c.loc["008", "first_name"] == "李\n四"
    assert c.loc["007", "account_manager"] == "王芳"
    assert inputs.orders["category"].tolist() == ["服装", "鞋"]
    assert inputs.orders["amount"].tolist() == [1288.0, 99.0]
    # The multi-line name does not shift row numbers: row 3 is the third record.
    q = inputs.quarantine
    assert q["file"].tolist() == [str(customers), str(orders)]
    assert q["row"].tolist() == [3, 3]
    assert q["code"].tolist() == ["malformed_email", "unknown_customer"]


def test_decode_failure_names_file_line_and_byte(tmp_path):
    path = write(tmp_path / "customers.csv", CUSTOMERS_CSV, "gbk")
    with pytest.raises(DataError) as err:
        read_source(path)  # default utf-8-sig
    message = str(err.value)
    assert str(path) in message and "line 2" in message and "byte " in message
    assert err.value.file == str(path) and err.value.row == 1
    assert "gb18030" in err.value.hint


def test_decode_failure_deep_in_a_large_file_reports_the_right_line(tmp_path):
    body = "customer_id,first_name\n" + "".join(f"{i},名字{i}\n" for i in range(200_000))
    data = body.encode("utf-8") + b"200000,\xc4\xe3\n"  # GBK bytes for 你 in a UTF-8 file
    (tmp_path / "c.csv").write_bytes(data)
    with pytest.raises(DataError) as err:
        read_source(tmp_path / "c.csv")
    assert "line 200002" in str(err.value)
    assert f"byte {len(body.encode('utf-8')) + 7}" in str(err.value)


def test_csv_with_semicolons_and_bom(tmp_path):
    text = "\ufeffcustomer_id;email;phone;locale;timezone;email_opt_in;sms_opt_in\nc1;a@example.com;;en-US;UTC;yes;no\n"
    path = write(tmp_path / "customers.csv", text)
    frame = read_source(path).frame
    assert list(frame.columns)[0] == "customer_id" and frame.loc[0, "email"] == "a@example.com"


def test_ids_keep_leading_zeros_with_a_bom_and_plain_utf8(tmp_path):
    path = tmp_path / "c.csv"
    path.write_bytes(b"\xef\xbb\xbfcustomer_id,amount\n007,1\n")
    frame = read_source(path, encoding="utf-8").frame
    assert frame.iloc[0, 0] == "007"


def test_unknown_encoding_is_a_config_error(tmp_path):
    path = write(tmp_path / "c.csv", "a\n1\n")
    with pytest.raises(ConfigError, match="unknown encoding"):
        read_source(path, encoding="klingon")


def test_malformed_and_missing_files_are_data_errors(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        read_source(tmp_path / "nope.csv")
    write(tmp_path / "empty.csv", "")
    with pytest.raises(DataError) as err:
        read_source(tmp_path / "empty.csv")
    assert str(tmp_path / "empty.csv") in str(err.value)
    write(tmp_path / "ragged.csv", "a,b\n1,2\n3,4,5\n")
    with pytest.raises(DataError, match="ragged.csv"):
        read_source(tmp_path / "ragged.csv")
    write(tmp_path / "x.parquet", "not parquet")
    with pytest.raises(DataError, match="x.parquet"):
        read_source(tmp_path / "x.parquet")
    with pytest.raises(ConfigError, match="unsupported source"):
        read_source(tmp_path / "data.xlsx")


def test_missing_column_in_a_file_names_the_file(tmp_path):
    path = write(tmp_path / "orders.csv", "order_id,customer_id,amount\nA1,007,5\n")
    customers = write(tmp_path / "customers.csv", CUSTOMERS_CSV)
    with pytest.raises(DataError) as err:
        load_inputs(customers, path)
    assert err.value.file == str(path) and err.value.column == "ordered_at"


def test_parquet_typed_and_text(tmp_path):
    customers = pd.DataFrame(
        {"customer_id": ["c1", "c2"], "email": ["a@example.com", None], "phone": ["+12025550123", None],
         "locale": ["en-US", "zh-CN"], "timezone": ["America/New_York", "Asia/Shanghai"],
         "email_opt_in": [True, False], "sms_opt_in": [True, True]}
    )
    orders = pd.DataFrame(
        {"order_id": ["o1", "o2", "o3"], "customer_id": ["c1", "c2", "c2"],
         "ordered_at": pd.to_datetime(["2024-03-01 12:00", "2024-03-01 12:00", "2024-03-02 12:00"]),
         "amount": [10.0, -2.0, 3.5]}
    )
    customers.to_parquet(tmp_path / "customers.parquet")
    orders.to_parquet(tmp_path / "orders.parquet")
    inputs = load_inputs(tmp_path / "customers.parquet", tmp_path / "orders.parquet")
    got = inputs.orders.set_index("order_id")["ordered_at"]
    assert got["o1"] == pd.Timestamp("2024-03-01 17:00", tz="UTC")  # naive, read in New York time
    assert got["o3"] == pd.Timestamp("2024-03-02 04:00", tz="UTC")
    assert inputs.counts == {"negative_amount": 1}
    assert inputs.quarantine.iloc[0]["row"] == 2


@pytest.fixture()
def shop_duckdb(tmp_path):
    import duckdb

    path = tmp_path / "shop.duckdb"
    with duckdb.connect(str(path)) as conn:
        conn.execute(
            "CREATE TABLE customers AS SELECT * FROM (VALUES "
            "('c1', 'a@example.com', '+8613800138000', 'zh-CN', 'Asia/Shanghai', true, false),"
            "('c2', NULL, NULL, 'en-US', 'Mars/Base', true, true)) "
            "t(customer_id, email, phone, locale, timezone, email_opt_in, sms_opt_in)"
        )
        conn.execute("CREATE SCHEMA sales")
        conn.execute(
            "CREATE TABLE sales.orders AS SELECT * FROM (VALUES "
            "('o1', 'c1', TIMESTAMPTZ '2024-03-01 10:00:00+08', 12.50::DECIMAL(10,2)),"
            "('o2', 'c1', TIMESTAMPTZ '2024-03-05 10:00:00+08', 30.00::DECIMAL(10,2)),"
            "('o3', 'c2', TIMESTAMPTZ '2024-03-05 10:00:00+08', 1.00::DECIMAL(10,2))) "
            "t(order_id, customer_id, ordered_at, amount)"
        )
    return path


def test_duckdb_table_and_query(shop_duckdb):
    base = f"duckdb:///{shop_duckdb}"  # absolute path after three slashes -> four in all
    inputs = load_inputs(
        f"{base}?table=customers",
        f"{base}?query=SELECT * FROM sales.orders WHERE amount %3E 5 AND order_id <> 'o9'",
    )
    assert inputs.customers["customer_id"].tolist() == ["c1"]
    assert inputs.orders["order_id"].tolist() == ["o1", "o2"]
    assert inputs.orders["amount"].tolist() == [12.5, 30.0]
    assert inputs.orders["ordered_at"].iloc[0] == pd.Timestamp("2024-03-01 02:00", tz="UTC")
    assert inputs.counts == {"unknown_timezone": 1}
    assert inputs.sources["customers"] == f"{base}?table=customers"
    frame = read_source(f"{base}?table=sales.orders").frame
    assert len(frame) == 3


def test_duckdb_is_read_only_and_errors_are_clear(shop_duckdb, tmp_path):
    base = f"duckdb:///{shop_duckdb}"
    with pytest.raises(DataError, match="read-only|read only"):
        read_source(f"{base}?query=CREATE TABLE x AS SELECT 1")
    with pytest.raises(DataError, match="nope"):
        read_source(f"{base}?table=nope")
    with pytest.raises(DataError, match="not found"):
        read_source(f"duckdb:///{tmp_path}/missing.duckdb?table=t")
    with pytest.raises(ConfigError, match="table="):
        read_source(base)


@pytest.mark.postgres
def test_postgresql_table_and_query(postgres_schema):
    import sqlalchemy as sa

    engine = sa.create_engine(postgres_schema)
    with engine.begin() as conn:
        conn.execute(sa.text(
            "CREATE TABLE customers (customer_id text, email text, phone text, locale text, timezone text,"
            " email_opt_in boolean, sms_opt_in boolean, birthday date)"
        ))
        conn.execute(sa.text(
            "INSERT INTO customers VALUES ('c1', 'a@example.com', '+8613800138000', 'zh_CN', 'Asia/Shanghai',"
            " true, false, '1990-05-17'), ('c2', 'x@', NULL, 'en-US', 'UTC', true, true, NULL)"
        ))
        conn.execute(sa.text(
            "CREATE TABLE orders (order_id text, customer_id text, ordered_at timestamptz, amount numeric(12,2),"
            " discount numeric(12,2))"
        ))
        conn.execute(sa.text(
            "INSERT INTO orders VALUES ('o1', 'c1', '2024-03-01 10:00+08', 88.80, 8.80),"
            " ('o2', 'c1', '2024-03-09 10:00+08', 12.00, NULL), ('o3', 'c2', '2024-03-09 10:00+08', 5, 0)"
        ))
    engine.dispose()
    inputs = load_inputs(
        f"{postgres_schema}&table=customers",
        f"{postgres_schema}&query=SELECT * FROM orders WHERE amount > 10 OR customer_id = 'c2'",
    )
    assert inputs.customers["customer_id"].tolist() == ["c1"]
    assert inputs.customers.loc[0, "locale"] == "zh-CN"
    assert inputs.customers.loc[0, "birthday"] == pd.Timestamp("1990-05-17")
    assert inputs.orders["order_id"].tolist() == ["o1", "o2"]
    assert inputs.orders["amount"].tolist() == [88.8, 12.0]
    assert inputs.orders["discount"].tolist() == [8.8, 0.0]
    assert inputs.orders["ordered_at"].iloc[0] == pd.Timestamp("2024-03-01 02:00", tz="UTC")
    assert inputs.counts == {"malformed_email": 1, "unknown_customer": 1}
    assert "table=customers" in inputs.sources["customers"]


@pytest.mark.postgres
def test_postgresql_errors_hide_the_password(postgres_url):
    url = postgres_url.replace("postgres@", "postgres:s3cret@") + "?table=no_such_table"
    with pytest.raises(DataError) as err:
        read_source(url)
    assert "s3cret" not in str(err.value) and "no_such_table" in str(err.value)


def test_url_parameters_are_split_without_touching_the_rest():
    from winback.sources.readers import _split_params

    base, params = _split_params("postgresql+psycopg://u@h/db?options=-csearch_path%3Dx&table=crm.customers")
    assert base == "postgresql+psycopg://u@h/db?options=-csearch_path%3Dx" and params == {"table": "crm.customers"}
    base, params = _split_params("duckdb:///f.duckdb?query=SELECT a+1 AS b FROM t WHERE c = 'x&y'")
    assert base == "duckdb:///f.duckdb" and params == {"query": "SELECT a+1 AS b FROM t WHERE c = 'x&y'"}


def test_vectorized_e164_check_agrees_with_phonenumbers():
    import phonenumbers

    rng = np.random.default_rng(7)
    numbers = []
    for cc, regions in phonenumbers.COUNTRY_CODE_TO_REGION_CODE.items():
        for region in regions:
            examples = (
                [phonenumbers.example_number_for_non_geo_entity(cc)] if region == "001"
                else [phonenumbers.example_number_for_type(region, t) for t in (0, 1, 2, 3)]
            )
            for example in filter(None, examples):
                e164 = phonenumbers.format_number(example, phonenumbers.PhoneNumberFormat.E164)
                numbers.append(e164)
                for _ in range(3):  # mutate: change a digit, add one, drop one
                    digits = list(e164[1:])
                    kind = rng.integers(3)
                    if kind == 0:
                        digits[rng.integers(len(digits))] = str(rng.integers(10))
                    elif kind == 1:
                        digits.append(str(rng.integers(10)))
                    elif len(digits) > 2:
                        digits.pop()
                    numbers.append("+" + "".join(digits))
    numbers = list(dict.fromkeys(numbers))

    def reference(value: str) -> bool:
        try:
            parsed = phonenumbers.parse(value, None)
        except phonenumbers.NumberParseException:
            return False
        e164 = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
        return phonenumbers.is_valid_number(parsed) and e164 == value

    expected = np.array([reference(v) for v in numbers])
    got = fields.valid_e164(pd.Series(numbers, dtype="str"))
    mismatches = [v for v, e, g in zip(numbers, expected, got, strict=True) if e != g]
    assert not mismatches, mismatches[:10]
    assert expected.sum() > 500 and (~expected).sum() > 500  # both verdicts well represented
