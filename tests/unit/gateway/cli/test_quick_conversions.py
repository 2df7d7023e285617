"""`encrypt`/`decrypt` from file to file, read without click (gateway.cli.conversions).

The quick reader must take a command line only where click would read it the same way:
generated command lines whose words are options, values and files in every form click
accepts or refuses are read by both, and wherever the quick reader takes one, click takes
it too, with the same values. And the program behaves the same whichever reads it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from random import Random

import click
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.cli import crypto
from gateway.cli.conversions import read_quick
from gateway.cli.program import main
from gateway.envelope import Identity, decrypt_bytes, generate_identity


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """An identity, its recipient and files of each kind the options may name."""
    where = tmp_path_factory.mktemp("quick")
    identity = generate_identity(post_quantum=False)
    (where / "key").write_text(identity.to_secret_string() + "\n")
    (where / "recipients").write_text(f"{identity.recipient}\n")
    (where / "plain").write_bytes(b"x" * 100)
    (where / "dir").mkdir()
    # Made unreadable by the tests that need it (root reads every file).
    (where / "unreadable").write_text(f"{identity.recipient}\n")
    return {"recipient": str(identity.recipient), "key": str(where / "key"),
            "unreadable": str(where / "unreadable"), "recipients": str(where / "recipients"),
            "plain": str(where / "plain"),
            "dir": str(where / "dir"), "missing": str(where / "missing"),
            "out": str(where / "out.age")}


def _words(files: dict[str, str], command: str) -> tuple[list[str], list[str]]:
    """Words a command line of ``command`` is made of: its options by each name, then
    other words: values and files that exist, do not, or are directories, options in
    forms click reads differently (``-o=x``, ``-ox``, ``--output=``), other options."""
    names = (["-r", "--recipient", "-R", "--recipients-file", "-a", "--armor"]
             if command == "encrypt" else ["-i", "--identity"])
    first = {"encrypt": files["recipient"], "decrypt": files["key"]}[command]
    return [*names, "-o", "--output"], [
        files["recipient"], files["recipients"], files["key"], files["plain"],
        files["dir"], files["missing"], files["out"], files["unreadable"], "", "--", "-",
        "-h", "--help", "--out", "-x", f"-o={files['out']}", f"-o{files['out']}",
        f"--output={files['out']}", "--output=", f"--recipient={files['recipient']}",
        f"--identity={files['key']}", f"{first}=x", f"-r{files['recipient']}",
        f"--recipients-file={files['recipients']}"]


def _click_params(command: click.Command, args: list[str]) -> dict[str, object] | None:
    try:
        with command.make_context(command.name, list(args)) as ctx:
            return dict(ctx.params)
    except (click.exceptions.Exit, click.ClickException):
        return None


@pytest.mark.parametrize("command", ["encrypt", "decrypt"])
def test_what_the_quick_reader_takes_click_reads_the_same(
        files: dict[str, str], command: str, monkeypatch: pytest.MonkeyPatch) -> None:
    access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode, **kwargs:
                        os.fspath(path) != files["unreadable"] and access(path, mode, **kwargs))
    options, others = _words(files, command)
    click_command = {"encrypt": crypto.encrypt, "decrypt": crypto.decrypt}[command]
    taken = []

    # A line with an output and a key or recipient, perhaps more options, each followed
    # by a value of any kind, an input of any kind, in any order, and perhaps a word of
    # any kind put anywhere: many lines are ones the quick reader takes, many near misses.
    def pair(names: list[str], likely: str | None = None) -> st.SearchStrategy[list[str]]:
        values = st.sampled_from(others)
        if likely is not None:
            values = st.one_of(st.just(likely), values)
        return st.tuples(st.sampled_from(names), values).map(list)

    keys = [name for name in options if name not in ("-o", "--output", "-a", "--armor")]
    key = {"encrypt": files["recipient"], "decrypt": files["key"]}[command]
    lines = st.tuples(st.lists(pair(options), max_size=2),
                      pair(["-o", "--output"], files["out"]), pair(keys, key),
                      st.one_of(st.just(files["plain"]), st.sampled_from(others)),
                      st.lists(st.tuples(st.integers(0, 8),
                                         st.sampled_from(options + others)), max_size=1),
                      st.randoms(use_true_random=False))

    @settings(max_examples=500, deadline=None, database=None, derandomize=True,
              suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(lines)
    def check(line: tuple[list[list[str]], list[str], list[str], str,
                          list[tuple[int, str]], Random]) -> None:
        more, output, key, given_input, extra, shuffle = line
        parts = [*more, output, key, [given_input]]
        shuffle.shuffle(parts)
        args = [word for part in parts for word in part]
        for at, word in extra:
            args.insert(at, word)
        quick = read_quick([command, *args])
        if quick is not None:
            taken.append(args)
            assert quick.command == command
            assert _click_params(click_command, args) == quick.params, args

    check()
    # The same lines each run (derandomize): this many are taken.
    assert len(taken) >= 30, len(taken)
    # Command lines it must take, so that the comparison above compares something.
    first = (["-r", files["recipient"], "--recipients-file", files["recipients"]]
             if command == "encrypt" else ["--identity", files["key"], "-i", files["key"]])
    for args in ([*first, "-o", files["out"], files["plain"]],
                 [files["plain"], f"--output={files['out']}", *first]):
        quick = read_quick([command, *args])
        assert quick is not None, args
        assert _click_params(click_command, args) == quick.params


@pytest.mark.parametrize("args", [
    ["-o", "{out}", "{plain}"],                              # No recipient: click says so.
    ["-r", "{recipient}", "{plain}"],                        # Standard output.
    ["-r", "{recipient}", "-o", "{out}"],                    # Standard input.
    ["-r", "{recipient}", "-o", "{out}", "-"],
    ["-r", "{recipient}", "-o", "{out}", "-a", "{plain}"],   # Armor streams.
    ["-r", "{recipient}", "-o", "{out}", "-o", "{out}", "{plain}"],
    ["-r", "{recipient}", "-o", "{dir}", "{plain}"],
    ["-r", "{recipient}", "-o", "{out}", "{missing}"],
    ["-r", "{recipient}", "-o", "{out}", "{plain}", "{plain}"],
    ["-R", "{missing}", "-o", "{out}", "{plain}"],
    ["-r", "{recipient}", "-o={out}", "{plain}"],
    ["-r", "{recipient}", "-o", "{out}", "--", "{plain}"],
    ["-r", "{recipient}", "-o", "{out}", "{plain}", "--help"],
])
def test_other_forms_go_to_click(files: dict[str, str], args: list[str]) -> None:
    assert read_quick(["encrypt", *(arg.format(**files) for arg in args)]) is None


def _program(argv: list[str], *, without: str | None = "click", before: str = ""
             ) -> subprocess.CompletedProcess[str]:
    """Run the program (gateway.cli.run) with ``argv``, after the code ``before``; it
    fails if it imports ``without``."""
    block = f"sys.modules[{without!r}] = None\n" if without else ""
    probe = ("import sys\n"
             f"{block}{before}\n"
             "from gateway.cli import run\n"
             f"sys.argv = ['blindpost', *{argv!r}]\n"
             "run()\n")
    return subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          timeout=120, check=False)


def test_a_file_to_file_conversion_runs_without_click(tmp_path: Path) -> None:
    identity = generate_identity(post_quantum=False)
    key = tmp_path / "key"
    key.write_text(identity.to_secret_string() + "\n")
    plain, sealed, opened = tmp_path / "plain", tmp_path / "plain.age", tmp_path / "opened"
    plain.write_bytes(os.urandom(200_000))
    encrypted = _program(["encrypt", "-r", str(identity.recipient), "-o", str(sealed),
                          str(plain)])
    assert (encrypted.returncode, encrypted.stderr) == (0, "")
    assert decrypt_bytes(sealed.read_bytes(), [identity]) == plain.read_bytes()
    decrypted = _program(["decrypt", "--identity", str(key), f"--output={opened}",
                          str(sealed)])
    assert (decrypted.returncode, decrypted.stderr) == (0, "")
    assert opened.read_bytes() == plain.read_bytes()
    # Also not inspect (click and dataclasses load it), nor what only the streams use.
    for module in ("inspect", "dataclasses", "rich", "logging"):
        assert _program(["decrypt", "-i", str(key), "-o", str(tmp_path / module),
                         str(sealed)], without=module).returncode == 0, module
    # A form it does not read goes to click, which the probe has made unimportable.
    assert "click" in _program(["encrypt", "-a", "-r", str(identity.recipient), "-o",
                                str(tmp_path / "armored"), str(plain)]).stderr


def _both(argv: list[str]) -> tuple[tuple[int, str], tuple[int, str]]:
    """Exit code and error output of ``argv`` run by the program (quick) and by click."""
    quick = _program(argv)
    by_click = CliRunner().invoke(main, argv)
    return (quick.returncode, quick.stderr), (by_click.exit_code, by_click.stderr)


def test_failures_end_as_they_do_through_click(tmp_path: Path, identity: Identity) -> None:
    plain = tmp_path / "plain"
    plain.write_bytes(b"data")
    not_a_key = tmp_path / "not-a-key"
    not_a_key.write_text("hello\n")
    for argv in (["encrypt", "-r", "age1notakey", "-o", str(tmp_path / "a"), str(plain)],
                 ["encrypt", "-R", str(not_a_key), "-o", str(tmp_path / "b"), str(plain)],
                 ["decrypt", "-i", str(not_a_key), "-o", str(tmp_path / "c"), str(plain)]):
        quick, by_click = _both(argv)
        assert quick[0] in (1, 2)
        assert quick[1].startswith("blindpost: error: ")
        assert quick == by_click, argv
    assert sorted(path.name for path in tmp_path.iterdir()) == ["not-a-key", "plain"]
    key = tmp_path / "key"
    key.write_text(identity.to_secret_string() + "\n")
    quick, by_click = _both(["decrypt", "-i", str(key), "-o", str(tmp_path / "d"),
                             str(plain)])
    assert quick == by_click
    assert quick[0] == 1


@pytest.fixture
def identity() -> Identity:
    return generate_identity(post_quantum=False)


def test_ctrl_c_ends_as_through_click_and_leaves_no_file(tmp_path: Path,
                                                         identity: Identity) -> None:
    plain, sealed = tmp_path / "plain", tmp_path / "plain.age"
    plain.write_bytes(b"x" * 300_000)
    # The interrupt arrives while the chunks are being written.
    interrupt = ("import gateway.client.ranges as ranges\n"
                 "real = ranges.encrypt_file\n"
                 "def interrupted(source, sink, *args, **kwargs):\n"
                 "    real(source, sink, *args, **kwargs)\n"
                 "    raise KeyboardInterrupt\n"
                 "ranges.encrypt_file = interrupted\n")
    quick = ["encrypt", "-r", str(identity.recipient), "-o", str(sealed), str(plain)]
    # The same command line with a first -o that click replaces: click reads it.
    by_click = ["encrypt", "-r", str(identity.recipient), "-o", "x", "-o", str(sealed),
                str(plain)]
    ended = [_program(argv, without=None, before=interrupt)
             for argv in (quick, by_click)]
    assert [(run.returncode, run.stderr) for run in ended] == [(1, "\nAborted!\n")] * 2
    assert [path.name for path in tmp_path.iterdir()] == ["plain"]


def test_other_commands_do_not_load_the_quick_reader() -> None:
    # `version` through the program's entry point, as any command but the two.
    ended = _program(["version"], without="gateway.cli.conversions")
    assert ended.returncode == 0, ended.stderr
    assert ended.stdout.startswith("blindpost ")
