"""The ``enclave`` command's errors in its user's language: Chinese under a ``zh_CN`` locale, English
under ``C.UTF-8``, each with its stable code next to the text (issue #17).

The refusals come from the real command, as an admin or a data holder runs it (a process each, on a
throwaway ENCLAVE_HOME whose audit and provisioning services run, as beside a hub); click's usage
errors from the command run in-process (click's texts are translated while a command runs, and given
back after it: an English run after a Chinese one is English).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import click
import pytest
import yaml
from click.testing import CliRunner

from audit.conftest import AuditHome
from enclave import accounts, workspaces
from enclave.cli import main
from enclave.cli.click_texts import CLICK_TEXTS
from enclave_testing import ENCLAVE, beside_a_hub
from synthetic.contract import ContractError, load_contract, load_tables
from synthetic.gates import GateFailure, GateResult

CHINESE = {"LANG": "zh_CN.UTF-8", "LANGUAGE": "", "LC_ALL": "", "LC_MESSAGES": ""}
ENGLISH = {"LANG": "C.UTF-8", "LANGUAGE": "", "LC_ALL": "", "LC_MESSAGES": ""}
CONTRACT = {
    "name": "people",
    "tables": {"people": {"path": "people.csv", "columns": {
        "身份证号": {"role": "direct_identifier", "type": "string", "treatment": "drop"},
        "年龄": {"role": "quasi_identifier", "type": "integer"},
    }}},
}


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """An Enclave home with its audit and provisioning services running, as beside a hub."""
    with beside_a_hub(AuditHome(tmp_path_factory.mktemp("cli-chinese") / "home")) as home:
        yield home


def enclave(home: AuditHome, language: dict, *args: str, input: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(ENCLAVE), *args], env=home.env() | language, input=input, capture_output=True,
                          text=True, timeout=120)


def refusal(home: AuditHome, language: dict, *args: str, input: str | None = None) -> str:
    """The error of a command that must be refused (exit 1), not crash."""
    done = enclave(home, language, *args, input=input)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    return done.stderr


def contract(folder: Path, rows: str = "1,30\n2,abc\n3,41\n", **changes) -> Path:
    """A contract of a small Chinese table (its ``rows``), with ``changes`` to its columns."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "people.csv").write_text("身份证号,年龄\n" + rows, encoding="utf-8")
    described = yaml.safe_load(yaml.safe_dump(CONTRACT))
    columns = described["tables"]["people"]["columns"]
    columns.update(changes)
    path = folder / "people.yaml"
    path.write_text(yaml.safe_dump(described, allow_unicode=True), encoding="utf-8")
    return path


def test_an_unknown_workspace_in_chinese_and_in_english(home):
    assert refusal(home, CHINESE, "workspace", "show", "beta") == \
        "错误：不存在名为 'beta' 的工作空间 [workspace.unknown]\n"
    assert refusal(home, ENGLISH, "workspace", "show", "beta") == "Error: no workspace named 'beta' [workspace.unknown]\n"


def test_the_service_layers_refusals_carry_their_code_from_where_they_are_raised(home):
    """Refusals that no table of the service's English words ever recognised (the command's list of
    them is gone): each is shown in the user's language with the code the service layer raised it
    with, which the provisioning service's answer carries."""
    accounts.add_user(home.settings, "zora", ["operator"], "a-long-enough-password")
    accounts.disable(home.settings, "zora", "借调")
    workspaces.create(home.settings, "coded")
    assert refusal(home, CHINESE, "workspace", "add-member", "coded", "zora", "--role", "operator") == \
        "错误：'zora' 已停用：请先启用该账户 [account.disabled]\n"
    assert refusal(home, ENGLISH, "workspace", "add-member", "coded", "zora", "--role", "operator") == \
        "Error: 'zora' is disabled: enable the account first [account.disabled]\n"
    error = refusal(home, CHINESE, "workspace", "set-limits", "coded", "memory_mb=100")
    assert error.startswith("错误：'coded' 的资源限制无效：memory_mb: ") and error.endswith(" [limits.invalid]\n"), error
    assert refusal(home, CHINESE, "user", "add", "nina", "--role", "operator", "--password-stdin", input="short\n") \
        == "错误：密码太短：至少需要 12 个字符 [account.password_too_short]\n"


def test_a_refusal_of_the_services_schema_has_its_code_too(home):
    """The provisioning service's schema refuses a blank reason before the service layer is asked:
    that refusal has a code of its own as well, and is shown in the user's language."""
    accounts.add_user(home.settings, "yuki", ["operator"], "a-long-enough-password")
    error = refusal(home, CHINESE, "user", "disable", "yuki", "--reason", " ")
    assert error == "错误：reason 不能为空白 [request.blank]\n", error


def test_a_contract_with_an_unknown_role(home, tmp_path):
    path = contract(tmp_path, 年龄={"role": "identifier", "type": "integer"})
    error = refusal(home, CHINESE, "data", "release", str(path), "--method", "masked")
    assert error.startswith(f"错误：{path} 无法使用： [contract.invalid]\n")
    assert "  tables.people.columns.年龄.role：不允许 'identifier'（允许：'direct_identifier', 'quasi_identifier'," \
           " 'sensitive', 'free_text', 'date' 或 'measure'） [contract.not_allowed]\n" in error
    error = refusal(home, ENGLISH, "data", "release", str(path), "--method", "masked")
    assert error.startswith(f"Error: {path} cannot be used: [contract.invalid]\n")
    assert "  tables.people.columns.年龄.role: 'identifier' is not allowed (allowed: 'direct_identifier'," \
           " 'quasi_identifier', 'sensitive', 'free_text', 'date' or 'measure') [contract.not_allowed]\n" in error


def test_a_contract_with_a_bad_column_name(home, tmp_path):
    path = contract(tmp_path, **{"2021年收入": {"role": "measure", "type": "float"}})
    error = refusal(home, CHINESE, "data", "source", "add", "people", str(path))
    assert "  tables.people.columns：列名必须是标识符（字母（含汉字）、数字和 '_'，不以数字开头，最多 63 个字符）：" \
           "'2021年收入' [contract.bad_column_name]\n" in error
    error = refusal(home, ENGLISH, "data", "source", "add", "people", str(path))
    assert "  tables.people.columns: column names must be identifiers (letters, Chinese characters included, digits" \
           " and '_', not starting with a digit, at most 63 characters): '2021年收入' [contract.bad_column_name]\n" \
           in error


def test_a_bad_value_is_named_with_its_line_in_the_holders_language(tmp_path):
    path = contract(tmp_path)
    with pytest.raises(ContractError) as refused:
        load_tables(load_contract(path), tmp_path, source=str(path))
    assert refused.value.codes == ["contract.not_whole_numbers"] or refused.value.codes == ["contract.not_numbers"]
    assert "表 'people'：列 '年龄' 声明为 integer，但1 个值不是数字：第 3 行 'abc' [contract.not_numbers]" \
        in refused.value.render("zh_CN")
    assert str(refused.value) == f"{path}: table 'people': column '年龄' is declared integer but 1 value(s) are not" \
                                 " numbers: line 3 'abc'"


def test_an_unregistered_source(home):
    assert refusal(home, CHINESE, "data", "source", "show", "nowhere") == \
        "错误：数据源 'nowhere' 尚未登记（enclave data source add nowhere CONTRACT.yaml） [source.unknown]\n"


def test_a_refused_release_says_why_in_chinese(home, tmp_path):
    """Every age is its own class: k-anonymity suppresses every row, and the release is refused."""
    path = contract(tmp_path, rows="".join(f"{n},{20 + 7 * n}\n" for n in range(1, 7)))
    error = refusal(home, CHINESE, "data", "release", str(path), "--method", "masked")
    assert error.startswith("错误：发布被拒绝，以下发布检查未通过： [release.gates_failed]\n"), error
    assert "  suppressed_share [people]：1.0（要求 <= 0.1） - 6 行中的 6 行；实体数少于 k=5 的等价类：6 个实体" \
           " [gate.suppressed_share]\n" in error, error
    assert "\n报告（仅供数据持有方查看）：" in error
    error = refusal(home, ENGLISH, "data", "release", str(path), "--method", "masked")
    assert "  suppressed_share [people]: 1.0 (needs <= 0.1) - 6 of 6 rows; classes with fewer than k=5 entities: 6" \
           " entities [gate.suppressed_share]\n" in error, error


def test_refused_gates_are_listed_with_their_codes():
    failure = GateFailure([GateResult("k_anonymity", "people", 3, ">= 5", False, "over 年龄"),
                           GateResult("analysis:mean_age", "people", 0.4, ">= 0.5", False),
                           GateResult("l_diversity", "people", 2, ">= 2", True)])
    assert failure.render("zh_CN") == ("发布被拒绝，以下发布检查未通过：\n"
                                       "  k_anonymity [people]：3（要求 >= 5） - over 年龄 [gate.k_anonymity]\n"
                                       "  analysis:mean_age [people]：0.4（要求 >= 0.5） [gate.analysis]")
    assert str(failure) == ("release refused, gate(s) failed:\n  k_anonymity [people]: 3 (needs >= 5) - over 年龄\n"
                            "  analysis:mean_age [people]: 0.4 (needs >= 0.5)")


@pytest.mark.parametrize("args, chinese, english", [
    (["user", "add", "nina", "--role", "chief"],
     "错误：'--role' 的取值无效：'chief' 不是以下之一：'admin', 'holder', 'operator', 'reviewer'。",
     "Error: Invalid value for '--role': 'chief' is not one of 'admin', 'holder', 'operator', 'reviewer'."),
    (["workspace", "add-member", "census"], "错误：缺少参数 'USER'.", "Error: Missing argument 'USER'."),
    (["workspace", "frobnicate"], "错误：没有命令 'frobnicate'。", "Error: No such command 'frobnicate'."),
    (["user", "list", "--colour"], "错误：没有选项 '--colour'。", "Error: No such option '--colour'."),
    (["data", "release", "c.yaml", "--method", "masked", "--epochs", "0"],
     "错误：'--epochs' 的取值无效：0 不在范围 1<=x<=5000 内。", "Error: Invalid value for '--epochs': 0 is not in the range"),
    (["workspace", "set-expiry", "census"], "错误：请以 DATE 给出工作空间的到期时间，或用 --never 表示不设到期时间 [expiry.missing]",
     "Error: give the workspace's expiry as DATE, or --never for none [expiry.missing]"),
])
def test_usage_errors_in_chinese_then_in_english(args, chinese, english):
    runner = CliRunner()
    done = runner.invoke(main, args, env=CHINESE, prog_name="enclave")
    assert done.exit_code == 2 and chinese in done.output and "用法: enclave " in done.output, done.output
    done = runner.invoke(main, args, env=ENGLISH, prog_name="enclave")  # click's own texts are English again
    assert done.exit_code == 2 and english in done.output and "Usage: enclave " in done.output, done.output


def test_help_in_chinese_whatever_language_the_process_ran_in_before():
    """Click keeps each command's --help option once made: an English run before a Chinese one (and
    after it) in one process does not leave its words behind."""
    runner = CliRunner()
    before = runner.invoke(main, ["workspace", "--help"], env=ENGLISH, prog_name="enclave")
    assert before.exit_code == 0 and "--help  Show this message and exit." in before.output
    done = runner.invoke(main, ["workspace", "--help"], env=CHINESE, prog_name="enclave")
    assert done.exit_code == 0 and "选项:\n  --help  显示此帮助信息并退出。" in done.output
    assert "命令:\n" in done.output
    after = runner.invoke(main, ["workspace", "--help"], env=ENGLISH, prog_name="enclave")
    assert "--help  Show this message and exit." in after.output


def test_every_click_text_translated_is_one_click_writes():
    """An upgrade of click that changes one of the texts we translate is noticed here (its new text
    would be English among Chinese)."""
    source = "".join(p.read_text(encoding="utf-8") for p in Path(click.__file__).parent.glob("*.py"))
    assert [text for text in CLICK_TEXTS if f'"{text}"' not in source] == []


def test_the_doctor_in_chinese_and_in_english(home):
    """Beside a hub's services but with no hub: its socket is missing, and the doctor says what to do."""
    lines = enclave(home, CHINESE, "doctor").stdout.splitlines()
    assert f"失败 Hub 套接字: {home.home}/run/hub/hub.sock 处没有套接字：Hub 是否在运行？请用 'enclave hub' 启动" \
           " [doctor.hub_socket]" in lines
    assert any(line.startswith("正常 python: ") and "，位于 " in line for line in lines), lines
    lines = enclave(home, ENGLISH, "doctor").stdout.splitlines()
    assert f"FAIL hub socket: no socket at {home.home}/run/hub/hub.sock: is the hub running? start it with" \
           " 'enclave hub' [doctor.hub_socket]" in lines
