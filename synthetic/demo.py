"""Generated demo datasets with Chinese-locale identities (GENERATED: no real persons or firms).

* ``residents``: one table of residents with valid resident ID numbers (checksums and birth dates
  consistent with age), mobiles, bank cards (Luhn), e-mails, addresses, a diagnosis and free-text
  case notes that mention identifiers the way real notes do.
* ``enterprises``: two tables, enterprises with valid unified social credit codes and their
  legal representatives, and yearly tax filings keyed by the credit code.
* ``population_sample`` (人口抽样): one table whose column names are Chinese (编号, 性别, 年龄, 区县,
  月收入, 诊断), as many holders' own tables are; the two datasets above have ASCII names.

Every table carries a ``generated`` marker in its file name and its contract says ``generated:
true``, which travels into the release's manifest, README and report.

``enclave demo`` keeps the residents' raw files in the data holder's domain (``holder_dir``), where
they stay registered as the source of its masked and synthetic releases.
"""

from __future__ import annotations

import shutil
import tempfile
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from . import identifiers

SURNAMES = list("王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗")
GIVEN = list("伟芳娜秀英敏静丽强磊军洋勇艳杰娟涛明超秀兰霞平刚桂英")
# (division code, province, city, district)
REGIONS = [
    ("110101", "北京市", "北京市", "东城区"),
    ("110105", "北京市", "北京市", "朝阳区"),
    ("310104", "上海市", "上海市", "徐汇区"),
    ("310115", "上海市", "上海市", "浦东新区"),
    ("440106", "广东省", "广州市", "天河区"),
    ("440305", "广东省", "深圳市", "南山区"),
    ("330106", "浙江省", "杭州市", "西湖区"),
    ("510107", "四川省", "成都市", "武侯区"),
    ("420106", "湖北省", "武汉市", "武昌区"),
    ("320102", "江苏省", "南京市", "玄武区"),
]
STREETS = ["人民路", "解放路", "中山路", "建设路", "和平街", "文化路", "长江路", "学府路"]
DIAGNOSES = ["高血压", "2型糖尿病", "哮喘", "冠心病", "慢性胃炎", "无"]
EDUCATION = ["初中", "高中", "大专", "本科", "研究生"]
INDUSTRIES = ["制造业", "批发和零售业", "信息技术服务业", "建筑业", "餐饮业"]
ENTERPRISE_SUFFIX = ["科技有限公司", "贸易有限公司", "建设工程有限公司", "餐饮管理有限公司", "制造有限公司"]
MOBILE_PREFIXES = ["138", "139", "135", "186", "187", "158", "177", "199"]


def _name(rng: np.random.Generator) -> str:
    return str(rng.choice(SURNAMES)) + "".join(rng.choice(GIVEN, size=int(rng.integers(1, 3))))


def resident_id(region: str, birth: date, seq: int) -> str:
    first17 = f"{region}{birth:%Y%m%d}{seq:03d}"
    return first17 + identifiers.resident_id_check_char(first17)


def bank_card(rng: np.random.Generator) -> str:
    body = "62" + "".join(str(d) for d in rng.integers(0, 10, size=16))
    for check in "0123456789":
        if identifiers.luhn_valid(body + check):
            return body + check
    raise AssertionError("unreachable: one check digit always satisfies Luhn")


def uscc(rng: np.random.Generator, region: str) -> str:
    chars = identifiers._USCC_CHARS
    tail = "".join(chars[i] for i in rng.integers(0, 31, size=9))
    first17 = "91" + region + tail
    return first17 + identifiers.uscc_check_char(first17)


def generate_residents(n: int = 2000, seed: int = 7) -> pd.DataFrame:
    """GENERATED residents: one row per person."""
    rng = np.random.default_rng(seed)
    today = date(2026, 1, 1)
    rows, seen = [], set()
    while len(rows) < n:
        region, province, city, district = REGIONS[int(rng.integers(len(REGIONS)))]
        birth = date(1940, 1, 1) + timedelta(days=int(rng.integers(0, 365 * 65)))
        seq = int(rng.integers(0, 1000))
        rid = resident_id(region, birth, seq)
        if rid in seen:
            continue
        seen.add(rid)
        name = _name(rng)
        mobile = str(rng.choice(MOBILE_PREFIXES)) + "".join(str(d) for d in rng.integers(0, 10, size=8))
        card = bank_card(rng)
        email = f"user{int(rng.integers(10_000, 99_999))}@example.cn"
        address = f"{province}{city}{district}{rng.choice(STREETS)}{int(rng.integers(1, 300))}号"
        age = today.year - birth.year
        diagnosis = str(rng.choice(DIAGNOSES, p=[0.3, 0.2, 0.1, 0.1, 0.1, 0.2]))
        income = float(np.round(rng.lognormal(mean=11.0 if age < 65 else 10.3, sigma=0.5), 2))
        visit = today - timedelta(days=int(rng.integers(1, 730)))
        kind = int(rng.integers(0, 5))
        notes = [
            f"{name}来电咨询复诊安排，联系电话{mobile}。",
            f"患者身份证号{rid}，主诉头晕，建议复查。",
            f"已通过邮箱{email}发送检查报告。",
            f"医保报销退款至银行卡{card}。",
            "复诊，血压控制平稳，继续用药。",
        ][kind]
        rows.append({
            "resident_id": rid,
            "name": name,
            "mobile": mobile,
            "bank_card": card,
            "email": email,
            "address": address,
            "education": str(rng.choice(EDUCATION)),
            "income": income,
            "diagnosis": diagnosis,
            "visit_date": visit.isoformat(),
            "notes": notes,
        })
    return pd.DataFrame(rows)


RESIDENTS_CONTRACT = {
    "name": "residents",
    "description": "Residents and their clinic visits (GENERATED demo data)",
    "generated": True,
    "tables": {
        "residents": {
            "path": "residents.generated.csv",
            "primary_key": "resident_id",
            "columns": {
                "resident_id": {"role": "direct_identifier", "type": "string", "treatment": "derive",
                                "derive": ["birth_year_band", "sex", "region"], "band_width": 10, "region_level": 2},
                "name": {"role": "direct_identifier", "type": "string", "treatment": "drop"},
                "mobile": {"role": "direct_identifier", "type": "string", "treatment": "pseudonymise"},
                "bank_card": {"role": "direct_identifier", "type": "string", "treatment": "drop"},
                "email": {"role": "direct_identifier", "type": "string", "treatment": "drop"},
                "address": {"role": "direct_identifier", "type": "string", "treatment": "drop"},
                # Both measures make residents unique beside the quasi-identifiers; the holder keeps
                # them for the analyses the release is for and says why (the manifest keeps the reasons).
                "education": {"role": "measure", "type": "string", "uniqueness_accepted":
                              "Five coarse levels, kept for analyses by education; not in any public register"
                              " the release could be linked with (an acquaintance may know it)."},
                "income": {"role": "measure", "type": "float", "treatment": "top_bottom", "bottom": "p1", "top": "p99",
                           "uniqueness_accepted":
                               "Kept exact (top/bottom coded at p1/p99) for income analyses; incomes are in no"
                               " public source an outsider could link on, and rows leave sandboxes only through"
                               " export review."},
                "diagnosis": {"role": "sensitive", "type": "string"},
                "visit_date": {"role": "date", "type": "date", "treatment": "shift", "entity": "resident_id",
                               "max_days": 90},
                "notes": {"role": "free_text", "type": "string", "treatment": "redact"},
            },
        }
    },
    "privacy": {"k": 5, "l": 2, "max_suppressed": 0.15},
}


def generate_enterprises(n: int = 500, years: tuple[int, ...] = (2022, 2023, 2024), seed: int = 11):
    """GENERATED enterprises and their yearly tax filings: (enterprises, filings)."""
    rng = np.random.default_rng(seed)
    ents, codes = [], set()
    while len(ents) < n:
        region, province, city, district = REGIONS[int(rng.integers(len(REGIONS)))]
        code = uscc(rng, region)
        if code in codes:
            continue
        codes.add(code)
        rep_birth = date(1955, 1, 1) + timedelta(days=int(rng.integers(0, 365 * 45)))
        industry = str(rng.choice(INDUSTRIES))
        ents.append({
            "uscc": code,
            "enterprise_name": f"{city[:-1]}{_name(rng)}{ENTERPRISE_SUFFIX[INDUSTRIES.index(industry)]}",
            "legal_rep_id": resident_id(region, rep_birth, int(rng.integers(0, 1000))),
            "industry": industry,
            "region_code": region,
            "registered_capital": float(np.round(rng.lognormal(6.0, 1.0), 1)),
            "founded": (date(1995, 1, 1) + timedelta(days=int(rng.integers(0, 365 * 28)))).isoformat(),
        })
    enterprises = pd.DataFrame(ents)
    filings = []
    for e in ents:
        base = rng.lognormal(7.0, 1.0)
        for y in years:
            revenue = float(np.round(base * rng.uniform(0.8, 1.3), 1))
            filings.append({
                "filing_id": f"F{y}{len(filings):06d}",
                "uscc": e["uscc"],
                "year": y,
                "revenue": revenue,
                "tax_paid": float(np.round(revenue * rng.uniform(0.02, 0.09), 1)),
                "employees": int(rng.integers(3, 500)),
            })
    return enterprises, pd.DataFrame(filings)


_FIRM_FIGURES = ("Filings of legal persons, kept exact for tax analyses (revenue top-coded at p99, employees"
                 " at 300); no natural person's data.")

ENTERPRISES_CONTRACT = {
    "name": "enterprises",
    "description": "Enterprises and their yearly tax filings (GENERATED demo data)",
    "generated": True,
    "tables": {
        "enterprises": {
            "path": "enterprises.generated.parquet",
            "primary_key": "uscc",
            "columns": {
                "uscc": {"role": "direct_identifier", "type": "string", "treatment": "pseudonymise"},
                "enterprise_name": {"role": "direct_identifier", "type": "string", "treatment": "drop"},
                "legal_rep_id": {"role": "direct_identifier", "type": "string", "treatment": "drop"},
                "industry": {"role": "quasi_identifier", "type": "string"},
                "region_code": {"role": "quasi_identifier", "type": "string", "treatment": "truncate", "keep": 2},
                "registered_capital": {"role": "measure", "type": "float", "uniqueness_accepted":
                                       "Enterprises are legal persons, not natural persons, and registered capital is"
                                       " already public (国家企业信用信息公示系统)."},
                "founded": {"role": "date", "type": "date", "treatment": "shift", "entity": "uscc"},
            },
        },
        "filings": {
            "path": "filings.generated.csv",
            "primary_key": "filing_id",
            "foreign_keys": [{"column": "uscc", "references": "enterprises.uscc"}],
            "columns": {
                "filing_id": {"role": "direct_identifier", "type": "string", "treatment": "pseudonymise"},
                "uscc": {"role": "direct_identifier", "type": "string", "treatment": "pseudonymise"},
                "year": {"role": "measure", "type": "integer"},
                "revenue": {"role": "measure", "type": "float", "treatment": "top_bottom", "top": "p99",
                            "uniqueness_accepted": _FIRM_FIGURES},
                "tax_paid": {"role": "measure", "type": "float", "uniqueness_accepted": _FIRM_FIGURES},
                "employees": {"role": "measure", "type": "integer", "treatment": "top_bottom", "top": 300,
                              "uniqueness_accepted": _FIRM_FIGURES},
            },
        },
    },
    "privacy": {"k": 5, "l": 2, "max_suppressed": 0.15},
}


def generate_population_sample(n: int = 1000, seed: int = 17) -> pd.DataFrame:
    """GENERATED 人口抽样 (population sample): one row per sampled person, Chinese column names."""
    rng = np.random.default_rng(seed)
    districts = [district for _, _, _, district in REGIONS[:6]]
    ages = rng.integers(18, 90, size=n)
    return pd.DataFrame({
        "编号": [f"RK{i:06d}" for i in rng.permutation(n)],
        "性别": rng.choice(["男", "女"], size=n),
        "年龄": ages,
        "区县": rng.choice(districts, size=n),
        "月收入": np.round(rng.lognormal(mean=np.where(ages < 65, 8.8, 8.1), sigma=0.5), 2),
        "诊断": rng.choice(DIAGNOSES, size=n, p=[0.3, 0.2, 0.1, 0.1, 0.1, 0.2]),
    })


POPULATION_SAMPLE_CONTRACT = {
    "name": "population_sample",
    "description": "人口抽样：性别、年龄、区县、月收入与诊断（GENERATED demo data）",
    "generated": True,
    "tables": {
        "人口抽样": {
            "path": "人口抽样.generated.csv",
            "primary_key": "编号",
            "columns": {
                "编号": {"role": "direct_identifier", "type": "string", "treatment": "pseudonymise",
                         "description": "抽样编号"},
                "性别": {"role": "quasi_identifier", "type": "string"},
                "年龄": {"role": "quasi_identifier", "type": "integer", "treatment": "bands",
                         "bins": [18, 30, 45, 60, 75, float("inf")], "description": "周岁"},
                "区县": {"role": "quasi_identifier", "type": "string"},
                "月收入": {"role": "measure", "type": "float", "treatment": "top_bottom", "bottom": "p1",
                           "top": "p99", "description": "元",
                           "uniqueness_accepted": "月收入保留原值（上下1%截尾）用于收入分析；不在任何可链接的公开来源中。"},
                "诊断": {"role": "sensitive", "type": "string"},
            },
        }
    },
    "privacy": {"k": 5, "l": 2, "max_suppressed": 0.15},
}


def write_population_sample(folder: Path, n: int = 1000, seed: int = 17) -> Path:
    """Write the GENERATED 人口抽样 table (UTF-8 CSV, Chinese header) and its contract."""
    folder.mkdir(parents=True, exist_ok=True)
    generate_population_sample(n, seed).to_csv(folder / "人口抽样.generated.csv", index=False)
    path = folder / "population_sample.yaml"
    path.write_text(yaml.safe_dump(POPULATION_SAMPLE_CONTRACT, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


def write_residents(folder: Path, n: int = 2000, seed: int = 7) -> Path:
    """Write the GENERATED residents table (CSV) and its contract; return the contract's path."""
    folder.mkdir(parents=True, exist_ok=True)
    generate_residents(n, seed).to_csv(folder / "residents.generated.csv", index=False)
    path = folder / "residents.yaml"
    path.write_text(yaml.safe_dump(RESIDENTS_CONTRACT, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


def write_enterprises(folder: Path, n: int = 500, seed: int = 11) -> Path:
    """Write the GENERATED enterprises (Parquet) and filings (CSV) and their contract."""
    folder.mkdir(parents=True, exist_ok=True)
    enterprises, filings = generate_enterprises(n, seed=seed)
    enterprises.to_parquet(folder / "enterprises.generated.parquet", index=False)
    filings.to_csv(folder / "filings.generated.csv", index=False)
    path = folder / "enterprises.yaml"
    path.write_text(yaml.safe_dump(ENTERPRISES_CONTRACT, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


DEMO_SOURCE = "residents"


def demo_source_dir(settings) -> Path:
    """Where the demo's raw source lives: in the data holder's domain (``holder_dir``), never in
    the release store and never mounted into a sandbox."""
    return Path(settings.holder_dir) / "demo" / DEMO_SOURCE


def write_demo_source(settings, rows: int = 2000) -> Path:
    """The demo's GENERATED raw residents and their contract, kept in the holder's domain (folders
    0700, files 0600) so that the source stays registered behind its releases; written once.
    Returns the contract's path."""
    folder = demo_source_dir(settings)
    contract = folder / "residents.yaml"
    if contract.is_file():
        return contract
    folder.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = Path(tempfile.mkdtemp(prefix=".residents.", suffix=".partial", dir=folder.parent))
    try:
        write_residents(tmp, n=rows)
        for p in tmp.iterdir():
            p.chmod(0o600)
        tmp.rename(folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return contract


def _latest(settings, method: str) -> str | None:
    from . import store

    found = [r for r in store.releases(settings.release_store) if r.startswith(f"{DEMO_SOURCE}@")
             and store.manifest(settings.release_store, r).get("method") == method]
    return max(found, key=lambda r: int(r.split("@")[1]) if r.split("@")[1].isdigit() else 0) if found else None


def publish_demo_release(settings, rows: int = 2000) -> str:
    """A masked ``residents`` release from GENERATED data; the latest one if it already exists.

    The raw data is generated once into the holder's domain (:func:`write_demo_source`) and stays
    there, registered as the source ``residents``: only the masked release reaches the store.
    """
    from . import pipeline

    return _latest(settings, "masked") or pipeline.release(
        settings, write_demo_source(settings, rows), "masked", by="demo", progress=False).release


def publish_demo_synthetic_release(settings, rows: int = 2000) -> str:
    """A synthetic ``residents`` release of the same source (GaussianCopula, the contract's defaults),
    whose sealed view sealed runs use; the latest one if it already exists."""
    from . import pipeline

    return _latest(settings, "synthetic") or pipeline.release(
        settings, write_demo_source(settings, rows), "synthetic", by="demo", progress=False).release
