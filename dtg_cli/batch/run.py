"""`expand`: the whole job behind `dtg batch`: records read lazily, turned into tasks, generated through
the batched engine, and written one result a line, in input order, flushed as each one is done.

A record's settings are, from weakest to strongest: the model family's defaults, the file's
`[defaults]`, the caller's options, the record's own fields.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass

from dtg_cli.batch.outfile import Output, ResumePoint, output_format
from dtg_cli.batch.records import BadRecord, BatchInputError, InputFile, Record
from dtg_cli.batch.tasks import RecordKey, build_task, check_defaults, from_variant
from dtg_cli.engine import Generator
from dtg_cli.errors import DtgError, UsageError
from dtg_cli.outcomes import Outcome, Task
from dtg_cli.rendering import Style
from dtg_cli.scheduler import END, NOT_READY, IterSource, QueuedSource, Source

_RESUME_HINT = "--resume continues only a run of the same command on the same input (--force starts again)"


@dataclass
class Summary:
    """What a run did (this shard, this invocation)."""

    records: int = 0  # records finished (written or failed)
    results: int = 0
    tags: int = 0  # new tags in the written results
    errors: int = 0
    resumed: int = 0  # results found already written by an earlier run
    resumed_records: int = 0  # records an earlier run finished
    base_seed: int = 0
    elapsed_s: float = 0.0

    def line(self) -> str:
        rate = f" ({self.records / self.elapsed_s:.2f} records/s, {self.tags / self.elapsed_s:.0f} tags/s)" if self.elapsed_s > 0 else ""
        parts = [f"{self.records} records, {self.results} results, {self.tags} new tags in {self.elapsed_s:.1f} s{rate}"]
        if self.errors:
            parts.append(f"{self.errors} bad records skipped")
        if self.resumed:
            parts.append(f"{self.resumed} results already written")
        parts.append(f"base seed {self.base_seed}")
        return "; ".join(parts)


class _Tasks(Source):
    """Records -> tasks for the engine, on the main thread: sharding, settings, resuming."""

    def __init__(self, records: Source, *, generator: Generator, options: dict, defaults: dict, base_seed: int,
                 shard: tuple[int, int], resume: ResumePoint, by_count: bool):  # fmt: skip
        self.records = records
        self.generator = generator
        self.options = options
        self.defaults = defaults
        self.base_seed = base_seed
        self.shard = shard
        self.resume = resume
        self.by_count = by_count  # text output: skip the first `resume.results` results
        self.to_skip = resume.results
        self.skipped = 0  # results
        self.skipped_records = 0
        self.resume_checked = False  # the output's last record was found in the input and matches it

    def get(self, block: bool):
        while True:
            item = self.records.get(block)
            if item is END:
                self._check_resumed_all()
            if item is END or item is NOT_READY:
                return item
            k, n = self.shard
            if item.index % n != k:
                continue
            task = item
            if isinstance(item, Record):
                try:
                    task = build_task(item, self.options, self.defaults, self.base_seed)
                except UsageError as e:
                    task = BadRecord(item.index, item.line, "", str(e))
            task = self._after_resume(item, task)
            if task is not None:
                return task

    def _after_resume(self, item, task):
        """What is left of a record after what an earlier run wrote (None: nothing)."""
        if self.by_count:
            if not self.to_skip:
                return task
            if isinstance(task, BadRecord):
                return None  # it wrote nothing there either (and was reported then)
            try:
                self.generator.prepare(task, note_unknown=False)
            except DtgError:
                return None
            done = min(task.request.num, self.to_skip)
            self.to_skip -= done
            return self._rest(task, done)
        last = self.resume.last
        if last is None or self.resume_checked:
            return task
        if item.line > last["line"]:
            raise UsageError(f"the output's last result is for line {last['line']}, which is not a record of the input; {_RESUME_HINT}")
        if isinstance(task, BadRecord):
            return None
        if item.line == last["line"]:
            self._check_resumed_record(task, last)
            self.resume_checked = True
        return self._rest(task, task.request.num if item.line < last["line"] else last["variant"] + 1)

    def _check_resumed_record(self, task: Task, last: dict) -> None:
        """The output's last record must be what this run writes for that record: same seed, conditions and
        sampling settings (the model is checked before the run)."""
        variant = last["variant"]
        prepared = self.generator.prepare(task, note_unknown=False)
        mine = {
            "seed": task.seeds[variant] if variant < len(task.seeds) else None,
            "conditions": json.loads(json.dumps(prepared.conditions)),
            "sampling": {k: v for k, v in json.loads(json.dumps(asdict(prepared.sampling))).items() if k != "seed"},
        }
        for name, value in mine.items():
            if name in last and last[name] != value:
                raise UsageError(
                    f"the output's result for line {last['line']} has {name} {json.dumps(last[name])}, this run gives "
                    f"{json.dumps(value)}; {_RESUME_HINT}"
                )

    def _check_resumed_all(self) -> None:
        if self.by_count and self.to_skip:
            raise UsageError(f"the output has {self.resume.results} results, more than this run makes for the input; {_RESUME_HINT}")
        if not self.by_count and self.resume.last is not None and not self.resume_checked:
            raise UsageError(
                f"the output's last result is for line {self.resume.last['line']}, which is not a record of the input; {_RESUME_HINT}"
            )

    def _rest(self, task: Task, done: int):
        done = min(done, task.request.num)
        self.skipped += done
        if done < task.request.num:
            return from_variant(task, done)
        self.skipped_records += 1
        return None


def expand(
    generator: Generator,
    input_path: str,
    output_path: str | None = None,
    *,
    options: dict | None = None,
    base_seed: int | None = None,
    parallel: int | None = None,
    shard: tuple[int, int] = (0, 1),
    resume: bool = False,
    force: bool = False,
    skip_errors: bool = False,
    input_kind: str | None = None,
    output_kind: str | None = None,
    style: Style = Style(),
    on_error: Callable[[str], None] | None = None,
    on_progress: Callable[[Summary], None] | None = None,
    summary: Summary | None = None,
    engine: Callable[..., Iterator[Outcome]] | None = None,
) -> Summary:
    """Generate every record of `input_path` ('-': stdin) into `output_path` (None: stdout).

    `options` are the caller's settings (Request.from_options keywords; None values are ignored). A bad
    record raises BatchInputError after everything before it is written, unless `skip_errors`, which
    hands its 'FILE:LINE: message' to `on_error` and goes on. `summary`, if given, is kept up to date,
    so that a caller still has it when the run is interrupted. `engine` does the generation (default:
    `generator.run`; `batch.cluster.RayWorkers.run` on a cluster), handing outcomes back in input order.
    """
    started = time.perf_counter()
    kind = output_format(output_path, output_kind)
    source = InputFile(input_path, input_kind)
    try:
        check_defaults(source.defaults, source.defaults_where)
        seed = base_seed if base_seed is not None else source.defaults.get("seed", 0)
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:
            raise BatchInputError(source.name, f"[defaults] seed: {seed!r} must be an integer between 0 and 2**32 - 1")
        summary = summary or Summary()
        summary.base_seed = seed
        with Output(output_path, kind, style=style, resume=resume, force=force, input_path=input_path) as out:
            if out.resume_point.model not in (None, generator.name):
                raise UsageError(f"{output_path} holds results of {out.resume_point.model}, not {generator.name}; {_RESUME_HINT}")
            records = QueuedSource(source.records()) if input_path == "-" else IterSource(source.records())
            tasks = _Tasks(records, generator=generator, options=options or {}, defaults=source.defaults, base_seed=seed,
                           shard=shard, resume=out.resume_point, by_count=kind == "text")  # fmt: skip
            for outcome in (engine or generator.run)(tasks, parallel=parallel):
                summary.resumed, summary.resumed_records = tasks.skipped, tasks.skipped_records
                item = outcome.item
                if isinstance(item, BadRecord) or outcome.error is not None:
                    where = item.where if isinstance(item, BadRecord) and item.where else f"{source.name}:{_line_of(item)}"
                    message = item.message if isinstance(item, BadRecord) else str(outcome.error)
                    if not skip_errors:
                        summary.elapsed_s = time.perf_counter() - started
                        raise BatchInputError(where, message)
                    summary.records += 1
                    summary.errors += 1
                    if on_error:
                        on_error(f"{where}: {message}")
                else:
                    key: RecordKey = item.key
                    out.write(outcome.result, key, key.first_variant + outcome.variant)
                    summary.results += 1
                    summary.tags += len(outcome.result.new_tags)
                    if outcome.variant == item.request.num - 1:
                        summary.records += 1
                summary.elapsed_s = time.perf_counter() - started
                if on_progress:
                    on_progress(summary)
            summary.resumed, summary.resumed_records = tasks.skipped, tasks.skipped_records
    finally:
        source.close()
    summary.elapsed_s = time.perf_counter() - started
    return summary


def _line_of(item) -> int:
    return item.line if isinstance(item, BadRecord) else item.key.line
