"""``enclave environment``: the operators' Python environment, what every sandbox's kernels import.

The environment (``sandbox.python_env``, mounted read-only at /opt/enclave/env) is built by
``make sandbox-env`` from ``requirements/sandbox.txt``. An admin adds a package to it with
``enclave environment add 'NAME==VERSION'``: pinned only, nothing of the hub side, nothing that would
change a package already there, and every package it needs given (pinned) in the same command, so
that the environment holds only versions someone chose. Each addition is recorded in the audit log
before it is installed, and kept in ``enclave-added.txt`` in the environment.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path

import click

from ..i18n import N_
from . import main, pass_ctx
from .language import CommandError, refusal

ADDED_FILE = "enclave-added.txt"
# The hub's own requirements: their packages serve the hub and its services, not operators.
HUB_SIDE_REQUIREMENTS = ("hub.txt", "exports.txt", "audit.txt")
HUB_SIDE_PACKAGES = ("enclave",)


class Refused(CommandError):
    """A request the operators' environment does not take, saying why and what to do instead: a
    stable ``code`` and an English ``text`` marked with ``N_`` (``%(name)s`` filled from ``params``)."""

    def __init__(self, code: str, text: str, /, **params) -> None:
        from ..i18n import Message

        super().__init__(Message(code, text, params))


def _canonical(name: str) -> str:
    from packaging.utils import canonicalize_name

    return canonicalize_name(name)


def _requirement_names(path: Path) -> dict[str, str]:
    """``{canonical name: line}`` of a requirements file's pins (comments and options skipped)."""
    from packaging.requirements import Requirement

    names = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            names[_canonical(Requirement(line).name)] = line
    return names


def _requirements_dir() -> Path:
    from ..settings import REPO_ROOT

    return REPO_ROOT / "requirements"


def _own_packages() -> set[str]:
    """Enclave's own packages for the sandbox (``extensions/``), which the Makefile installs."""
    import tomllib

    from ..settings import REPO_ROOT

    return {_canonical(tomllib.loads(p.read_text())["project"]["name"])
            for p in (REPO_ROOT / "extensions").glob("*/pyproject.toml")}


def _pin(text: str) -> tuple[str, str]:
    """``NAME==VERSION`` as (canonical name, version); anything else is refused, naming why."""
    from packaging.requirements import InvalidRequirement, Requirement

    try:
        req = Requirement(text)
    except InvalidRequirement as exc:
        raise Refused("environment.not_a_requirement", N_("'%(text)s' is not a requirement (%(problem)s): give"
                                                          " NAME==VERSION"), text=text, problem=str(exc)) from None
    specs = list(req.specifier)
    if req.url or req.marker or req.extras:
        raise Refused("environment.not_plain", N_("'%(text)s': give a plain NAME==VERSION (no URL, extras or"
                                                  " environment marker)"), text=text)
    if len(specs) != 1 or specs[0].operator != "==" or "*" in specs[0].version:
        raise Refused("environment.not_pinned", N_("'%(text)s' is not pinned: give an exact version, e.g."
                                                   " '%(name)s==1.2.3'"), text=text, name=req.name)
    return _canonical(req.name), specs[0].version


class OperatorsEnvironment:
    """One operators' environment (a venv) on the hub's host."""

    def __init__(self, path: Path):
        self.path = path
        self.python = path / "bin" / "python"
        if not self.python.exists():
            raise Refused("environment.missing", N_("the operators' environment %(path)s is missing: run make"
                                                    " sandbox-env"), path=str(path))

    def installed(self) -> dict[str, str]:
        """``{canonical name: version}`` of every installed distribution, from the names of their
        ``NAME-VERSION.dist-info`` folders (a version has no '-')."""
        found = {}
        for info in self.path.glob("lib/python3*/site-packages/*.dist-info"):
            name, _, version = info.name.removesuffix(".dist-info").rpartition("-")
            found[_canonical(name)] = version
        return found

    def added(self) -> dict[str, str]:
        """``{canonical name: NAME==VERSION}`` of the packages admins added."""
        path = self.path / ADDED_FILE
        return _requirement_names(path) if path.exists() else {}

    def pip(self, *args: str) -> subprocess.CompletedProcess:
        # umask 022: the sandboxes' uids read what pip writes (the CLI's own umask is 077).
        return subprocess.run([str(self.python), "-I", "-m", "pip", "--disable-pip-version-check", "--no-input",
                               *args], capture_output=True, text=True, umask=0o022)

    def write_added(self, pins: dict[str, str]) -> None:
        # A new file renamed into place: never rewrite a file in place (a copy of the environment
        # may share its files with the original, as hard links).
        body = "# Packages added by admins (enclave environment add); one NAME==VERSION a line.\n"
        body += "".join(f"{line}\n" for _, line in sorted(pins.items()))
        fd, tmp = tempfile.mkstemp(dir=self.path, prefix=".enclave-added-")
        with os.fdopen(fd, "w") as f:
            f.write(body)
        os.chmod(tmp, 0o644)
        os.replace(tmp, self.path / ADDED_FILE)


def _pip_error(result: subprocess.CompletedProcess) -> str:
    lines = [ln for ln in (result.stderr or result.stdout).splitlines() if ln.strip() and "WARNING" not in ln]
    return "\n".join(lines[-12:])


@main.group()
def environment() -> None:
    """The operators' Python environment (read-only in every sandbox)."""


@environment.command("add")
@click.argument("requirements", nargs=-1, required=True, metavar="NAME==VERSION...")
@click.option("--find-links", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Install only from the distributions in this folder (no package index).")
@click.option("--reason", default="", help="Why operators need it (kept in the audit record).")
@pass_ctx
def add(ctx, requirements: tuple[str, ...], find_links: Path | None, reason: str) -> None:
    """Add pinned packages to the operators' environment, e.g. 'jieba==0.42.1'.

    Every package they need that the environment lacks must be given too, pinned; packages already
    there (requirements/sandbox.txt and what it needs) stay as they are. Kernels import the new
    packages from their next start."""
    env = OperatorsEnvironment(ctx.settings.sandbox.python_env)
    pins = dict(_pin(text) for text in requirements)
    requirements_dir = _requirements_dir()
    base = _requirement_names(requirements_dir / "sandbox.txt")
    for file in HUB_SIDE_REQUIREMENTS:
        for name in _requirement_names(requirements_dir / file).keys() & pins.keys() - base.keys():
            raise Refused("environment.hub_side", N_("%(name)s is a hub-side package (requirements/%(file)s): the"
                                                     " operators' environment holds nothing of the hub side"),
                          name=name, file=file)
    for name in HUB_SIDE_PACKAGES:
        if name in pins:
            raise Refused("environment.hub_side", N_("%(name)s is a hub-side package: the operators' environment"
                                                     " holds nothing of the hub side"), name=name)

    installed, added = env.installed(), env.added()
    for name, version in list(pins.items()):
        if name in installed and name not in added:
            raise Refused(
                "environment.already_there",
                N_("%(name)s %(version)s is already in the operators' environment (pinned in"
                   " requirements/sandbox.txt): to change it, change requirements/sandbox.txt and run make"
                   " sandbox-env") if name in base else
                N_("%(name)s %(version)s is already in the operators' environment (needed by a package there):"
                   " to change it, change requirements/sandbox.txt and run make sandbox-env"),
                name=name, version=installed[name])
        if installed.get(name) == version:
            click.echo(f"{name}=={version} is already installed")
            del pins[name]
    if not pins:
        return
    wanted = [f"{name}=={version}" for name, version in sorted(pins.items())]
    source = ["--no-index", "--find-links", str(find_links)] if find_links else []

    # Resolve first, with every package already there held at its version: what the request needs
    # beyond itself must be given, pinned, by the admin.
    with tempfile.TemporaryDirectory() as tmp:
        constraints = Path(tmp) / "constraints.txt"
        constraints.write_text("".join(f"{name}=={version}\n" for name, version in installed.items()
                                       if name not in pins))
        report = Path(tmp) / "report.json"
        result = env.pip("install", "--dry-run", "--quiet", "--report", str(report), "--constraint",
                         str(constraints), *source, *wanted)
        if result.returncode != 0:
            raise Refused("environment.would_change", N_("cannot add %(packages)s without changing the"
                                                         " environment:\n%(pip)s"),
                          packages=", ".join(wanted), pip=_pip_error(result))
        resolved = {_canonical(item["metadata"]["name"]): f'{item["metadata"]["name"]}=={item["metadata"]["version"]}'
                    for item in json.loads(report.read_text())["install"]}
    missing = sorted(line for name, line in resolved.items() if name not in pins)
    if missing:
        raise Refused(
            "environment.needs_more",
            N_("%(packages)s needs packages the operators' environment does not have: %(missing)s. Add them in"
               " the same command, pinned: %(command)s"),
            packages=", ".join(wanted), missing=", ".join(missing),
            command="enclave environment add " + " ".join(f"'{p}'" for p in wanted + missing))

    with ctx.recording() as record:
        record("environment.package_add", detail={"packages": wanted, **({"reason": reason} if reason else {})})
    result = env.pip("install", "--no-deps", "--quiet", *source, *wanted)
    if result.returncode != 0:
        raise refusal("environment.pip_failed", N_("pip could not install %(packages)s:\n%(pip)s"),
                      packages=", ".join(wanted), pip=_pip_error(result))
    env.write_added(added | {name: resolved[name] for name in pins})
    check = env.pip("check")
    if check.returncode != 0:
        raise refusal("environment.broken", N_("installed, but the environment's requirements do not hold:\n%(pip)s"),
                      pip=_pip_error(check))
    for name in sorted(pins):
        click.echo(f"added {resolved[name]} to the operators' environment ({env.path}); kernels import it from their next start")


@environment.command("list")
@click.option("--added", "only_added", is_flag=True, help="Only the packages admins added.")
@pass_ctx
def list_(ctx, only_added: bool) -> None:
    """List the operators' environment: each package, its version and why it is there
    (requirements: pinned in requirements/sandbox.txt; enclave: Enclave's own, from extensions/;
    added: by an admin; dependency: needed by one of those)."""
    env = OperatorsEnvironment(ctx.settings.sandbox.python_env)
    base, own, added = _requirement_names(_requirements_dir() / "sandbox.txt"), _own_packages(), env.added()
    rows = []
    for name, version in sorted(env.installed().items()):
        why = ("added" if name in added else "requirements" if name in base else "enclave" if name in own
               else "dependency")
        if not only_added or why == "added":
            rows.append((name, version, why))
    width = max((len(name) for name, _, _ in rows), default=0)
    for name, version, why in rows:
        click.echo(f"{name:<{width}}  {version:<12}  {why}")
