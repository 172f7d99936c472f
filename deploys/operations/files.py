"""The one way a file is written on a host: stage beside it, own it, validate it, rename it into place.

``managed.content``/``managed.template`` (one file from a snapshot) and ``config_files`` (a component's set of
files and the units reading them) both yield :func:`install_file_commands`. For a file whose content differs:

1. the new content is uploaded through pyinfra's temporary directory to ``.<name>.spectra-new`` next to the
   target (same directory, so the final ``mv`` is an atomic rename and no ``*.conf`` glob picks it up; the
   temporary directory keeps uploads working when the login user is not root and ``_sudo`` moves the file);
2. it gets its owner and mode before it has any content visible under the real name;
3. the file's validator runs against the staged path (``sshd -t``, ``nft -c -f``, ...); on failure the staged
   file is removed, the live one is untouched and the operation fails;
4. it is renamed over the target.

A file whose content is right but whose owner or mode is not gets ``chown``/``chmod`` only.
"""

from __future__ import annotations

import hashlib
import posixpath
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from io import BytesIO
from typing import Any

from pyinfra import host
from pyinfra.api import FileUploadCommand, QuoteString, StringCommand
from pyinfra.api.command import PyinfraCommand

from facts.files import normalise_mode

Validator = Callable[[str], StringCommand]


@dataclass(frozen=True)
class ConfigFile:
    """One managed file: where, what, who owns it, and how to check it before it goes live."""

    path: str
    content: str | bytes
    mode: str = "0644"
    user: str = "root"
    group: str = "root"
    # Given the staged path, a command that must exit 0 before the file replaces the live one.
    validate: Validator | None = None

    @property
    def data(self) -> bytes:
        return self.content.encode() if isinstance(self.content, str) else self.content

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    @property
    def staged_path(self) -> str:
        directory, name = posixpath.split(self.path)
        return posixpath.join(directory, f".{name}.spectra-new")


def content_changes(file: ConfigFile, current: Mapping[str, Any] | None) -> bool:
    return current is None or current.get("sha256") != file.sha256


def install_file_commands(file: ConfigFile, current: Mapping[str, Any] | None) -> Iterator[PyinfraCommand]:
    """Commands that bring ``file`` to its desired state, given the path's current state (a ``FileState``)."""
    mode = normalise_mode(file.mode) or "644"
    owner = QuoteString(f"{file.user}:{file.group}")
    if content_changes(file, current):
        staged = file.staged_path
        if current is None:
            yield StringCommand("mkdir", "-p", QuoteString(posixpath.dirname(file.path)))
        yield FileUploadCommand(BytesIO(file.data), staged, remote_temp_filename=host.get_temp_filename(staged))
        yield StringCommand("chown", owner, QuoteString(staged), "&&", "chmod", QuoteString(mode), QuoteString(staged))
        if file.validate is not None:
            failed = QuoteString(f"validation failed, {file.path} left unchanged")
            yield StringCommand(
                "(", file.validate(staged), ")", "||",
                "{", "rm", "-f", QuoteString(staged), ";", "echo", failed, ">&2", ";", "exit", "1", ";", "}",
            )  # fmt: skip
        yield StringCommand("mv", "-f", QuoteString(staged), QuoteString(file.path))
        return
    assert current is not None
    if current.get("user") != file.user or current.get("group") != file.group:
        yield StringCommand("chown", owner, QuoteString(file.path))
    if current.get("mode") != mode:
        yield StringCommand("chmod", QuoteString(mode), QuoteString(file.path))
