"""The operators' environment: modelling on a Parquet release with a chart in Chinese, and an admin
adding a package to the environment, each in a real sandbox through a real hub.

This module's hub runs on a throwaway copy of the operators' environment (hard links to
``.venv-sandbox``: adding a package only adds files, and the CLI replaces rather than rewrites the
one file it keeps), so what the tests add never reaches the environment other tests use.
"""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import subprocess
import zipfile
from pathlib import Path

import pandas as pd
import pytest
from conftest import PASSWORD
from enclave_testing import REPO, grant

from enclave import accounts, workspaces
from enclave.settings import Settings

RESIDENTS = pd.DataFrame({
    "街道": ["和平", "和平", "南开", "南开", "河西", "河西", "河东", "河东"] * 5,
    "年龄": [34, 51, 29, 62, 45, 38, 57, 41] * 5,
    "户人数": [3, 2, 4, 1, 3, 5, 2, 3] * 5,
    "月收入": [8200, 9100, 6100, 4300, 7700, 8800, 5200, 6900] * 5,
})


def _publish_parquet(home: Path, release: str) -> None:
    """A release as the data holder writes one: Parquet, read-only, readable by the sandboxes' uids."""
    data = home / "releases" / release / "data"
    data.mkdir(parents=True)
    RESIDENTS.to_parquet(data / "residents.parquet", index=False)
    (data / "residents.parquet").chmod(0o444)
    data.chmod(0o555)


@pytest.fixture(scope="module")
def operators_env(tmp_path_factory):
    copy = tmp_path_factory.mktemp("operators-env") / "env"
    subprocess.run(["cp", "-al", str((REPO / ".venv-sandbox").resolve()), str(copy)], check=True)
    yield copy
    shutil.rmtree(copy)


@pytest.fixture(scope="module")
def operators_hub(hub_factory, operators_env):
    """A hub whose sandboxes mount ``operators_env``: alice operates workspace ``modelling``, which
    has the Parquet release residents@1."""
    hub = hub_factory("operators", ENCLAVE_SANDBOX__PYTHON_ENV=str(operators_env), ENCLAVE_SANDBOX__IDLE_TIMEOUT="0")
    settings = Settings(home=hub.home)
    _publish_parquet(hub.home, "residents@1")
    accounts.add_user(settings, "alice", ["operator"], PASSWORD)
    workspaces.create(settings, "modelling")
    workspaces.add_member(settings, "modelling", "alice", "operator")
    grant(settings, "modelling", "residents@1")
    hub.start()
    yield hub
    hub.stop()
    hub.stop_all_sandboxes()  # before the environment they mount goes


@pytest.fixture(scope="module")
def modeller(operators_hub):
    alice = operators_hub.login("alice", PASSWORD)
    r = alice.start("modelling")
    assert r.status_code == 200, r.text
    return alice


def test_a_parquet_release_a_model_and_a_chart_in_chinese_with_no_missing_glyph(modeller):
    kernel = modeller.kernel("modelling")
    out, err = kernel.run(
        "import json, os, warnings\n"
        "import matplotlib, matplotlib.pyplot as plt, pandas as pd, seaborn as sns\n"
        "from sklearn.linear_model import LinearRegression\n"
        "family = matplotlib.rcParams['font.family']\n"
        "df = pd.read_parquet('/data/residents@1/residents.parquet')\n"
        "model = LinearRegression().fit(df[['年龄', '户人数']], df['月收入'])\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        "    fig, ax = plt.subplots(figsize=(6, 4))\n"
        "    sns.barplot(data=df, x='街道', y='月收入', ax=ax)\n"
        "    ax.set_title('各街道居民平均月收入')\n"
        "    ax.set_xlabel('街道')\n"
        "    ax.set_ylabel('月收入（元）')\n"
        "    os.makedirs('图表', exist_ok=True)\n"
        "    fig.savefig('图表/月收入.png', dpi=80)\n"
        "    sns.set_theme(font='Noto Sans CJK SC')  # seaborn's theme names its own fonts (README)\n"
        "    fig, ax2 = plt.subplots()\n"
        "    sns.histplot(df['月收入'], ax=ax2).set_title('月收入分布')\n"
        "    fig.savefig('图表/分布.png', dpi=80)\n"
        "mounts = [l.split() for l in open('/proc/self/mountinfo')]\n"
        "try:\n"
        "    open(f'{matplotlib.get_cachedir()}/fontlist-v{matplotlib.font_manager.FontManager.__version__}.json', 'a')\n"
        "    poisoned = 'written'\n"
        "except OSError as exc:\n"
        "    poisoned = exc.strerror\n"
        "print(json.dumps({\n"
        "    'rows': len(df), 'r2': model.score(df[['年龄', '户人数']], df['月收入']),\n"
        "    'ticks': [t.get_text() for t in ax.get_xticklabels()],\n"
        "    'glyph_warnings': [str(w.message) for w in caught if 'missing from font' in str(w.message)],\n"
        "    'rc': matplotlib.matplotlib_fname(), 'family': family,\n"
        "    'cache_dir': matplotlib.get_cachedir(),\n"
        "    'font_cache': [m[5].split(',')[0] for m in mounts if m[4].startswith('/tmp/matplotlib/fontlist-v')],\n"
        "    'poisoned': poisoned, 'png': open('图表/月收入.png', 'rb').read(8).hex()}, ensure_ascii=False))\n")
    assert err is None, err
    result = json.loads(next(line for line in out.splitlines() if line.startswith("{")))
    # With nothing set by the operator: the environment's matplotlibrc, Noto Sans CJK SC as the
    # fallback, and the prebuilt font list read-only in a writable config folder of the kernel's own.
    assert result["rc"] == "/opt/enclave/env/etc/matplotlibrc"
    assert result["family"] == ["DejaVu Sans", "Noto Sans CJK SC", "WenQuanYi Micro Hei"]
    assert result["cache_dir"] == "/tmp/matplotlib"
    assert result["font_cache"] == ["ro"]
    # The font list every sandbox reads cannot be changed from one of them (root's file, on a
    # read-only mount).
    assert result["poisoned"] in ("Permission denied", "Read-only file system")
    # Everything the cell printed, the inline display of the figure included: no glyph went missing.
    assert "missing from font" not in out, out
    assert "joblib will operate in serial mode" not in out, out
    assert result["rows"] == len(RESIDENTS) and 0 <= result["r2"] <= 1
    assert result["ticks"] == ["和平", "南开", "河西", "河东"]
    assert result["glyph_warnings"] == []
    assert result["png"] == b"\x89PNG\r\n\x1a\n".hex()
    kernel.close()


def _wheel(folder: Path, name: str, version: str, modules: dict[str, str], requires: tuple[str, ...] = ()) -> None:
    """A pure-Python wheel, as a build backend makes one."""
    info = f"{name.replace('-', '_')}-{version}.dist-info"
    files = dict(modules)
    files[f"{info}/METADATA"] = (f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
                                 + "".join(f"Requires-Dist: {r}\n" for r in requires))
    files[f"{info}/WHEEL"] = "Wheel-Version: 1.0\nGenerator: enclave-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    record = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(text.encode())}")
    files[f"{info}/RECORD"] = "\n".join(record + [f"{info}/RECORD,,"]) + "\n"
    with zipfile.ZipFile(folder / f"{name.replace('-', '_')}-{version}-py3-none-any.whl", "w") as whl:
        for path, text in files.items():
            whl.writestr(path, text)


@pytest.fixture(scope="module")
def wheels(tmp_path_factory):
    """district-report 0.1.0, which needs district-indicators 0.1.0: a local folder, no index."""
    folder = tmp_path_factory.mktemp("wheels")
    _wheel(folder, "district-indicators", "0.1.0", {
        "district_indicators/__init__.py": '"""街道指标。"""\n\ndef per_capita(total, people):\n    return total / people\n'})
    _wheel(folder, "district-report", "0.1.0", {
        "district_report/__init__.py": "from district_indicators import per_capita\n\n"
                                       "def summary(name, total, people):\n"
                                       "    return f'{name}：人均 {per_capita(total, people):.1f}'\n"},
           requires=("district-indicators==0.1.0",))
    return folder


def test_an_admin_adds_a_pinned_package_and_a_new_kernel_imports_it(operators_hub, operators_env, modeller, wheels):
    def add(*args):
        return operators_hub.enclave("environment", "add", *args, "--find-links", str(wheels))

    refusals = {
        "district-report": "is not pinned",
        "district-report>=0.1": "is not pinned",
        "oauthenticator==17.4.0": "hub-side package (requirements/hub.txt)",
        "enclave==0.1.0": "hub-side package",
        "pandas==2.2.3": "pandas 2.3.3 is already in the operators' environment (pinned in requirements/sandbox.txt)",
        "district-report==0.1.0": "needs packages the operators' environment does not have: district-indicators==0.1.0",
    }
    for requirement, error in refusals.items():
        r = add(requirement)
        assert r.returncode == 1 and error in r.stderr, (requirement, r.stdout, r.stderr)
    assert operators_hub.enclave("environment", "list", "--added").stdout == ""
    assert operators_hub.audit_records(action="environment.package_add") == []

    r = add("district-report==0.1.0", "district-indicators==0.1.0", "--reason", "按街道汇总")
    assert r.returncode == 0, r.stderr
    assert "added district-report==0.1.0" in r.stdout and "added district-indicators==0.1.0" in r.stdout
    listed = [line.split() for line in operators_hub.enclave("environment", "list").stdout.splitlines()]
    assert ["district-report", "0.1.0", "added"] in listed and ["district-indicators", "0.1.0", "added"] in listed
    assert ["pandas", "2.3.3", "requirements"] in listed
    [record] = operators_hub.audit_records(action="environment.package_add")
    assert record["detail"] == {"packages": ["district-indicators==0.1.0", "district-report==0.1.0"],
                                "reason": "按街道汇总"}
    again = add("district-indicators==0.1.0")
    assert again.returncode == 0 and "already installed" in again.stdout

    kernel = modeller.kernel("modelling")
    out, err = kernel.run("import district_report\nprint(district_report.summary('和平', 900, 3))")
    assert err is None and out.strip() == "和平：人均 300.0"
    kernel.close()
    # The shared environment did not get it.
    assert not list((REPO / ".venv-sandbox").glob("lib/python3*/site-packages/district_report"))
    assert list(operators_env.glob("lib/python3*/site-packages/district_report"))
