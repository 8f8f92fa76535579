"""The command-line surface every user meets first: one dispatcher, consistent output flags."""

import pytest

from osdhuman.cli import build_parser, main

# minimal valid argv for each subcommand, without its output flag
COMMANDS = {
    "build-dataset": (["--source", "folder:photos"], "out"),
    "degrade": (["hq"], "output_dir"),
    "train": (["--config", "configs/tiny.yaml"], "output_dir"),
    "restore": (["img.png"], "output"),
    "evaluate": (["--method", "A=a", "--reference", "hq"], "out"),
    "dataset-quality": (["--dataset", "A=a"], "out"),
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
@pytest.mark.parametrize("flag", ["-o", "--out", "--output-dir"])
def test_every_command_takes_the_same_output_flags(command, flag):
    argv, dest = COMMANDS[command]
    args = build_parser().parse_args([command, *argv, flag, "somewhere"])
    assert getattr(args, dest) == "somewhere"
    assert callable(args.func)


def test_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for command in COMMANDS:
        assert command in out


def test_unknown_command_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["restor"])
    assert exc.value.code == 2
    assert "invalid choice" in capsys.readouterr().err
