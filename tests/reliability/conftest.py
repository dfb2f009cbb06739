"""Helpers for the reliability tests: real child processes that can be killed at any moment,
and the `resnets` console entry point called in-process with its output captured."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import io
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from resnets.checkpoint import read_checkpoint
from resnets.cli import main
from resnets.errors import CheckpointError


def child_env() -> dict[str, str]:
    # One thread per child: the machine's cores are shared, and the tests compare bits, not
    # speed. Unbuffered output so that a killed child's log is complete up to the kill.
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
            "PYTHONUNBUFFERED": "1"}


class Child:
    """A child Python process (``sys.executable ARGV``) with stdout and stderr in a log file."""

    def __init__(self, argv: list[str], log: Path, cwd: Path):
        self.log = log
        self._stream = open(log, "w")  # noqa: SIM115 (closed in wait())
        self.proc = subprocess.Popen([sys.executable, *argv], cwd=cwd, env=child_env(),
                                     stdout=self._stream, stderr=subprocess.STDOUT)

    def output(self) -> str:
        return self.log.read_text()

    def wait_until(self, condition: Callable[[], bool], what: str, timeout: float = 120) -> None:
        """Poll ``condition`` until it holds; fail if the child exits first or time runs out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():
                return
            if self.proc.poll() is not None:
                pytest.fail(f"the child exited with {self.proc.returncode} before {what}:\n"
                            f"{self.output()}")
            time.sleep(0.02)
        pytest.fail(f"timed out after {timeout} s waiting for {what}:\n{self.output()}")

    def wait_for_checkpoint(self, path: Path, at_least: int) -> None:
        """Wait until the checkpoint at ``path`` reports iteration >= ``at_least``."""

        def reached() -> bool:
            try:
                return read_checkpoint(path).iteration >= at_least
            except (CheckpointError, OSError):  # not written yet, or mid-rotation
                return False

        self.wait_until(reached, f"{path.name} reached iteration {at_least}")

    def wait(self, timeout: float = 300) -> int:
        """The exit status (negative: killed by that signal)."""
        try:
            return self.proc.wait(timeout)
        finally:
            self._stream.close()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.wait()


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Every test here runs on one thread (see tests/conftest.py)."""


@pytest.fixture(scope="session")
def spawn():
    """``spawn(argv, log)`` starts a :class:`Child`; children still running at the end of the
    session (a test failed before stopping its own) are killed."""
    children: list[Child] = []

    def start(argv: list[str], log: Path) -> Child:
        child = Child(argv, log, cwd=log.parent)
        children.append(child)
        return child

    yield start
    for child in children:
        child.stop()


class Cli:
    """Runs ``resnets ARGV`` in this process (``main(argv)``) and captures its output."""

    def __init__(self, capsys):
        self.capsys = capsys

    def __call__(self, *argv) -> tuple[int, str, str]:
        """``(exit code, stdout, stderr)``."""
        code = main([str(a) for a in argv])
        out, err = self.capsys.readouterr()
        return code, out, err

    def error(self, *argv) -> str:
        """The error message of a run that must fail on bad input: exit code 2 and one
        paragraph on stderr, led by the command's name, without a traceback."""
        code, _, err = self(*argv)
        assert code == 2, err
        assert err.startswith(f"resnets {argv[0]}: error: "), err
        assert "Traceback" not in err and "\n\n" not in err.strip(), err
        return err


@pytest.fixture
def cli(capsys) -> Cli:
    return Cli(capsys)


@pytest.fixture(scope="session")
def tiny_train_args(color_folder, tmp_path_factory):
    """``tiny_train_args(out, *extra)``: argv of a 2-iteration `resnets train` of resnet8 on
    the colour folder (fp32, deterministic); later flags in ``extra`` override earlier ones."""
    cache = tmp_path_factory.mktemp("decoded")

    def argv(out, *extra) -> list[str]:
        return ["train", "--model", "resnet8", "--data", str(color_folder), "--cache-dir",
                str(cache), "--out", str(out), "--iterations", "2", "--batch-size", "4",
                "--val-split", "0", "--save-every", "1", "--device", "cpu", "--precision",
                "fp32", "--deterministic", "--quiet", *map(str, extra)]

    return argv


@pytest.fixture(scope="session")
def trained(tiny_train_args, tmp_path_factory):
    """A finished run of `tiny_train_args`, saved at both steps: last.safetensors (iteration 2),
    previous.safetensors (1), best.safetensors. Read only: copy it to resume or damage it."""
    out = tmp_path_factory.mktemp("trained") / "run"
    assert main(tiny_train_args(out)) == 0
    return out


def rewrite_metadata(src: Path, dst: Path, change: Callable[[dict], object]) -> Path:
    """Copy the checkpoint ``src`` to ``dst`` with its JSON record replaced by ``change(record)``
    (which may edit the dict in place and return None, return any JSON value, or return
    ``bytes``: the record's raw text)."""
    import json

    data = src.read_bytes()
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + n])
    record = json.loads(header["__metadata__"]["resnets"])
    new = change(record)
    header["__metadata__"]["resnets"] = (new.decode() if isinstance(new, bytes)
                                         else json.dumps(record if new is None else new))
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)  # safetensors keeps the data 8-byte aligned
    dst.write_bytes(len(raw).to_bytes(8, "little") + raw + data[8 + n :])
    return dst


@pytest.fixture(scope="session")
def with_metadata():
    """`rewrite_metadata` for test modules (conftest is not importable under importlib mode)."""
    return rewrite_metadata


# ------------------------------------------------------------------ unreadable paths, as root too


@pytest.fixture
def deny(monkeypatch):
    """``deny(path)``: opening or listing ``path`` or anything below it raises PermissionError,
    as after ``chmod 000`` for a user who is not root (root reads anything, and these tests
    may run as root; `permissions_bind` makes the real chmod bind root too)."""
    denied: list[str] = []

    def check(path) -> None:
        if isinstance(path, int):
            return  # a file descriptor: already open
        full = os.path.abspath(os.fsdecode(path))
        if any(full == d or full.startswith(d + os.sep) for d in denied):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), full)

    def wrap(real):
        def guarded(path=".", *args, **kwargs):
            check(path)
            return real(path, *args, **kwargs)
        return guarded

    for module, name in [(io, "open"), (__import__("builtins"), "open"), (os, "open"),
                         (os, "scandir"), (os, "listdir")]:
        monkeypatch.setattr(module, name, wrap(getattr(module, name)))
    return lambda path: denied.append(os.path.abspath(path))


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapSet(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


# linux/capability.h: the capabilities that let root read and list past file permissions.
_CAP_VERSION_3 = 0x20080522
_ROOT_READS = (1 << 1) | (1 << 2)  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH


@contextlib.contextmanager
def _permissions_bind() -> Iterator[None]:
    """File permissions bind this thread as they bind any user, even when it runs as root:
    the two capabilities that let root read past them leave the thread's effective set
    (Linux, as CI's containers run) and come back on exit. A user who is not root has
    nothing to drop."""
    if os.geteuid() != 0:
        yield
        return
    if not sys.platform.startswith("linux"):
        pytest.skip("as root, this needs Linux capabilities to make chmod bind; run the "
                    "tests as a user who is not root")
    libc = ctypes.CDLL(None, use_errno=True)
    header, caps = _CapHeader(_CAP_VERSION_3, 0), (_CapSet * 2)()  # pid 0: this thread

    def capset() -> None:
        if libc.capset(ctypes.byref(header), caps) != 0:
            raise OSError(ctypes.get_errno(), "capset failed")

    if libc.capget(ctypes.byref(header), caps) != 0:
        raise OSError(ctypes.get_errno(), "capget failed")
    saved = caps[0].effective
    caps[0].effective &= ~_ROOT_READS
    capset()
    try:
        yield
    finally:
        caps[0].effective = saved
        capset()


@pytest.fixture
def permissions_bind():
    """``with permissions_bind(): ...``: a chmod 000 path is unreadable inside, as root too."""
    return _permissions_bind
