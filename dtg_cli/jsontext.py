"""JSON from files dtg does not trust (batch records, the outputs it resumes or merges, a GGUF's embedded
tokenizer.json, a checkpoint's config, index and safetensors header): `loads`, whose every failure but
undecodable bytes is a `BadJSON` with a sentence for the user."""

from __future__ import annotations

import json
from typing import Any


class BadJSON(ValueError):
    """Text that is not JSON dtg can read; its message is a whole sentence ("not valid JSON: ...",
    "nested too deeply", "a number of more than 4300 digits")."""


def loads(data: str | bytes) -> Any:
    """`json.loads`, with the failures it leaves to the interpreter made into `BadJSON` too: arrays or
    objects nested past the interpreter's stack (RecursionError) and integers past Python's limit for
    turning digits into an int. A UnicodeDecodeError (bytes that are not UTF-8) passes through."""
    try:
        return json.loads(data)
    except json.JSONDecodeError as e:
        raise BadJSON(f"not valid JSON: {e.msg} (column {e.colno})") from None
    except RecursionError:
        raise BadJSON("nested too deeply") from None
    except UnicodeDecodeError:
        raise
    except ValueError:  # int() refused the digits (sys.get_int_max_str_digits)
        raise BadJSON("a number of more than 4300 digits") from None
