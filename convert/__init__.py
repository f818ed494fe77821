"""Convert Hugging Face checkpoints of Dart v2, DanTagGen and TIPO to GGUF (F16, Q8_0, Q6_K).

Installed as `dtg_cli.convert` (the repository keeps it at its root)::

    from dtg_cli.convert import convert
    paths = convert("p1atdev/dart-v2-moe-sft", "models/", quants=["q8_0"])
"""

from dtg_cli.convert.pipeline import QUANTS, ConvertProgress, convert, parse_quants

__all__ = ["QUANTS", "ConvertProgress", "convert", "parse_quants"]
