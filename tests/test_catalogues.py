"""The Chinese catalogue is complete and true to its sources, and the locale core chooses and formats
as a Chinese or an English reader expects.

The texts are extracted here, in-process, as ``make catalogues`` extracts them (``babel.cfg``, Babel's
extract API): a text marked for translation that the ``zh_CN`` catalogue lacks, leaves empty or
marks fuzzy fails the test, and so does a translation whose placeholders (``%(name)s``, ``{name}``)
or HTML tags differ from its source's.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from pathlib import Path

import pytest
from babel.messages.catalog import Catalog
from babel.messages.extract import DEFAULT_KEYWORDS, extract_from_dir
from babel.messages.frontend import parse_mapping_cfg
from babel.messages.pofile import read_po

from enclave import i18n

REPO = Path(__file__).resolve().parents[1]

# %(name)s and %s-style conversions (Python and Jinja2's new-style gettext), and str.format fields.
PLACEHOLDER = re.compile(r"%(?:\(\w+\))?[-#0 +]*\d*(?:\.\d+)?[diouxXeEfFgGcrsa]|\{\w*\}")
TAG = re.compile(r"</?[a-zA-Z][^>]*>")


def extracted() -> Catalog:
    """Every text ``babel.cfg`` covers, as ``pybabel extract`` finds it."""
    with open(REPO / "babel.cfg") as f:
        method_map, options_map = parse_mapping_cfg(f)
    catalog = Catalog()
    for filename, lineno, message, comments, context in extract_from_dir(
            str(REPO), method_map, options_map, keywords=DEFAULT_KEYWORDS):
        catalog.add(message, None, [(filename, lineno)], auto_comments=comments, context=context)
    return catalog


def placeholders(text: str) -> list[str]:
    return sorted(m.group(0) for m in PLACEHOLDER.finditer(text.replace("%%", "")))


def problems(source: Catalog, translated: Catalog) -> list[str]:
    """What is wrong with ``translated`` for the texts of ``source``: each problem in a sentence."""
    found = []
    for message in source:
        if not message.id:
            continue
        shown = message.id if isinstance(message.id, str) else message.id[0]
        where = ", ".join(f"{path}:{line}" for path, line in message.locations)
        entry = translated.get(message.id, context=message.context)
        strings = (entry.string if isinstance(entry.string, tuple) else (entry.string,)) if entry else ()
        if entry is None or not all(strings):
            found.append(f"no translation of {shown!r} ({where})")
            continue
        if entry.fuzzy:
            found.append(f"the translation of {shown!r} is marked fuzzy ({where}): check it and remove the mark")
            continue
        ids = message.id if isinstance(message.id, tuple) else (message.id,)
        # A plural's forms may each leave out the number ("one file"), so compare with them all.
        expected = sorted(set().union(*(placeholders(i) for i in ids)))
        for string in strings:
            if sorted(set(placeholders(string))) != expected:
                found.append(f"the translation {string!r} of {shown!r} has placeholders {placeholders(string)},"
                             f" the source {expected} ({where})")
            if sorted(TAG.findall(string)) != sorted(TAG.findall(ids[0])):
                found.append(f"the translation {string!r} of {shown!r} has HTML tags {TAG.findall(string)},"
                             f" the source {TAG.findall(ids[0])} ({where})")
    return found


def test_every_text_has_its_chinese_translation_with_the_same_placeholders():
    source = extracted()
    assert len(source) > 150, "babel.cfg extracts the review service's pages"  # it reads the files covered
    with i18n.catalogue_path("zh_CN").open("rb") as f:
        chinese = read_po(f, locale="zh_CN")
    found = problems(source, chinese)
    assert not found, ("the zh_CN catalogue is not complete; run `make catalogues`, then translate:\n"
                       + "\n".join(found))


def test_the_check_catches_a_missing_a_fuzzy_and_an_unfaithful_translation():
    source = Catalog()
    for text in ("Download %(name)s", "Votes", "Decided: %(state)s.", "Signed by <code>%(key)s</code>", "{n} rows"):
        source.add(text, locations=[("page.html", 1)])
    source.add(("%(num)s file", "%(num)s files"), locations=[("page.html", 2)])
    chinese = Catalog(locale="zh_CN")
    chinese.add("Download %(name)s", "下载 %(file)s")  # a placeholder renamed
    chinese.add("Decided: %(state)s.", "已有结果：%(state)s。", flags=["fuzzy"])
    chinese.add("Signed by <code>%(key)s</code>", "由 %(key)s 签名")  # the markup lost
    chinese.add("{n} rows", "{n} 行")
    chinese.add(("%(num)s file", "%(num)s files"), ("%(num)s 个文件",))
    found = problems(source, chinese)
    assert len(found) == 4, found
    assert "placeholders ['%(file)s'], the source ['%(name)s']" in found[0]
    assert found[1].startswith("no translation of 'Votes' (page.html:1)")
    assert "marked fuzzy" in found[2]
    assert "HTML tags [], the source ['<code>', '</code>']" in found[3]


def test_the_catalogue_loads_and_translates():
    assert i18n.translations("zh_CN").gettext("Review queue") == "审核队列"
    chinese = i18n.translations("zh_CN")
    assert chinese.ngettext("%(num)s request", "%(num)s requests", 3) == "共 %(num)s 个导出申请"
    assert i18n.translations("en").gettext("Review queue") == "Review queue"
    with pytest.raises(i18n.UnknownLocale, match="no catalogue for the locale 'fr'"):
        i18n.translations("fr")


@pytest.mark.parametrize(("accept_language", "preference", "locale"), [
    ("zh-CN,zh;q=0.9,en;q=0.8", None, "zh_CN"),
    ("en-US,en;q=0.9", None, "en"),
    ("zh-TW", None, "zh_CN"),  # the one Chinese Enclave has
    ("zh-Hans-CN", None, "zh_CN"),
    ("fr-FR, en;q=0.5, zh;q=0.8", None, "zh_CN"),  # by weight, not by order
    ("de, fr", None, "en"),
    ("zh;q=0, en;q=0.1", None, "en"),
    ("", None, "en"),
    (None, None, "en"),
    ("en;q=oops, zh-CN", None, "zh_CN"),  # a range that does not parse is left out
    ("zh-CN", "en", "en"),  # the account's choice wins over the browser
    ("en", "zh_CN", "zh_CN"),
    ("zh-CN", "fr", "zh_CN"),  # a stored choice Enclave has no catalogue for is passed over
])
def test_negotiate(accept_language, preference, locale):
    assert i18n.negotiate(accept_language, preference) == locale


def test_dates_numbers_sizes_and_lists_follow_the_locale():
    at = datetime(2026, 3, 5, 14, 7, 9, tzinfo=timezone.utc)
    assert i18n.format_datetime(at, "zh_CN") == "2026年3月5日 14:07:09 UTC"
    # CLDR puts a narrow no-break space before the AM/PM marker.
    assert i18n.format_datetime("2026-03-05T14:07:09+00:00", "en") == "Mar 5, 2026, 2:07:09\u202fPM UTC"
    assert i18n.format_datetime("2026-03-05T22:07:09+08:00", "zh_CN", "short") == "2026/3/5 14:07 UTC"
    assert i18n.format_datetime(None, "zh_CN") == ""
    with pytest.raises(ValueError, match="'yesterday' is not an ISO 8601 date and time"):
        i18n.format_datetime("yesterday", "en")
    assert i18n.format_decimal(1234567.5, "zh_CN") == "1,234,567.5"
    assert [i18n.format_size(n, "zh_CN") for n in (0, 812, 1234, 1_250_000, 3 * 10**9)] == [
        "0字节", "812字节", "1.2 kB", "1.2 MB", "3 GB"]
    assert [i18n.format_size(n, "en") for n in (1, 812, 999_999)] == ["1 byte", "812 bytes", "1 MB"]
    with pytest.raises(ValueError, match="a size cannot be negative: -1"):
        i18n.format_size(-1, "en")
    assert i18n.format_list(["甲.csv", "乙.csv", "<b>丙</b>"], "zh_CN") == "甲.csv、乙.csv和&lt;b&gt;丙&lt;/b&gt;"
    assert i18n.format_list(["a", "b"], "en") == "a and b"


def test_templates_render_in_the_chosen_language():
    env = i18n.environment("zh_CN", autoescape=True)
    page = env.from_string('<html lang="{{ html_lang }}">{{ _("Download %(name)s", name=name) }} · {{ n | size }}'
                           ' · {{ ngettext("%(num)s request", "%(num)s requests", 2) }}')
    assert page.render(name="<报告>.csv", n=2048) == (
        '<html lang="zh-CN">下载 &lt;报告&gt;.csv · 2 kB · 共 2 个导出申请')
    english = i18n.environment("en").from_string("{{ _('Review queue') }} {{ html_lang }}")
    assert english.render() == "Review queue en"


@pytest.mark.parametrize("environ, locale", [
    ({"LANG": "zh_CN.UTF-8"}, "zh_CN"),
    ({"LC_ALL": "zh_TW.UTF-8", "LANG": "en_US.UTF-8"}, "zh_CN"),
    ({"LC_MESSAGES": "en_GB.UTF-8", "LANG": "zh_CN.UTF-8"}, "en"),
    ({"LANGUAGE": "fr:zh_CN", "LANG": "en_US.UTF-8"}, "zh_CN"),
    ({"LANGUAGE": "zh_CN", "LANG": "C.UTF-8"}, "en"),  # the C locale: gettext ignores LANGUAGE
    ({"LANG": "de_DE.UTF-8"}, "en"),
    ({}, "en"),
])
def test_a_commands_locale_comes_from_its_environment_as_gettext_reads_it(environ, locale):
    assert i18n.locale_from_environment(environ) == locale


def test_a_message_keeps_its_code_and_renders_in_the_readers_language():
    message = i18n.Message("review.commented", i18n.N_("Your comment is added."))
    assert (message.code, str(message)) == ("review.commented", "Your comment is added.")
    assert message.render("zh_CN") == "您的评论已添加。"
    with pytest.raises(i18n.UnknownLocale):
        message.render("fr")
