"""The project's exceptions. Their messages are written for the user: what went wrong, what to do."""


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
