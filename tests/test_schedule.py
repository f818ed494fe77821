"""The scheduler as a server runs it: a fixed context, outcomes as they finish, dropped tasks, and finished
outcomes handed back before it waits for more input."""

from __future__ import annotations

import json

import pytest

from dtg_cli.engine import Generator
from dtg_cli.outcomes import Task
from dtg_cli.output import result_record
from dtg_cli.scheduler import DROPPED, END, NOT_READY, Source
from dtg_cli.settings import Request


def request(tags: str, seed: int, **options) -> Request:
    return Request.from_options(tags, sampling={"seed": seed, **options.pop("sampling", {})}, **options)


def records(outcomes) -> dict:
    return {(o.item.key, o.variant): json.dumps(result_record(o.result)) for o in outcomes}


@pytest.fixture(scope="module")
def dantaggen(ggufs):
    with Generator(ggufs["dantaggen"]["q8_0"]) as g:
        yield g


# DanTagGen at very_long continues results that stop short: a run alone sizes its context for each.
TASKS = [
    Task(request("1girl, solo", 1, length="very_long"), key="a"),
    Task(request("cat ears", 2, num=2, sampling={"max_new_tokens": 96}), key="b"),
    Task(request("scenery", 3, length="short"), key="c"),
]


def test_a_fixed_context_gives_each_task_the_results_of_a_run_of_it_alone(dantaggen):
    alone = {}
    for task in TASKS:
        alone.update(records(dantaggen.run([task], parallel=2)))
    served = records(dantaggen.run(list(TASKS), parallel=5, context=2048, ordered=False))
    assert served == alone


def test_a_task_that_needs_more_than_the_fixed_context_is_refused(dantaggen):
    (outcome,) = dantaggen.run([Task(request("1girl", 1, sampling={"max_new_tokens": 900}), key="x")], parallel=2, context=768)
    assert outcome.result is None and "need a context of" in str(outcome.error) and "768 per sequence" in str(outcome.error)


def test_unordered_outcomes_come_as_they_finish(dantaggen):
    long = Task(request("1girl", 1, sampling={"max_new_tokens": 200}, retries=0, length="very_long"), key="long")
    short = Task(request("1girl", 2, sampling={"max_new_tokens": 4}), key="short")
    assert [o.item.key for o in dantaggen.run([long, short], parallel=2)] == ["long", "short"]
    assert [o.item.key for o in dantaggen.run([long, short], parallel=2, ordered=False)] == ["short", "long"]


def test_dropped_tasks_leave_their_slots_and_the_others_are_untouched(dantaggen):
    gone = {"b"}
    outcomes = list(dantaggen.run(list(TASKS), parallel=2, ordered=False, dropped=lambda task: task.key in gone))
    dropped = [(o.item.key, o.variant) for o in outcomes if o.error is DROPPED]
    assert sorted(dropped) == [("b", 0), ("b", 1)]
    kept = records(o for o in outcomes if o.error is None)
    alone = {}
    for task in (TASKS[0], TASKS[2]):
        alone.update(records(dantaggen.run([task], parallel=2)))
    assert kept == alone


class _OneBadThenWaiting(Source):
    """Gives one task that cannot start, then has nothing yet; waiting for more would wait forever."""

    def __init__(self, task: Task):
        self.task = task
        self.calls = 0

    def get(self, block: bool):
        self.calls += 1
        if self.calls == 1:
            return self.task
        if block:
            raise AssertionError("the scheduler waited for input with an outcome to hand back")
        return NOT_READY if self.calls < 50 else END


@pytest.mark.parametrize("ordered", [True, False])
def test_an_outcome_is_handed_back_before_the_scheduler_waits_for_input(dantaggen, ordered):
    bad = Task(request("1girl", 2**32 - 1, num=2), key="bad")  # its seeds would pass 2**32 - 1
    outcomes = dantaggen.run(_OneBadThenWaiting(bad), parallel=2, ordered=ordered)
    first = next(outcomes)
    assert first.item is bad and "runs past the largest seed" in str(first.error)
    outcomes.close()
