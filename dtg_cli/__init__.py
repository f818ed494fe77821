"""dtg: run Dart v2 and DanTagGen, the small language models that write Danbooru tag prompts."""

__version__ = "0.1.0"
