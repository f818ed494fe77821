"""The ComfyUI node package (integrations/comfyui): it imports where neither dtg nor llama-cpp-python can,
keeps ComfyUI's node contract, and gives what `dtg generate` gives, through a live `dtg serve`."""

from __future__ import annotations

import importlib.util
import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from dtg_cli.registry import registry
from tests.servers import Served, call, free_port
from tests.test_hostile import dtg

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

PACKAGE = Path(__file__).resolve().parent.parent / "integrations" / "comfyui"
WIDGET_TYPES = {"STRING": str, "INT": int, "FLOAT": (int, float), "BOOLEAN": bool}

# Loads the package as ComfyUI does (a folder under custom_nodes/, imported by path), in a Python started
# with -I -S: no site-packages, no PYTHONPATH, no current directory, so dtg cannot be imported.
PRELUDE = f"""
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location("dtg_tags", {str(PACKAGE / "__init__.py")!r}, submodule_search_locations=[{str(PACKAGE)!r}])
package = importlib.util.module_from_spec(spec)
sys.modules["dtg_tags"] = package
spec.loader.exec_module(package)
node = package.NODE_CLASS_MAPPINGS["DtgGenerateTags"]()
"""


def isolated(code: str, env: dict | None = None) -> dict:
    """Run `code` after PRELUDE in an isolated Python; it prints one JSON value, returned here."""
    done = subprocess.run([sys.executable, "-I", "-S", "-c", PRELUDE + code], capture_output=True, text=True, timeout=300, env=env or {})
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def call_node(url: str, model: str, tags, env: dict | None = None, **inputs) -> dict:
    """The node's function, as ComfyUI calls it (every input a list), in an isolated Python: its outputs,
    or the error it raised."""
    widgets = {"rating": "general", "width": 832, "height": 1216, "length": "long", "seed": 0, "ban": "", **inputs}
    given = {k: v if isinstance(v, list) else [v] for k, v in {"server_url": url, "model": model, "tags": tags, **widgets}.items()}
    code = f"""
try:
    out = node.generate(**{given!r})
    print(json.dumps({{"outputs": out}}))
except package.nodes.server.DtgServerError as e:
    print(json.dumps({{"error": str(e)}}))
"""
    return isolated(code, env)


@pytest.fixture(scope="module")
def node_class():
    spec = importlib.util.spec_from_file_location("dtg_tags_contract", PACKAGE / "__init__.py", submodule_search_locations=[str(PACKAGE)])
    module = importlib.util.module_from_spec(spec)
    sys.modules["dtg_tags_contract"] = module
    spec.loader.exec_module(module)
    return module.NODE_CLASS_MAPPINGS["DtgGenerateTags"]


def test_it_imports_where_dtg_and_llama_cpp_cannot():
    found = isolated(
        "import importlib.util\n"
        "print(json.dumps({'nodes': sorted(package.NODE_CLASS_MAPPINGS), 'names': package.NODE_DISPLAY_NAME_MAPPINGS, "
        "'dtg': importlib.util.find_spec('dtg_cli') is not None, 'llama': importlib.util.find_spec('llama_cpp') is not None}))"
    )
    assert found == {"nodes": ["DtgGenerateTags"], "names": {"DtgGenerateTags": "Generate tags (dtg)"}, "dtg": False, "llama": False}


def test_the_node_keeps_comfyuis_contract(node_class):
    types = node_class.INPUT_TYPES()
    assert set(types) <= {"required", "optional", "hidden"} and "required" in types
    for group in ("required", "optional"):
        for name, spec in types[group].items():
            kind, options = spec
            if isinstance(kind, list):  # a combo: its default is one of its choices
                assert kind and all(isinstance(c, str) for c in kind), name
                assert options.get("default", kind[0]) in kind, name
                continue
            assert kind in WIDGET_TYPES, (name, kind)
            default = options["default"]
            assert isinstance(default, WIDGET_TYPES[kind]) and not isinstance(default, bool) or kind == "BOOLEAN", name
            if "min" in options:
                assert options["min"] <= default <= options["max"], name
    assert types["required"]["seed"][1]["control_after_generate"] is True
    assert types["required"]["seed"][1]["max"] == 2**32 - 1  # dtg's seeds
    assert len(node_class.RETURN_TYPES) == len(node_class.RETURN_NAMES) == len(node_class.OUTPUT_IS_LIST)
    assert node_class.RETURN_TYPES == ("STRING", "STRING", "STRING") and node_class.RETURN_NAMES == ("prompt", "new_tags", "caption")
    assert callable(getattr(node_class, node_class.FUNCTION)) and isinstance(node_class.CATEGORY, str)
    assert node_class.INPUT_IS_LIST is True
    inputs = {"tags": ["1girl"], "seed": [3], "model": ["dart-v2-moe-sft"]}
    assert node_class.IS_CHANGED(**inputs) == node_class.IS_CHANGED(**json.loads(json.dumps(inputs)))
    assert node_class.IS_CHANGED(**{**inputs, "seed": [4]}) != node_class.IS_CHANGED(**inputs)
    assert node_class.VALIDATE_INPUTS(model=["any-served-name"]) is True
    assert node_class.VALIDATE_INPUTS(model=[""]) != True  # noqa: E712 - ComfyUI reads anything but True as an error


def test_without_a_server_the_model_list_is_dtgs_registry(node_class, monkeypatch):
    from dtg_tags_contract import nodes

    monkeypatch.setattr(nodes.server, "DEFAULT_URL", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setitem(nodes._listed, "names", None)
    assert node_class.INPUT_TYPES()["required"]["model"][0] == list(registry())
    assert list(nodes.REGISTRY_NAMES) == list(registry())


def test_the_package_is_publishable_and_its_example_workflow_fits_the_node(node_class):
    meta = tomllib.loads((PACKAGE / "pyproject.toml").read_text(encoding="utf-8"))
    assert meta["project"]["dependencies"] == [] and {"PublisherId", "DisplayName", "Icon"} <= set(meta["tool"]["comfy"])
    assert "comfyui" not in meta["project"]["name"].lower() and (PACKAGE / "LICENSE").is_file() and (PACKAGE / "README.md").is_file()
    graph = json.loads((PACKAGE / "example_workflow_api.json").read_text(encoding="utf-8"))
    types = node_class.INPUT_TYPES()
    known = {**types["required"], **types["optional"]}
    (node_id,) = [k for k, n in graph.items() if n["class_type"] == "DtgGenerateTags"]
    inputs = graph[node_id]["inputs"]
    assert set(types["required"]) <= set(inputs) <= set(known)
    for name, value in inputs.items():
        kind, options = known[name]
        if isinstance(kind, list):
            assert name == "model" or value in kind, name  # any model name passes VALIDATE_INPUTS
        else:
            assert isinstance(value, WIDGET_TYPES[kind]), name
            assert options.get("min", value) <= value <= options.get("max", value), name
    links = [(k, name, v) for k, n in graph.items() for name, v in n["inputs"].items() if isinstance(v, list)]
    assert all(v[0] in graph for _, _, v in links)
    to_dtg = [(k, name, v) for k, name, v in links if v[0] == node_id]
    assert to_dtg and all(
        graph[k]["class_type"] == "CLIPTextEncode" and name == "text" and v[1] < len(node_class.RETURN_TYPES) for k, name, v in to_dtg
    )


FIELDS = {"rating": "general", "width": 832, "height": 1216, "length": "long"}
CASES = {  # node inputs beyond FIELDS, and the same as dtg generate flags
    "dart": (
        {"seed": 5, "identity": "strict", "ban": "*hair*\nre:^a"},
        ["--seed", "5", "--identity", "strict", "--ban", "*hair*", "--ban", "re:^a"],
    ),
    "dantaggen": ({"seed": 6, "artist": "wlop", "temperature": 0.8}, ["--seed", "6", "--artist", "wlop", "--temperature", "0.8"]),
    "tipo": (
        {"seed": 7, "nl": "A girl in a flower field.", "write": "both", "length": "short"},
        ["--seed", "7", "--nl", "A girl in a flower field.", "--write", "both", "--length", "short"],
    ),
}


def cli(model: Path, tags: str, flags: list[str]) -> dict:
    base = ["--rating", "general", "--width", "832", "--height", "1216", "--length", "long"]
    done = dtg("generate", "-m", model, tags, *base, *flags, "--format", "json", "--parallel", "2")
    assert done.returncode == 0, done.stderr.decode()
    (record,) = json.loads(done.stdout)
    return record


@pytest.mark.parametrize("family", list(CASES))
def test_the_node_gives_what_dtg_generate_gives(served, models, family):
    inputs, flags = CASES[family]
    tags = "1girl, (cat ears:1.2)"
    got = call_node(served.url, models[family].stem, tags, **{**FIELDS, **inputs})
    record = cli(models[family], tags, flags)
    assert got == {"outputs": [[record["text"]], [", ".join(record["new_tags"])], [record["nl"] or ""]]}
    if family == "tipo":
        assert record["nl"] and got["outputs"][0][0].endswith(record["nl"])


def test_a_list_of_prompts_is_one_request_with_the_results_in_order(served, models):
    prompts = ["1girl, solo", "scenery, night", "cat ears, smile"]
    before = _requests(served.url)
    got = call_node(served.url, models["dart"].stem, prompts, **FIELDS, seed=9)
    assert _requests(served.url) == before + 1
    expected = [cli(models["dart"], p, ["--seed", "9"]) for p in prompts]
    assert got["outputs"][0] == [r["text"] for r in expected]
    assert got["outputs"][1] == [", ".join(r["new_tags"]) for r in expected]


def _requests(url: str) -> int:
    text = call(url, "/metrics")[1]
    return sum(int(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith("dtg_requests_total{"))


def test_errors_are_one_sentence(served, models):
    down = f"http://127.0.0.1:{free_port()}"
    got = call_node(down, "dart-v2-moe-sft", "1girl")
    assert got["error"].startswith(f"no dtg server at {down}") and got["error"].endswith("start it with `dtg serve -m MODEL`")
    got = call_node(served.url, "no-such-model", "1girl")
    assert got["error"].startswith("dtg serve: model 'no-such-model' is not served here; this server has")
    got = call_node(served.url, models["tipo"].stem, "1girl", identity="strict")
    assert "identity is not used by" in got["error"]
    got = call_node(served.url, models["dart"].stem, "1girl", top_p=0.0)
    assert got["error"].startswith("dtg serve: top_p: 0.0 must be in (0, 1]")
    with socket.socket() as silent:  # takes the connection, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        assert call_node(url, "dart-v2-moe-sft", "1girl", timeout=1.0) == {"error": f"dtg serve at {url} did not answer within 1 s"}


def test_a_key_from_the_environment_or_the_input(models):
    with Served([models["dart"]], env={"DTG_API_KEY": "s3cret"}) as server:
        name = models["dart"].stem
        assert "its API key is needed; set DTG_API_KEY" in call_node(server.url, name, "1girl")["error"]
        assert "its API key was refused" in call_node(server.url, name, "1girl", api_key="wrong")["error"]
        assert "outputs" in call_node(server.url, name, "1girl", api_key="s3cret")
        assert "outputs" in call_node(server.url, name, "1girl", env={"DTG_API_KEY": "s3cret"})
