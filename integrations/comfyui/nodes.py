"""The "Generate tags (dtg)" node: tags from a running `dtg serve`, with the standard library alone.

It follows ComfyUI's node interface (INPUT_TYPES, RETURN_TYPES, RETURN_NAMES, FUNCTION, CATEGORY,
IS_CHANGED, VALIDATE_INPUTS, INPUT_IS_LIST, OUTPUT_IS_LIST). Every input is taken as a list, so that a
list of prompts (ComfyUI's list execution) goes to the server as one request of many prompts, decoded
together, and comes back in order.
"""

import hashlib
import json
import time

from . import server

# The models dtg knows by name (its models.toml), listed when no server answers as the node list is built.
REGISTRY_NAMES = (
    "dart-v2-moe-sft",
    "dart-v2-moe-base",
    "dart-v2-sft",
    "dart-v2-base",
    "dantaggen-alpha",
    "dantaggen-beta",
    "dantaggen-gamma",
    "dantaggen-delta",
    "dantaggen-delta-rev2",
    "tipo-500m",
    "tipo-200m",
    "tipo-200m-ft",
    "tipo-200m-ft2",
    "tipo-100m",
)
RATINGS = ("general", "sfw", "sensitive", "nsfw", "questionable", "explicit")
LENGTHS = ("very_short", "short", "medium", "long", "very_long")
DEFAULT = "default"  # a choice that leaves a setting to the model
UNSET = -1  # a number that leaves a setting to the model
MODEL_LIST_S = 10.0  # how long a model list read from the server is kept

_listed = {"at": 0.0, "names": None}


def model_names() -> list:
    """The models of the server at DTG_SERVER_URL (or the default address), else dtg's registry names."""
    if _listed["names"] is None or time.monotonic() - _listed["at"] > MODEL_LIST_S:
        try:
            names = [m["id"] for m in server.models(server.DEFAULT_URL, timeout=1.0)]
        except server.DtgServerError:
            names = []
        _listed["names"], _listed["at"] = names or list(REGISTRY_NAMES), time.monotonic()
    return list(_listed["names"])


def _at(values, i):
    """Input `i` of a list input (ComfyUI repeats the last item of a shorter list)."""
    if not isinstance(values, list):
        return values
    return values[min(i, len(values) - 1)] if values else None


class DtgGenerateTags:
    """Danbooru tags for a prompt, from Dart v2, DanTagGen or TIPO served by `dtg serve`."""

    @classmethod
    def INPUT_TYPES(cls):
        names = model_names()
        return {
            "required": {
                "server_url": ("STRING", {"default": server.DEFAULT_URL, "tooltip": "Where `dtg serve` listens."}),
                "model": (names, {"default": names[0], "tooltip": "A model the server was started with (dtg serve -m MODEL)."}),
                "tags": ("STRING", {"multiline": True, "default": "1girl, solo", "tooltip": "Your tags, in web-UI syntax."}),
                "rating": (list(RATINGS), {"default": "general"}),
                "width": ("INT", {"default": 832, "min": 1, "max": 16384, "step": 8, "tooltip": "With height: the image's aspect ratio."}),
                "height": ("INT", {"default": 1216, "min": 1, "max": 16384, "step": 8}),
                "length": (list(LENGTHS), {"default": "long"}),
                "seed": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFF, "control_after_generate": True}),
                "ban": (
                    "STRING",
                    {"multiline": True, "default": "", "tooltip": "Tags never to write: one per line, a glob (*hair*) or re:REGEX."},
                ),
            },
            "optional": {
                "identity": (
                    [DEFAULT, "none", "lax", "strict"],
                    {"default": DEFAULT, "tooltip": "Dart v2 SFT: how closely to keep your subjects."},
                ),
                "artist": ("STRING", {"default": "", "tooltip": "DanTagGen and TIPO: artist tags."}),
                "quality": ("STRING", {"default": "", "tooltip": "DanTagGen delta and TIPO: quality tags, e.g. masterpiece."}),
                "nl": (
                    "STRING",
                    {"multiline": True, "default": "", "tooltip": "TIPO: a caption to write tags (or a longer caption) from."},
                ),
                "write": ([DEFAULT, "tags", "nl", "both"], {"default": DEFAULT, "tooltip": "TIPO: tags, a caption (nl), or both."}),
                "temperature": (
                    "FLOAT",
                    {"default": UNSET, "min": UNSET, "max": 100.0, "step": 0.05, "tooltip": "-1: the model's default."},
                ),
                "top_p": ("FLOAT", {"default": UNSET, "min": UNSET, "max": 1.0, "step": 0.01, "tooltip": "-1: the model's default."}),
                "top_k": ("INT", {"default": UNSET, "min": UNSET, "max": 100000, "tooltip": "-1: the model's default."}),
                "api_key": ("STRING", {"default": "", "tooltip": "The server's key, if it has one (default: $DTG_API_KEY)."}),
                "timeout": ("FLOAT", {"default": 120.0, "min": 1.0, "max": 3600.0, "tooltip": "Seconds to wait for the results."}),
            },
        }

    RETURN_TYPES = ("STRING", "STRING", "STRING")
    RETURN_NAMES = ("prompt", "new_tags", "caption")
    OUTPUT_IS_LIST = (True, True, True)
    INPUT_IS_LIST = True
    FUNCTION = "generate"
    CATEGORY = "conditioning/dtg"
    DESCRIPTION = "Danbooru tags from Dart v2, DanTagGen or TIPO, generated by a running `dtg serve`."

    @classmethod
    def IS_CHANGED(cls, **inputs):
        """The same inputs (seed included) give the same results: a fingerprint of them."""
        return hashlib.sha256(json.dumps(inputs, sort_keys=True, default=str).encode("utf-8")).hexdigest()

    @classmethod
    def VALIDATE_INPUTS(cls, model):
        """Any model name: the list may be older than the server, which says which ones it has."""
        names = model if isinstance(model, list) else [model]
        return True if all(isinstance(n, str) and n for n in names) else "model: give a model name"

    def generate(self, server_url, model, tags, rating, width, height, length, seed, ban, **optional):
        inputs = {"tags": tags, "rating": rating, "width": width, "height": height, "length": length, "seed": seed, "ban": ban, **optional}
        count = max(len(v) if isinstance(v, list) else 1 for v in inputs.values())
        requests = [request_fields({name: _at(values, i) for name, values in inputs.items()}) for i in range(count)]
        url, name = _at(server_url, 0), _at(model, 0)
        key, timeout = _at(optional.get("api_key", ""), 0) or "", float(_at(optional.get("timeout", 120.0), 0))
        results = server.generate(url, name, requests, key, timeout)
        records = [per[0] for per in results]
        return (
            [r["text"] for r in records],
            [", ".join(r["new_tags"]) for r in records],
            [r["nl"] or "" for r in records],
        )


def request_fields(values: dict) -> dict:
    """One request of the body: what the node's inputs set, and nothing they leave to the model."""
    fields = {
        "tags": values["tags"],
        "rating": values["rating"],
        "width": int(values["width"]),
        "height": int(values["height"]),
        "length": values["length"],
        "seed": int(values["seed"]),
    }
    bans = [line.strip() for line in (values.get("ban") or "").splitlines() if line.strip()]
    if bans:
        fields["ban"] = bans
    for name in ("identity", "write"):
        if values.get(name) not in (None, DEFAULT):
            fields[name] = values[name]
    for name in ("artist", "quality", "nl"):
        if (values.get(name) or "").strip():
            fields[name] = values[name]
    for name, kind in (("temperature", float), ("top_p", float), ("top_k", int)):
        if values.get(name) is not None and values[name] != UNSET:
            fields[name] = kind(values[name])
    return fields


NODE_CLASS_MAPPINGS = {"DtgGenerateTags": DtgGenerateTags}
NODE_DISPLAY_NAME_MAPPINGS = {"DtgGenerateTags": "Generate tags (dtg)"}
