"""The one error a scenario file can produce."""

from __future__ import annotations

from loadgen.protocol.errors import ConfigError


class ScenarioError(ConfigError):
    """An invalid scenario file, pinned to a place in it.

    ``str(err)`` is ``"FILE:LINE: KEY.PATH: MESSAGE"`` (line and key path are left out when
    unknown), ready to print as is. The message never contains key material.
    """

    def __init__(self, file: str, line: int, key_path: str, message: str) -> None:
        where = f"{file}:{line}" if line else file
        # args[0] is the whole located text: callers that print ``exc.args[0]`` (as the CLI
        # does for every ConfigError, to drop the code prefix) still show file and line.
        super().__init__(f"{where}: {key_path}: {message}" if key_path else f"{where}: {message}")
        self.file = file
        self.line = line  # 1-based; 0 when the problem is not on a line (unreadable file)
        self.key_path = key_path  # e.g. "targets[1].port"; "" for the document itself
        self.message = message  # without the location

    def __reduce__(self) -> tuple[type[ScenarioError], tuple[str, int, str, str]]:
        # Custom __init__ arguments: without this the error cannot cross a process boundary.
        return type(self), (self.file, self.line, self.key_path, self.message)

    def __str__(self) -> str:
        return str(self.args[0])  # no "config-error: " prefix: the location says enough
