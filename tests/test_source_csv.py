"""The csv source on real files: BOM, missing values, bad rows, missing files, duplicates, end to end."""

import datetime as dt

import psycopg

from syncd.config import CsvConfig
from syncd.sources.base import DayFailure
from syncd.sources.csvdir import CsvSource

HEADER = "code,open,high,low,close,pre_close,volume,amount,turnover,pct_change"


def _write(folder, day, lines, bom=False):
    path = folder / f"{day}.csv"
    path.write_text(("\ufeff" if bom else "") + "\n".join([HEADER, *lines]) + "\n", encoding="utf-8")
    return path


def _read(folder, day):
    return CsvSource(CsvConfig(path=str(folder))).read_day(dt.date.fromisoformat(day))


def test_csv_reads_rows_in_contract_units_and_tolerates_a_bom(tmp_path):
    _write(tmp_path, "2025-10-09", ["600000,10.1,10.5,10.0,10.4,10.2,123400,1283360.5,0.12,1.96"], bom=True)
    rows = _read(tmp_path, "2025-10-09")
    assert rows == [("600000", 10.1, 10.5, 10.0, 10.4, 10.2, 123400, 1283360.5, 0.12, 1.96, None)]  # adj_factor: derived


def test_csv_columns_in_any_order_and_empty_cells_are_null(tmp_path):
    (tmp_path / "2025-10-09.csv").write_text("close,code,open,high,low,pre_close,volume,amount,turnover,pct_change\n"
                                             "10.4,000001,,,,10.2,0,0,,\n")
    assert _read(tmp_path, "2025-10-09") == [("000001", None, None, None, 10.4, 10.2, 0, 0.0, None, None, None)]


def test_csv_missing_file_fails_the_day_naming_the_file(tmp_path):
    result = _read(tmp_path, "2025-10-09")
    assert isinstance(result, DayFailure)
    assert str(tmp_path / "2025-10-09.csv") in result.error and "no file" in result.error


def test_csv_bad_number_names_file_line_and_column(tmp_path):
    path = _write(tmp_path, "2025-10-09", ["600000,10.1,10.5,10.0,10.4,10.2,100,1000,0.1,1.0",
                                           "600001,10.1,10.5,10.0,abc,10.2,100,1000,0.1,1.0"])
    result = _read(tmp_path, "2025-10-09")
    assert isinstance(result, DayFailure)
    assert f"{path} line 3" in result.error and "close" in result.error and "'abc'" in result.error


def test_csv_wrong_field_count_duplicate_code_fractional_volume_and_bad_header(tmp_path):
    _write(tmp_path, "2025-10-09", ["600000,10.1,10.5"])
    assert "line 2: expected 10 fields, got 3" in _read(tmp_path, "2025-10-09").error
    _write(tmp_path, "2025-10-10", ["600000,1,1,1,1,1,100,1,1,1", "600000,1,1,1,1,1,100,1,1,1"])
    assert "line 3: code 600000 already appears on line 2" in _read(tmp_path, "2025-10-10").error
    _write(tmp_path, "2025-10-13", ["600000,1,1,1,1,1,100.5,1,1,1"])
    assert "line 2: volume '100.5' is not a whole number" in _read(tmp_path, "2025-10-13").error
    (tmp_path / "2025-10-14.csv").write_text("code,open,close\n600000,1,1\n")
    assert "line 1: bad header" in _read(tmp_path, "2025-10-14").error
    (tmp_path / "2025-10-15.csv").write_bytes(HEADER.encode() + b"\n600000,\xff\xfe,1,1,1,1,1,1,1,1\n")
    assert "not UTF-8" in _read(tmp_path, "2025-10-15").error


def test_csv_bad_row_fails_the_day_end_to_end_and_loads_nothing_of_it(syncd_factory, database, short_tmp):
    data = short_tmp / "data"
    data.mkdir()
    good = ["600000,10.1,10.5,10.0,10.4,10.2,100,1000,0.1,1.0", "600001,5.0,5.1,4.9,5.0,5.0,200,1000,0.2,0.0"]
    _write(data, "2025-10-09", good, bom=True)
    bad = _write(data, "2025-10-10", [*good, "600002,oops,1,1,1,1,1,1,1,1"])
    daemon = syncd_factory({"source": {"name": "csv", "csv": {"path": str(data)}}})
    client = daemon.client()
    client.start("2025-10-09", "2025-10-13")  # 10-13 has no file
    run = daemon.wait_idle().last_run
    assert run.status == "partial" and run.days_failed == 2 and run.rows == 2
    days = {d.date: d for d in client.days("2025-10-09", "2025-10-13")}
    assert days["2025-10-10"].status == "failed" and f"{bad} line 4" in days["2025-10-10"].error
    assert days["2025-10-13"].status == "failed" and "no file" in days["2025-10-13"].error
    with psycopg.connect(database) as conn:
        counts = dict(conn.execute("SELECT trade_date::text, count(*) FROM daily_bars GROUP BY 1").fetchall())
    assert counts == {"2025-10-09": 2}


GBK_FILE = (HEADER + "\r\n600000,10.1,10.5,10.0,10.4,10.2,123400,1283360.5,0.12,1.96\r\n"
            "000001,9.5,9.6,9.4,9.45,9.39,1.2e6,,,\r\n")


def _csv(folder, encoding):
    return CsvSource(CsvConfig(path=str(folder), encoding=encoding))


def test_csv_reads_gbk_and_gb18030_files_from_chinese_tools(tmp_path):
    for encoding in ("gbk", "gb18030"):
        source = _csv(tmp_path, encoding)
        (tmp_path / "2025-10-09.csv").write_bytes(GBK_FILE.encode(encoding))  # CRLF, scientific notation, blanks
        assert source.read_day(dt.date(2025, 10, 9)) == [
            ("600000", 10.1, 10.5, 10.0, 10.4, 10.2, 123400, 1283360.5, 0.12, 1.96, None),  # adj_factor: none in csv
            ("000001", 9.5, 9.6, 9.4, 9.45, 9.39, 1200000, None, None, None, None)]
        # Chinese text (not UTF-8 bytes) is read as the characters it is: here a column the format lacks
        (tmp_path / "2025-10-09.csv").write_bytes((HEADER + ",名称\n").encode(encoding))
        result = source.read_day(dt.date(2025, 10, 9))
        assert isinstance(result, DayFailure) and "unexpected: 名称" in result.error


def test_csv_gbk_bytes_under_the_utf8_default_fail_with_the_setting_that_fits(tmp_path):
    (tmp_path / "2025-10-09.csv").write_bytes(("代码" + HEADER[4:] + "\n").encode("gbk"))
    result = _csv(tmp_path, "utf-8").read_day(dt.date(2025, 10, 9))
    assert isinstance(result, DayFailure)
    assert "not UTF-8" in result.error and 'encoding = "gbk"' in result.error and "at byte 0" in result.error


def test_csv_utf8_bytes_under_gbk_fail_with_the_setting_that_fits(tmp_path):
    (tmp_path / "2025-10-09.csv").write_bytes(("代码,股票" + "\n").encode("utf-8")[:7] + b"\xff\n")
    result = _csv(tmp_path, "gbk").read_day(dt.date(2025, 10, 9))
    assert isinstance(result, DayFailure) and "not GBK" in result.error


def test_csv_bytes_in_no_encoding_fail_clearly(tmp_path):
    (tmp_path / "2025-10-09.csv").write_bytes(HEADER.encode() + b"\n\xff\xfe\xfd\n")
    result = _csv(tmp_path, "gb18030").read_day(dt.date(2025, 10, 9))
    assert isinstance(result, DayFailure) and "not GB18030" in result.error and "set [source.csv]" not in result.error


def test_csv_bom_is_tolerated_whatever_the_encoding_setting(tmp_path):
    _write(tmp_path, "2025-10-09", ["600000,10.1,10.5,10.0,10.4,10.2,123400,1283360.5,0.12,1.96"], bom=True)
    for encoding in ("utf-8", "gbk", "gb18030"):
        assert len(_csv(tmp_path, encoding).read_day(dt.date(2025, 10, 9))) == 1
