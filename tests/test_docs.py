"""README.md must describe the command line that exists (after sqlite-utils' tests/test_docs.py).

The command tree comes from the Typer app itself, so a new command or option fails here until the
README mentions it, and a renamed or removed one fails here until the README stops showing it:

1. every command and subcommand is named somewhere in README.md as ``imgvec CMD [SUB]``;
2. every option of every command (its long flag; ``--help`` excepted) is mentioned in that
   command's section: the text under each ``### `` heading that starts with ``imgvec CMD`` (a
   heading may name several commands, and a group's section, ``imgvec index …``, covers its
   subcommands), up to the next heading of level 1 to 3. **Common options**: an option mentioned
   in the text of ``## Commands`` before its first ``### `` heading (today ``--library``, ``--db``
   and ``--json``) counts as documented for every command that takes it;
3. every command example in a fenced code block (a line starting with ``imgvec `` or
   ``$ imgvec ``, backslash continuations joined, cut at a shell pipe, redirection or comment)
   parses: the (sub)command exists and ``make_context`` with resilient parsing off accepts the
   arguments, so an unknown option or a bad value fails. Nothing is run. The only parse error
   accepted is a path that must exist and does not (examples name placeholder files);
4. every ``### imgvec …`` heading names commands that exist.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import typer

from imgvec.cli import app

README = Path(__file__).resolve().parent.parent / "README.md"
ROOT = typer.main.get_command(app)
SHELL_STOP = set("|&;<>()")


def walk(command: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    """Every visible command below ``command``, groups included, as (name path, command)."""
    for name, sub in getattr(command, "commands", {}).items():
        if getattr(sub, "hidden", False):
            continue
        yield (*path, name), sub
        yield from walk(sub, (*path, name))


COMMANDS = dict(walk(ROOT))


def long_flag(param: Any) -> str | None:
    if param.param_type_name != "option" or getattr(param, "hidden", False):
        return None
    longs = [opt for opt in param.opts if opt.startswith("--")]
    flag = longs[0] if longs else param.opts[0]
    return None if flag == "--help" else flag


@dataclass
class Line:
    number: int
    text: str
    in_code: bool


def readme_lines() -> list[Line]:
    lines, in_code = [], False
    for number, text in enumerate(README.read_text(encoding="utf-8").splitlines(), 1):
        if text.lstrip().startswith("```"):
            in_code = not in_code
            lines.append(Line(number, text, True))
        else:
            lines.append(Line(number, text, in_code))
    return lines


LINES = readme_lines()
TEXT = "\n".join(line.text for line in LINES)


def heading_level(line: Line) -> int:
    match = re.match(r"(#{1,6}) ", line.text)
    return len(match.group(1)) if match and not line.in_code else 0


def commands_named_in(heading: str) -> list[tuple[str, ...]]:
    """The ``imgvec CMD [SUB]`` name paths a ``### imgvec …`` heading names, as written."""
    text = heading.replace("`", "")
    if not text.startswith("imgvec "):
        return []
    return [
        tuple(word for word in match.groups() if word)
        for match in re.finditer(r"\bimgvec\s+([a-z][\w-]*)(?:\s+([a-z][\w-]*))?", text)
    ]


def resolve(words: tuple[str, ...]) -> tuple[str, ...]:
    """The command a name path denotes; a second word that is not a subcommand is an argument."""
    if len(words) > 1 and words[:1] in COMMANDS and not hasattr(COMMANDS[words[:1]], "commands"):
        return words[:1]
    return words


COMMAND_HEADINGS = [
    (line, commands_named_in(line.text[4:]))
    for line in LINES
    if heading_level(line) == 3 and commands_named_in(line.text[4:])
]


def section_after(index: int) -> str:
    """The text from a heading to the next heading of level 1 to 3."""
    body = []
    for line in LINES[index + 1 :]:
        if 0 < heading_level(line) <= 3:
            break
        body.append(line.text)
    return "\n".join(body)


def sections_of(path: tuple[str, ...]) -> str:
    """Every ``### imgvec …`` section about this command or a group above it, with its heading."""
    texts = []
    for index, line in enumerate(LINES):
        if heading_level(line) != 3:
            continue
        named = [resolve(words) for words in commands_named_in(line.text[4:])]
        if any(path[: len(words)] == words for words in named):
            texts.append(line.text + "\n" + section_after(index))
    return "\n".join(texts)


def common_options_text() -> str:
    """The text of ``## Commands`` before its first ``### `` heading."""
    starts = [i for i, line in enumerate(LINES) if line.text == "## Commands" and not line.in_code]
    assert starts, "README.md has no `## Commands` section"
    return section_after(starts[0])


def mentions(text: str, flag: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", text) is not None


def examples() -> Iterator[tuple[int, str]]:
    """(line number, command) for each ``imgvec`` command line in a fenced code block."""
    pending: tuple[int, str] | None = None
    for line in LINES:
        if not line.in_code or line.text.lstrip().startswith("```"):
            pending = None
            continue
        text = line.text.strip()
        if pending is not None:
            number, text = pending[0], pending[1] + " " + text
        elif text.startswith("$ "):
            text = text[2:]
            number = line.number
        else:
            number = line.number
        if pending is None and not text.startswith("imgvec "):
            continue
        if text.endswith("\\"):
            pending = (number, text[:-1].rstrip())
            continue
        pending = None
        yield number, text


def example_args(text: str) -> list[str]:
    lexer = shlex.shlex(text, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True  # commenters stays "#": a comment ends the command
    words = []
    for word in lexer:
        if set(word) <= SHELL_STOP:
            break
        words.append(word)
    assert words[0] == "imgvec"
    return words[1:]


# 1. Every command and subcommand is named.


@pytest.mark.parametrize("path", list(COMMANDS), ids=" ".join)
def test_command_is_named_in_readme(path: tuple[str, ...]) -> None:
    name = "imgvec " + " ".join(path)
    assert mentions(TEXT, name), f"README.md never names `{name}`"


# 2. Every option is documented in its command's section (or among the common options).


def runs_itself(command: Any) -> bool:
    """A group that is also a command with options of its own (``imgvec dupes``)."""
    return bool(getattr(command, "invoke_without_command", False))


OPTIONS = [
    pytest.param(path, flag, id=f"{' '.join(path)} {flag}")
    for path, command in COMMANDS.items()
    if not hasattr(command, "commands") or runs_itself(command)
    for flag in map(long_flag, command.params)
    if flag
]


@pytest.mark.parametrize(("path", "flag"), OPTIONS)
def test_option_is_documented_in_its_section(path: tuple[str, ...], flag: str) -> None:
    name = "imgvec " + " ".join(path)
    section = sections_of(path)
    assert section, f"README.md has no `### {name}` section"
    assert mentions(section, flag) or mentions(common_options_text(), flag), (
        f"`{name} {flag}` is not mentioned in the README section(s) for `{name}`"
        " nor among the common options under ## Commands"
    )


# 3. Every example parses.

EXAMPLES = [pytest.param(text, id=f"line {number}: {text[:60]}") for number, text in examples()]


def test_there_are_examples() -> None:
    assert len(EXAMPLES) > 20


@pytest.mark.parametrize("text", EXAMPLES)
def test_example_parses(text: str) -> None:
    args = example_args(text)
    command, path = ROOT, []
    while hasattr(command, "commands"):
        if runs_itself(command) and (not args or args[0] not in command.commands):
            break
        assert args, f"`imgvec {' '.join(path)}` needs a subcommand"
        assert args[0] in command.commands, f"no command `imgvec {' '.join([*path, args[0]])}`"
        path.append(args.pop(0))
        command = command.commands[path[-1]]
    try:
        command.make_context(path[-1], args, resilient_parsing=False)
    except typer.BadParameter as error:
        # Placeholder paths in examples need not exist; any other bad value is an error.
        if "does not exist" not in error.format_message():
            raise


# 4. Every `### imgvec …` heading names commands that exist.


@pytest.mark.parametrize(
    "heading",
    [pytest.param(named, id=line.text[4:]) for line, named in COMMAND_HEADINGS],
)
def test_heading_names_a_command(heading: list[tuple[str, ...]]) -> None:
    for words in heading:
        path = resolve(words)
        assert path in COMMANDS, f"no command `imgvec {' '.join(path)}`"
