import json

import numpy as np
import pytest

from dtg_cli.convert.safetensors import SafetensorsCheckpoint
from dtg_cli.errors import CheckpointError
from tests.checkpoints import to_bytes


def write(path, tensors: dict[str, tuple[str, np.ndarray]]):
    header, blobs, offset = {}, [], 0
    for name, (dtype, array) in tensors.items():
        blob = to_bytes(array, dtype)
        header[name] = {"dtype": dtype, "shape": list(array.shape), "data_offsets": [offset, offset + len(blob)]}
        offset += len(blob)
        blobs.append(blob)
    raw = json.dumps(header).encode()
    path.write_bytes(len(raw).to_bytes(8, "little") + raw + b"".join(blobs))


def test_reads_f32_f16_and_bf16(tmp_path):
    rng = np.random.default_rng(0)
    a = rng.standard_normal((3, 5)).astype(np.float32)
    write(tmp_path / "model.safetensors", {"a": ("F32", a), "b": ("F16", a), "c": ("BF16", a)})
    ckpt = SafetensorsCheckpoint(tmp_path)
    assert ckpt.dtypes() == {"F32", "F16", "BF16"}
    np.testing.assert_array_equal(ckpt.load("a"), a)
    np.testing.assert_array_equal(ckpt.load("b"), a.astype(np.float16).astype(np.float32))
    # bf16 keeps 8 significant bits: within half a unit in the last place
    np.testing.assert_allclose(ckpt.load("c"), a, rtol=2**-8)
    assert ckpt.load("c").dtype == np.float32 and ckpt.shape("c") == (3, 5)


def test_bf16_values_that_are_exact_come_back_exactly(tmp_path):
    exact = np.array([1.0, -2.5, 0.15625, 2.0**100, -1.5 * 2.0**-100], dtype=np.float32)
    write(tmp_path / "model.safetensors", {"x": ("BF16", exact)})
    np.testing.assert_array_equal(SafetensorsCheckpoint(tmp_path).load("x"), exact)


def test_sharded_checkpoint_with_index(tmp_path):
    a, b = np.ones((2, 2), np.float32), np.full((4,), 3.0, np.float32)
    write(tmp_path / "model-00001-of-00002.safetensors", {"a": ("F32", a)})
    write(tmp_path / "model-00002-of-00002.safetensors", {"b": ("F32", b)})
    index = {"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    ckpt = SafetensorsCheckpoint(tmp_path)
    assert sorted(ckpt.names()) == ["a", "b"]
    np.testing.assert_array_equal(ckpt.load("b"), b)


def test_missing_shard_is_named(tmp_path):
    index = {"weight_map": {"a": "model-00001-of-00002.safetensors"}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match="model-00001-of-00002.safetensors"):
        SafetensorsCheckpoint(tmp_path)


def test_truncated_file_is_reported(tmp_path):
    write(tmp_path / "model.safetensors", {"a": ("F32", np.ones((64, 64), np.float32))})
    data = (tmp_path / "model.safetensors").read_bytes()
    (tmp_path / "model.safetensors").write_bytes(data[:-100])
    with pytest.raises(CheckpointError, match="truncated"):
        SafetensorsCheckpoint(tmp_path)


def test_garbage_header_is_reported(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!")
    with pytest.raises(CheckpointError, match="corrupt"):
        SafetensorsCheckpoint(tmp_path)


def test_unsupported_dtype_is_named(tmp_path):
    raw = json.dumps({"a": {"dtype": "I64", "shape": [1], "data_offsets": [0, 8]}}).encode()
    (tmp_path / "model.safetensors").write_bytes(len(raw).to_bytes(8, "little") + raw + bytes(8))
    with pytest.raises(CheckpointError, match="I64"):
        SafetensorsCheckpoint(tmp_path)
