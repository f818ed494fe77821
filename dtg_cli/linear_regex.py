"""Regular expressions from outside (a `--ban re:` pattern, the Split pattern of a GGUF's tokenizer.json),
compiled by RE2 (google-re2), which matches in time linear in the text whatever the pattern: no input can
make dtg backtrack for hours. RE2 has no backreferences or lookaround."""

from __future__ import annotations


def compile_linear(pattern: str, *, ignore_case: bool = False):
    """`pattern` compiled by RE2 (search, finditer, match as in `re`); raises ValueError with RE2's reason
    for one it cannot compile."""
    import re2  # imported by the first pattern: most runs have none

    options = re2.Options()
    options.case_sensitive = not ignore_case
    options.log_errors = False  # the error is raised here, not also written to stderr by RE2
    try:
        return re2.compile(pattern, options)
    except re2.error as e:
        why = e.args[0].decode(errors="replace") if e.args and isinstance(e.args[0], bytes) else str(e)
        raise ValueError(why) from None
