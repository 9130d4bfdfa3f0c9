"""`winback segment` end to end: validation with quarantine, segmentation, output file, summary."""

from __future__ import annotations

import pandas as pd
import pytest

from winback.cli import main
from winback.segments import SEGMENT_COLUMNS


def _write_inputs(tmp_path):
    ids = [f"c{i}" for i in range(40)]
    customers = pd.DataFrame({
        "customer_id": ids + ["c0"],  # the duplicate goes to the quarantine
        "email": [f"{c}@example.com" for c in ids] + ["dup@example.com"],
        "phone": ["+8613800138000"] * 41,
        "locale": ["zh-CN"] * 41,
        "timezone": ["Asia/Shanghai"] * 41,
        "email_opt_in": ["true"] * 41,
        "sms_opt_in": ["false"] * 41,
        "account_manager": ["王芳" if i % 5 == 0 else "李雷" for i in range(41)],
    })
    rows = []
    for i, cid in enumerate(ids[:-2]):  # c38 and c39 never ordered
        gap = 10 + i
        for k, d in enumerate(range(i * 3, 600, gap)):
            day = pd.Timestamp("2026-06-30", tz="Asia/Shanghai") - pd.Timedelta(days=d)
            rows.append((f"o{cid}-{k}", cid, day.isoformat(), 100 + i, "tea" if k % 2 else "coffee",
                         5 if i % 3 == 0 else 0))
    rows.append(("bad-amount", "c1", "2026-06-01T10:00:00+08:00", "-5", "tea", 0))
    rows.append(("ghost", "nobody", "2026-06-01T10:00:00+08:00", "10", "tea", 0))
    orders = pd.DataFrame(rows, columns=["order_id", "customer_id", "ordered_at", "amount", "category", "discount"])
    complaints = pd.DataFrame({"customer_id": ["c3"], "created_at": ["2026-06-20T10:00:00+08:00"],
                               "kind": ["delivery"], "resolved": ["false"]})
    paths = {name: tmp_path / f"{name}.csv" for name in ("customers", "orders", "complaints")}
    customers.to_csv(paths["customers"], index=False)
    orders.to_csv(paths["orders"], index=False)
    complaints.to_csv(paths["complaints"], index=False)
    return paths, len(customers), len(orders)


def test_segment_command_writes_one_row_per_valid_customer(tmp_path, capsys):
    paths, n_customers, _ = _write_inputs(tmp_path)
    managers = tmp_path / "departed.txt"
    managers.write_text("# left in May\n王芳,2026-05-15\n", encoding="utf-8")
    out = tmp_path / "out" / "segments.parquet"
    quarantine = tmp_path / "quarantine.csv"
    code = main([
        "segment", "--customers", str(paths["customers"]), "--orders", str(paths["orders"]),
        "--complaints", str(paths["complaints"]), "--as-of", "2026-06-30",
        "--departed-managers", str(managers), "--quarantine", str(quarantine), "--out", str(out),
    ])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    segments = pd.read_parquet(out)
    assert list(segments.columns) == list(SEGMENT_COLUMNS)
    quarantined = pd.read_csv(quarantine)
    bad_customers = quarantined[quarantined["table"] == "customers"]["row"].nunique()
    assert len(segments) + bad_customers == n_customers  # quarantined + output = input
    assert segments["customer_id"].is_unique
    assert set(segments.loc[segments["customer_id"].isin(["c38", "c39"]), "lapse_stage"]) == {"no_orders"}
    by_id = segments.set_index("customer_id")
    assert by_id.loc["c5", "manager_departed"] and by_id.loc["c35", "manager_departed"]
    # 王芳 left on 2026-05-15: c25's last order was 30 days before that (within manager_lead_days), a
    # reason; c30 and c35 had gone quiet 45 and 60 days before she left: other reasons, though their
    # manager still counts as departed.
    assert by_id.loc["c25", "likely_reason"] == "manager_left"
    assert by_id.loc["c30", "likely_reason"] == "price" and by_id.loc["c35", "likely_reason"] == "forgotten"
    assert by_id.loc["c3", "complaint_open"]
    assert "lapse stage × value tier" in captured.out and "Input validation" in captured.out
    assert "quarantine" in captured.out


def test_segment_command_csv_output_and_comma_separated_managers(tmp_path, capsys):
    paths, _, _ = _write_inputs(tmp_path)
    out = tmp_path / "segments.csv"
    assert main(["segment", "--customers", str(paths["customers"]), "--orders", str(paths["orders"]),
                 "--as-of", "2026-06-30", "--departed-managers", "王芳, 张伟", "--out", str(out)]) == 0
    segments = pd.read_csv(out, encoding="utf-8-sig")
    assert segments["manager_departed"].sum() == 8  # c0, c5, …, c35
    assert "no_orders" in capsys.readouterr().out
    # A date after a name is that name's (the file form's `name,YYYY-MM-DD`).
    assert main(["segment", "--customers", str(paths["customers"]), "--orders", str(paths["orders"]),
                 "--as-of", "2026-06-30", "--departed-managers", "王芳,2026-05-15, 张伟", "--out", str(out)]) == 0
    dated = pd.read_csv(out, encoding="utf-8-sig").set_index("customer_id")
    assert dated["manager_departed"].sum() == 8
    assert dated.loc["c25", "likely_reason"] == "manager_left" and dated.loc["c35", "likely_reason"] == "forgotten"


@pytest.mark.parametrize("extra, message", [
    (["--strict"], "Error:"),
    (["--out-format-wrong"], "No such option"),
])
def test_segment_command_bad_input_exits_nonzero(tmp_path, capsys, extra, message):
    paths, _, _ = _write_inputs(tmp_path)
    args = ["segment", "--customers", str(paths["customers"]), "--orders", str(paths["orders"]),
            "--out", str(tmp_path / "s.parquet"), *extra]
    assert main(args) != 0
    assert message in capsys.readouterr().err


def test_segment_command_rejects_unknown_output_type_and_missing_file(tmp_path, capsys):
    paths, _, _ = _write_inputs(tmp_path)
    assert main(["segment", "--customers", str(paths["customers"]), "--orders", str(paths["orders"]),
                 "--out", str(tmp_path / "s.xlsx")]) == 1
    assert "Error:" in capsys.readouterr().err
    assert main(["segment", "--customers", str(tmp_path / "nope.csv"), "--orders", str(paths["orders"]),
                 "--out", str(tmp_path / "s.csv")]) == 1
    assert "nope.csv" in capsys.readouterr().err
