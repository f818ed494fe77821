"""dtg: run Dart v2, DanTagGen and TIPO, the small language models that write Danbooru tag prompts."""

import os as _os

__version__ = "0.1.0"

# The repository keeps the converter in ../convert and the registry in ../models.toml; an installed dtg
# has them inside this package (`dtg_cli.convert`, `dtg_cli/models.toml`, see pyproject.toml). In a source
# checkout, the repository root joins the package's path so that `dtg_cli.convert` is found there too.
_here = _os.path.dirname(__file__)
if not _os.path.isdir(_os.path.join(_here, "convert")) and _os.path.isfile(_os.path.join(_here, _os.pardir, "convert", "__init__.py")):
    __path__.append(_os.path.normpath(_os.path.join(_here, _os.pardir)))
