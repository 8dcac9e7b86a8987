"""`perpchain ... --help` explains every command: each parser (the root, each group such as
`tx`, each runnable command) has a description and runnable examples in its epilog, and every
option a help text, with its unit where it has one (issue 13, section 3)."""

from __future__ import annotations

import argparse
import pathlib
import shlex

import pytest

from node.cli.main import main
from node.cli.parser import build_parser

README = pathlib.Path(__file__).resolve().parents[2] / "README.md"


def walk(
    parser: argparse.ArgumentParser, words: tuple[str, ...] = ()
) -> list[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """The parser and, recursively, every subparser under it, with its words."""
    found = [(words, parser)]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                found += walk(child, (*words, name))
    return found


PARSERS = walk(build_parser())


def _name(words: tuple[str, ...]) -> str:
    return " ".join(("perpchain", *words))


def _example_lines(parser: argparse.ArgumentParser) -> list[str]:
    epilog = parser.epilog or ""
    return [line.strip() for line in epilog.splitlines() if line.strip().startswith("perpchain ")]


def test_the_walk_finds_every_command() -> None:
    names = {_name(words) for words, _ in PARSERS}
    for expected in (
        "perpchain",
        "perpchain tx order",
        "perpchain report compensation",
        "perpchain maintenance end",
        "perpchain checkpoint create",
    ):
        assert expected in names
    assert len(PARSERS) > 30


@pytest.mark.parametrize(("words", "parser"), PARSERS, ids=[_name(w) for w, _ in PARSERS])
def test_each_parser_has_a_description_an_example_and_help_for_every_option(
    words: tuple[str, ...], parser: argparse.ArgumentParser
) -> None:
    name = _name(words)
    assert parser.description and parser.description.strip(), f"{name}: no description"
    assert isinstance(parser.formatter_class, type) and issubclass(
        parser.formatter_class, argparse.RawDescriptionHelpFormatter
    ), f"{name}: the epilog's line breaks would be lost"
    assert parser.epilog and "examples:" in parser.epilog, f"{name}: no examples in the epilog"
    assert any(line.startswith(name) for line in _example_lines(parser)), (
        f"{name}: no example of the command itself"
    )
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction | argparse._SubParsersAction):
            continue
        label = "/".join(action.option_strings) or action.dest
        assert action.help and action.help.strip(), f"{name} {label}: no help text"
    parser.format_help()  # every %(default)s and friends render


@pytest.mark.parametrize(("words", "parser"), PARSERS, ids=[_name(w) for w, _ in PARSERS])
def test_every_example_parses(words: tuple[str, ...], parser: argparse.ArgumentParser) -> None:
    for line in _example_lines(parser):
        build_parser().parse_args(shlex.split(line)[1:])  # a usage error exits 2: fails here


def test_tx_order_help_gives_the_units(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["tx", "order", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "quote atoms" in out and "size atoms" in out
    assert "60000000000" in out and "100000" in out  # 60,000 USD; 0.001 BTC
    assert "examples:\n  perpchain tx order --key" in out  # the epilog's line breaks survive


def test_the_readme_command_examples_parse() -> None:
    """The concrete `.venv/bin/perpchain ...` lines of README.md (not the synopses with
    [optional] parts) are valid command lines."""
    lines = []
    for line in README.read_text().splitlines():
        for command in line.split("#")[0].split("&&"):
            command = command.strip()
            if command.startswith(".venv/bin/perpchain ") and "[" not in command:
                lines.append(command)
    assert len(lines) >= 8
    for command in lines:
        build_parser().parse_args(shlex.split(command)[1:])
