"""Identifier patterns: check digits, shapes, boundaries, and redaction in Chinese text."""

from datetime import date

import pandas as pd
import pytest

from synthetic import demo, identifiers


def test_resident_id_check_character_and_birth_date():
    rid = demo.resident_id("110105", date(1985, 3, 7), 123)
    assert identifiers.is_resident_id(rid)
    wrong = rid[:17] + ("0" if rid[17] != "0" else "1")
    assert not identifiers.is_resident_id(wrong)
    # The check character is right but 31 February is not a birth date.
    first17 = "11010519850231123"
    assert not identifiers.is_resident_id(first17 + identifiers.resident_id_check_char(first17))
    parsed = identifiers.parse_resident_id(rid)
    assert (parsed.region, parsed.birth_date, parsed.sex) == ("110105", date(1985, 3, 7), "M")
    assert identifiers.parse_resident_id(demo.resident_id("110105", date(1985, 3, 7), 122)).sex == "F"
    with pytest.raises(ValueError, match="not a valid resident ID"):
        identifiers.parse_resident_id(wrong)


def test_known_valid_x_check_character():
    # 11010519491231002X is the standard's worked example.
    assert identifiers.is_resident_id("11010519491231002X")
    assert identifiers.is_resident_id("11010519491231002x")


def test_bank_card_luhn_and_uscc_check():
    assert identifiers.is_bank_card("6222021234567890128") is identifiers.luhn_valid("6222021234567890128")
    assert identifiers.luhn_valid("4111111111111111")
    assert not identifiers.luhn_valid("4111111111111112")
    assert identifiers.is_uscc("91350100M000100Y43")  # a published example code
    assert not identifiers.is_uscc("91350100M000100Y44")


def test_find_in_chinese_text_each_kind():
    rid = demo.resident_id("310104", date(1990, 1, 2), 456)
    text = (f"张伟，身份证{rid}，手机+86 13812345678，卡号4111 1111 1111 1111，"
            "单位代码91350100M000100Y43，邮箱zhang.wei@example.cn。")
    kinds = [f.kind for f in identifiers.find(text)]
    assert kinds == ["resident_id", "mobile", "bank_card", "uscc", "email"]
    redacted = identifiers.redact(text)
    assert redacted == ("张伟，身份证[resident_id]，手机[mobile]，卡号[bank_card]，"
                        "单位代码[uscc]，邮箱[email]。")


def test_no_identifier_inside_longer_alphanumeric_runs():
    # A pseudonym or hash that happens to contain a mobile-shaped run is not a mobile number.
    assert identifiers.find("a13812345678b") == []
    assert identifiers.find("913812345678") == []
    assert identifiers.find("订单号 4111111111111112 已支付") == []  # fails Luhn


def test_scan_series_counts_rows_per_kind():
    s = pd.Series(["电话13812345678", "电话13812345678", "无", None, "a@b.cn 和 13912345678"])
    assert identifiers.scan_series(s) == {"mobile": 3, "email": 1}
    assert identifiers.scan_series(pd.Series([1, 2, 3])) == {}
