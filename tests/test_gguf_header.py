"""The one GGUF reader outside the converter, against gguf-py's on every test file."""

import gguf
import pytest

from dtg_cli.errors import ModelFileError
from dtg_cli.gguf_header import ArrayInfo, read_header, read_metadata


@pytest.mark.parametrize("kind", ["dart-moe", "dart-dense", "dantaggen"])
@pytest.mark.parametrize("quant", ["f16", "q8_0", "q6_k"])
def test_the_header_reads_as_gguf_py_reads_it(ggufs, kind, quant):
    path = ggufs[kind][quant]
    reference = gguf.GGUFReader(str(path))
    header = read_header(path)
    for field in reference.fields.values():
        if field.name.startswith("GGUF."):
            continue
        mine = header.metadata[field.name]
        if isinstance(mine, ArrayInfo):
            assert mine.length == len(field.data), field.name
        else:
            assert mine == pytest.approx(field.contents()), field.name
    assert [(t.name, t.shape, t.ggml_type) for t in header.tensors] == [
        (t.name, tuple(int(d) for d in t.shape), int(t.tensor_type)) for t in reference.tensors
    ]
    assert sum(t.n_elements for t in header.tensors) == sum(int(t.n_elements) for t in reference.tensors)
    assert [t.n_bytes for t in header.tensors] == [int(t.n_bytes) for t in reference.tensors]
    assert read_metadata(path) == header.metadata


def test_a_truncated_or_foreign_file_is_one_line(dart, tmp_path):
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(dart.read_bytes()[:-1])
    with pytest.raises(ModelFileError, match="truncated"):
        read_header(cut)
    cut.write_bytes(dart.read_bytes()[:100])
    with pytest.raises(ModelFileError, match="truncated"):
        read_metadata(cut)
    cut.write_bytes(b"PK\x03\x04 not a gguf")
    with pytest.raises(ModelFileError, match="no GGUF magic"):
        read_metadata(cut)
