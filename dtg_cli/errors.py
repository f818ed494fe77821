"""The project's exceptions. Their messages are written for the user: what went wrong, what to do."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (from `timeout`, systemd, Kubernetes), handled as Ctrl-C is (what was open is closed, what
    was written stays whole) and ending with exit code 143 instead of 130."""

    exit_code = 143


class DtgError(Exception):
    """Base of every error the CLI reports as one line and a non-zero exit."""

    exit_code = 1


class UsageError(DtgError):
    """A flag value or argument that cannot be used."""

    exit_code = 2


class CheckpointError(DtgError):
    """A Hugging Face checkpoint that is missing, incomplete, corrupt or unsupported."""


class ModelFileError(DtgError):
    """A GGUF file that is missing, corrupt or cannot be loaded."""


class MissingDependencyError(DtgError):
    """An optional package that the requested feature needs is not installed."""


_SETTING = "\x00"  # marks a setting's name in a SettingError; repr() of user text can never hold it


def setting(name: str) -> str:
    """A setting's name inside a SettingError message: a field name for a library caller or a batch record
    (max_new_tokens), a flag on the command line (--max-new-tokens)."""
    return f"{_SETTING}{name}{_SETTING}"


class SettingError(UsageError):
    """A setting that cannot be used. The message names settings with `setting()`: `str()` reads them as
    field names, `as_flags()` as command-line flags, so that only the CLI speaks of flags."""

    def __init__(self, message: str):
        self.template = message
        super().__init__(self._render(lambda name: name))

    def _render(self, name_of) -> str:
        parts = self.template.split(_SETTING)
        return "".join(name_of(part) if i % 2 else part for i, part in enumerate(parts))

    @property
    def names(self) -> list[str]:
        """The settings the message names, in its order."""
        return self.template.split(_SETTING)[1::2]

    def as_flags(self) -> str:
        return self._render(lambda name: "--" + name.replace("_", "-"))
