"""The README's ``train.py`` examples stay true: error examples print exactly what the README shows, the others parse."""

from __future__ import annotations

import re
import shlex

import pytest

from conftest import REPO


def console_commands() -> list[tuple[str, list[str]]]:
    """``(command, following output lines)`` for every ``$ python train.py ...`` line of the README's console blocks."""
    text = (REPO / "README.md").read_text()
    found = []
    for block in re.findall(r"```console\n(.*?)```", text, flags=re.S):
        lines = block.replace("\\\n", " ").splitlines()
        for i, line in enumerate(lines):
            if line.startswith("$ python train.py"):
                output = []
                for later in lines[i + 1 :]:
                    if later.startswith("$ "):
                        break
                    output.append(later)
                found.append((line[2:], output))
    return found


COMMANDS = console_commands()


def test_the_readme_has_train_examples():
    assert len(COMMANDS) >= 5


@pytest.mark.parametrize("command, output", COMMANDS, ids=[c for c, _ in COMMANDS])
def test_readme_train_example(command, output, train, capsys):
    args = shlex.split(command.split("|")[0])[2:]
    expected_errors = [line for line in output if line.startswith("nb360: error:")]
    if expected_errors:
        assert train(*args) != 0
        assert capsys.readouterr().err.strip().splitlines() == expected_errors
        return
    if "--task" in args and args[args.index("--task") + 1].endswith(".yaml"):
        args[args.index("--task") + 1] = str(REPO / args[args.index("--task") + 1])
    with pytest.raises(SystemExit) as done:  # parse only: the option names and values are valid
        train(*[a for a in args if a != "--print_config"], "--print_config")
    assert done.value.code == 0
