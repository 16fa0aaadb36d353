"""The command lines teach: examples and help everywhere, wrapped text, suggestions, -v anywhere, a fast --help,
shell completion, the agent's environment variables (issue 16, item 8)."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rkfarm.cli import COMMANDS, build_parser, chosen_command
from rkfarm.cli._help import leaves, subparsers, wrap_paragraphs
from rkfarm_agent import cli as agent_cli


def run(*args: str, env: dict[str, str] | None = None, module: str = "rkfarm.cli") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, timeout=120, env=env)


def test_every_command_has_examples_and_every_option_help() -> None:
    parser = build_parser()
    commands = dict(leaves(parser))
    assert {"build", "run", "info", "doctor", "hybrid step1", "vendor status"} <= set(commands)
    for name, sub in commands.items():
        assert "example" in (sub.epilog or ""), f"rkfarm {name} has no examples"
        for action in sub._actions:
            assert action.help, f"rkfarm {name} {action.option_strings or action.dest} has no help"
    agent = agent_cli.build_parser()
    for name, sub in subparsers(agent).items():
        assert "example" in (sub.epilog or ""), f"rkfarm-agent {name} has no examples"
        for action in sub._actions:
            assert action.help, f"rkfarm-agent {name} {action.option_strings or action.dest} has no help"


def test_lazy_parser_lists_what_the_full_one_does() -> None:
    """Only the command being run is built in full; the one-line help of the others is the same text."""
    full = subparsers(build_parser())
    lazy_action = next(a for a in build_parser([], full=False)._actions if isinstance(a, argparse._SubParsersAction))
    shown = {c.dest: c.help for c in lazy_action._choices_actions}
    real_action = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    assert shown == {c.dest: c.help for c in real_action._choices_actions}
    assert list(full) == list(COMMANDS)
    assert chosen_command(["-v", "build", "x.onnx"]) == "build"
    assert chosen_command(["--print-completion", "bash"]) is None


def test_help_is_fast_and_imports_nothing_heavy() -> None:
    """`rkfarm --help` loads neither numpy nor protobuf nor ONNX (it took 1-2 s when it did)."""
    code = (
        "import sys, time; t = time.perf_counter()\n"
        "from rkfarm.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = sorted(m for m in ('numpy', 'onnx', 'onnxruntime', 'google.protobuf', 'grpc', 'rkfarm.api')"
        " if m in sys.modules)\n"
        "print('HEAVY', heavy, time.perf_counter() - t)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    line = next(ln for ln in out.stdout.splitlines() if ln.startswith("HEAVY"))
    assert line.startswith("HEAVY []"), line
    for command in ("run", "info", "devices"):
        sub = run(command, "--help")
        assert sub.returncode == 0 and f"usage: rkfarm {command}" in sub.stdout and "examples:" in sub.stdout


def test_long_descriptions_are_wrapped_examples_kept() -> None:
    env = {**os.environ, "COLUMNS": "80"}
    out = run("analyze", "--help", env=env)
    assert out.returncode == 0
    text_lines = [ln for ln in out.stdout.splitlines() if not ln.startswith("  ")]
    assert max(len(ln) for ln in text_lines) <= 80
    assert "  rkfarm analyze cls.onnx --dataset dataset.txt --input-size 1,3,48,192" in out.stdout  # kept as written
    wrapped = list(wrap_paragraphs("one two three\nfour\n  keep   this\n", 9))
    assert wrapped == ["one two", "three", "four", "  keep   this"]


def test_suggestions_for_mistyped_commands_flags_and_choices() -> None:
    out = run("buidl", "model.onnx")
    assert out.returncode == 2 and "did you mean 'build'?" in out.stderr
    out = run("build", "model.onnx", "--input-sise", "1,3,4,4")
    assert out.returncode == 2 and "--input-size" in out.stderr and "did you mean" in out.stderr
    out = run("build", "model.onnx", "--algorithm", "mse")
    assert out.returncode == 2 and "did you mean 'mmse'?" in out.stderr
    out = run("hybrid", "stpe1")
    assert out.returncode == 2 and "did you mean 'step1'?" in out.stderr


def test_value_errors_say_what_to_write(tmp_path: Path) -> None:
    out = run("run", str(tmp_path / "m.rkfm"), "x.npy", "--core-mask", "banana")
    assert out.returncode == 2 and "not an NPU core mask: 'banana'" in out.stderr and "0_1" in out.stderr
    assert "lambda" not in out.stderr
    out = run("run", str(tmp_path / "m.rkfm"), "x.npy", "--device", "127.0.0.1:")
    assert out.returncode == 2 and "no valid port" in out.stderr and "50551" in out.stderr
    from rkfarm.cli._common import core_mask, device_address

    assert core_mask("0x3") == core_mask("0_1") == core_mask("NPU_CORE_0_1") == 3
    assert device_address("127.0.0.1") == "127.0.0.1:50551"  # an IP address alone: the default port
    assert device_address("[::1]") == "[::1]:50551"
    assert device_address("rk3588-board-1") == "rk3588-board-1"  # an id stays an id
    assert device_address("board.lan:6000") == "board.lan:6000"


def test_default_port_is_the_agents() -> None:
    from rkfarm.remote.discovery import DEFAULT_PORT
    from rkfarm_agent.config import DEFAULT_PORT as AGENT_PORT

    assert DEFAULT_PORT == AGENT_PORT


def test_verbose_after_the_subcommand(tmp_path: Path) -> None:
    out = run("info", str(tmp_path / "absent.rkfm"), "-v")
    assert out.returncode == 1 and "unrecognized" not in out.stderr and "no such file" in out.stderr
    args = build_parser().parse_args(["-v", "info", "x", "-v"])
    assert args.verbose + args.sub_verbose == 2


def test_shell_completion(tmp_path: Path) -> None:
    pytest.importorskip("argcomplete", reason="shell completion uses argcomplete (pip install 'rkfarm[completion]')")
    code = run("--print-completion", "bash")
    assert code.returncode == 0 and "complete" in code.stdout and "rkfarm" in code.stdout
    answers = tmp_path / "completions.txt"
    for line, expected in (("rkfarm bu", {"build"}), ("rkfarm build --inp", {"--input-size", "--inputs"})):
        env = {
            **os.environ, "_ARGCOMPLETE": "1", "COMP_LINE": line, "COMP_POINT": str(len(line)),
            "_ARGCOMPLETE_STDOUT_FILENAME": str(answers), "_ARGCOMPLETE_SUPPRESS_SPACE": "1",
        }  # fmt: skip
        done = run(env=env)
        assert done.returncode == 0, done.stderr
        words = set(answers.read_text().replace("\x0b", " ").split())
        assert expected <= words, (line, words)


def test_agent_serve_help_lists_environment_variables() -> None:
    out = run("serve", "--help", module="rkfarm_agent.cli")
    assert out.returncode == 0
    assert "environment variables" in out.stdout
    serve = subparsers(agent_cli.build_parser())["serve"]
    options = [
        next(s for s in a.option_strings if s.startswith("--"))
        for a in serve._actions
        if any(s.startswith("--") for s in a.option_strings) and a.dest not in ("help", "verbose", "port_file")
    ]
    for option in options:
        assert agent_cli.env_variable(option) in out.stdout, option
    # the listed variables are the ones read: a few set in the environment change the defaults
    env = {"RKFARM_AGENT_MAX_SESSIONS": "3", "RKFARM_AGENT_LEASE": "7.5", "RKFARM_AGENT_ADVERTISE": "0"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        args = agent_cli.build_parser().parse_args(["serve"])
    finally:
        for k, v in saved.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
    assert (args.max_sessions, args.lease, args.advertise) == (3, 7.5, False)


def test_agent_info_json_ends_with_a_newline() -> None:
    out = subprocess.run([sys.executable, "-m", "rkfarm_agent.cli", "info", "--json"], capture_output=True, timeout=120)
    assert out.returncode == 0 and out.stdout.endswith(b"}\n")


def test_each_command_helps_through_the_lazy_parser(capsys: pytest.CaptureFixture[str]) -> None:
    from rkfarm.cli import main

    for command in COMMANDS:
        with pytest.raises(SystemExit) as done:
            main([command, "--help"])
        assert done.value.code == 0, command
        assert f"usage: rkfarm {command}" in capsys.readouterr().out, command
