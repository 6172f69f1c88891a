"""The Dockerfiles read as data, without building: every stage a ``COPY --from`` or a ``FROM``
names exists, every target the server's header documents is a stage (``vllm`` included, which
is built only on a machine with a GPU's disk to spare), each final stage runs as user 1000 with
the OCI labels, and torch is only ever ``torch==2.13.0`` (../shared/STYLE.md §11). The images
themselves are built in test_images.py."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from .conftest import ROOT

SERVICES = ("server", "storage", "controller", "cache")
LABELS = ("title", "version", "revision", "source", "licenses")


@dataclass
class Stage:
    name: str | None
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]


def parse(path: Path) -> list[Stage]:
    """The stages of a Dockerfile: continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", path.read_text())
    stages: list[Stage] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            words = args.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(name=name, base=words[0]))
        elif stages:
            stages[-1].instructions.append((keyword, args))
    return stages


def _stage(stages: list[Stage], name: str) -> Stage:
    return next(s for s in stages if s.name == name)


def _chain(stages: list[Stage], name: str) -> list[Stage]:
    """``name`` and the stages it is built FROM and COPYs from, transitively."""
    seen: list[Stage] = []
    todo = [name]
    while todo:
        stage = _stage(stages, todo.pop())
        if stage in seen:
            continue
        seen.append(stage)
        todo += [s.name for s in stages if s.name == stage.base and s.name]
        for args in stage.all("COPY"):
            todo += re.findall(r"--from=(\S+)", args)
    return seen


def _pip_requirements(stage: Stage) -> list[str]:
    """The requirement strings of every ``pip install`` in the stage's RUNs."""
    found: list[str] = []
    for run in stage.all("RUN"):
        lexer = shlex.shlex(run.replace("${PIP_OPTIONS}", ""), posix=True, punctuation_chars="&;|")
        lexer.whitespace_split = True
        commands: list[list[str]] = [[]]
        for token in lexer:
            if token in ("&&", "||", ";", "|"):
                commands.append([])
            else:
                commands[-1].append(token)
        for words in commands:
            if words[:1] and words[0].endswith("/pip") and "install" in words[1:2]:
                args = iter(words[2:])
                for word in args:
                    if word in ("--find-links", "-f", "-c", "-r", "--index-url"):
                        next(args, None)
                    elif not word.startswith("-"):
                        found.append(word)
    return found


@pytest.mark.parametrize("service", SERVICES)
def test_stages_and_final_image(service: str) -> None:
    dockerfile = ROOT / "packages" / service / "Dockerfile"
    stages = parse(dockerfile)
    names = {s.name for s in stages if s.name}
    for stage in stages:
        assert stage.base in names or stage.base in ("${BASE_IMAGE}", "scratch"), stage.base
        for args in stage.all("COPY"):
            for source in re.findall(r"--from=(\S+)", args):
                assert source in names, f"{service}: COPY --from={source}: no such stage"
    # the default target is the last stage: its chain must set the user and labels
    final = stages[-1]
    chain = _chain(stages, final.name) if final.name else [final]
    assert any(args == "1000:1000" for s in chain for args in s.all("USER"))
    labels = " ".join(args for s in chain for args in s.all("LABEL"))
    for label in LABELS:
        assert f"org.opencontainers.image.{label}=" in labels, label
    assert any(s.all("ENTRYPOINT") for s in chain)


def test_server_targets() -> None:
    """The targets the header documents are stages; huggingface and vllm install their extras
    on the pinned CPU/CUDA torch, the default image none of them."""
    dockerfile = ROOT / "packages" / "server" / "Dockerfile"
    stages = parse(dockerfile)
    documented = set(re.findall(r"--target (\w+)", dockerfile.read_text()))
    assert documented >= {"huggingface", "vllm"}
    for target in documented:
        _stage(stages, target)  # exists
    wanted = {"huggingface": {"huggingface"}, "vllm": {"huggingface", "vllm"}, "server": set()}
    for target, extras in wanted.items():
        requirements = [r for s in _chain(stages, target) for r in _pip_requirements(s)]
        server = [r for r in requirements if r.startswith("moorage-server")]
        assert server, f"{target}: no moorage-server install"
        installed = set(re.findall(r"\w+", server[0].partition("[")[2]))
        assert installed >= extras, f"{target}: {server[0]}"
        if not extras:
            assert not installed & {"huggingface", "vllm"}, server[0]
        torch = [r for r in requirements if re.match(r"torch\b", r)]
        assert (not extras) == (not torch), f"{target}: torch requirements {torch}"


@pytest.mark.parametrize("service", SERVICES)
def test_torch_is_pinned(service: str) -> None:
    stages = parse(ROOT / "packages" / service / "Dockerfile")
    for stage in stages:
        for requirement in _pip_requirements(stage):
            if re.match(r"torch\b", requirement):
                assert requirement == "torch==2.13.0", f"{service}/{stage.name}: {requirement}"


def test_parser_reads_a_pip_install() -> None:
    stage = Stage(name="b", base="x")
    stage.instructions.append(
        ("RUN", 'a && /v/bin/pip install --no-cache-dir --find-links /w "m[x,y]" z==1 && b')
    )
    assert _pip_requirements(stage) == ["m[x,y]", "z==1"]
