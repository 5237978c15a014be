"""The configuration's error types, apart so that :mod:`emanet.names` and :mod:`emanet.config` share them."""

from __future__ import annotations


class ConfigError(ValueError):
    """Invalid configuration; the message names the file or the dotted key."""


class ParamsError(ConfigError):
    """An error in the parameters' content found while resolving them (an unknown, missing or mistyped key,
    an unknown profile or experiment, a bad --set): the CLI names the params file (and the --set overrides)
    it came from, which the resolver does not know.

    ``problems`` holds one line per invalid setting (the message itself when there is one), so that
    :func:`emanet.config.check_all` can gather them over every run and profile.
    """

    def __init__(self, message: str, problems: list[str] | None = None):
        super().__init__(message)
        self.problems = problems or [message]
