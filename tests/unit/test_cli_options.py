"""``speechbrain-unipet``'s command line without a model: every option
has help text showing its default, and ``--version`` (the commands end to
end: ``tests/integration/test_cli.py``)."""

import argparse

import pytest

import speechbrain_unipet
from speechbrain_unipet.cli import build_parser, main


def test_every_option_has_help_showing_its_default():
    """Each argument of each command has help; each optional's rendered
    help gives its default (the value itself where it has one)."""
    parser = build_parser()
    (commands,) = [
        a for a in parser._actions if isinstance(a, argparse._SubParsersAction)
    ]
    assert set(commands.choices) == {
        "embed",
        "score",
        "calibrate",
        "threshold",
        "verify",
        "plot",
        "export",
        "export-onnx",
        "make-shards",
    }
    checked = 0
    for name, command in commands.choices.items():
        formatter = command._get_formatter()
        for action in command._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            where = f"{name} {action.option_strings or action.dest}"
            assert action.help and action.help != argparse.SUPPRESS, where
            if not action.option_strings or action.required:
                continue  # positionals and required options: no default
            text = formatter._expand_help(action)
            if action.default is None:
                assert "default: " in text, (where, text)
            elif action.default is False:  # a flag
                assert "default: off" in text, (where, text)
            else:
                assert f"default: {action.default}" in text, (where, text)
            checked += 1
    assert checked >= 25


def test_version(capsys):
    with pytest.raises(SystemExit) as exit:
        main(["--version"])
    assert exit.value.code == 0
    out = capsys.readouterr().out
    assert out == f"speechbrain-unipet {speechbrain_unipet.__version__}\n"
