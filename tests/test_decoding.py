"""The decode-shape rules of `dtg_cli.decoding`, checked on every decode of real runs, and the contract
they exist for: results that do not depend on --parallel."""

from __future__ import annotations

import pytest

from dtg_cli.decoding import UBATCH, chunks
from dtg_cli.engine import Generator
from dtg_cli.outcomes import Task
from dtg_cli.settings import Request, Sampling

PROMPTS = ["1girl, cat ears", "solo", "", "2boys, long hair, smile, looking at viewer", "1girl, sky, cloud, outdoors", "1other"]


def test_chunks_depend_on_the_length_alone_and_never_leave_one_token():
    for n in [1, 2, 3, UBATCH - 1, UBATCH, UBATCH + 1, UBATCH + 2, 2 * UBATCH + 1, 3 * UBATCH]:
        sizes = chunks(n)
        assert sum(sizes) == n
        assert all(0 < s <= UBATCH for s in sizes)
        assert n == 1 or 1 not in sizes, (n, sizes)


class RecordingContext:
    """Wraps a llama.cpp context and keeps the rows of every decode."""

    def __init__(self, context):
        self.inner = context
        self.decodes: list[list[tuple]] = []

    def decode_many(self, rows):
        self.decodes.append([(seq, len(tokens), pos, logits) for seq, tokens, pos, logits in rows])
        return self.inner.decode_many(rows)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def _run(path, parallel: int, recorded: list) -> list[list[int]]:
    with Generator(path) as generator:
        make = generator.decoder

        def decoder(n, n_ctx_seq):
            d = make(n, n_ctx_seq)
            if not isinstance(d.context, RecordingContext):
                d.context = RecordingContext(d.context)
                recorded.append(d.context)
            return d

        generator.decoder = decoder
        tasks = [
            Task(Request(tags=tuple(p.split(", ")) if p else (), num=2, sampling=Sampling(seed=10 + i))) for i, p in enumerate(PROMPTS)
        ]
        return [o.result.output_ids for o in generator.run(tasks, parallel=parallel)]


@pytest.mark.parametrize("kind", ["dart-moe", "dantaggen", "tipo"])
def test_every_decode_of_a_batch_has_one_shape(ggufs, kind):
    recorded: list[RecordingContext] = []
    _run(ggufs[kind]["q8_0"], 5, recorded)
    (context,) = recorded
    holder = context.n_seq_max - 1
    batched = [rows for rows in context.decodes if not (len(rows) == 1 and rows[0][0] == holder)]
    assert batched, "no batched decodes were recorded"
    for rows in batched:
        seqs = [seq for seq, *_ in rows]
        assert len(rows) >= 2, rows  # never a lone row
        assert all(n == 1 for _, n, _, _ in rows), rows  # one token per sequence
        assert seqs == list(range(len(seqs))), rows  # busy sequences in the lowest slots
        assert sum(logits for *_, logits in rows) != 1, rows  # never one row alone asking for logits
    heads = [rows for rows in context.decodes if len(rows) == 1 and rows[0][0] == holder]
    assert heads, "the shared prompt head was never decoded"
    assert all(not logits for ((_, _, _, logits),) in heads)


@pytest.mark.parametrize("kind", ["dart-moe", "dart-dense", "dantaggen", "tipo"])
def test_the_engine_gives_the_same_results_at_any_parallel(ggufs, kind):
    results = {p: _run(ggufs[kind]["q8_0"], p, []) for p in (2, 3, 16)}
    assert results[2] == results[3] == results[16]
    assert any(len(ids) > 3 for ids in results[2])
