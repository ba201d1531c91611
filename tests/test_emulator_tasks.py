"""The simulated task as a client sees it: lifecycle, timing, votes and scripted outcomes.

Every test talks to a real emulator over loopback HTTP, driving time with a ManualClock.
"""

from __future__ import annotations

import itertools
from typing import Any

import aiohttp
import attrs
import pytest
from spo_async.testing import (
    Emulator,
    EmulatorConfig,
    ManualClock,
    SimulatedTask,
    TaskOutcome,
    Vote,
)
from spo_async.testing._tasks import DEFAULT_EXECUTION_ERROR, SimulationSettings

from tests.test_emulator import QA, REQUEST, new_task, query, request_with


@pytest.fixture
def emulator_config(clock: ManualClock) -> EmulatorConfig:
    """The emulator of these tests: on the hand-driven clock, a 1 s queue and 3 s rounds."""
    return EmulatorConfig(clock=clock, queue_seconds=1.0, round_seconds=3.0)


# -- lifecycle ------------------------------------------------------------------------


async def test_task_walks_queue_processing_success_one_round_at_a_time(
    emu: Emulator, session: aiohttp.ClientSession, clock: ManualClock
) -> None:
    """Rounds appear one by one at their finish times; best_round is the latest success."""
    task_id = await new_task(session, emu)
    task = emu.tasks[task_id]
    assert (await query(session, emu, task_id))[1]["status"] == "queue"
    clock.advance_to(task.queue_ends_at)
    _, data = await query(session, emu, task_id)
    assert data["status"] == "processing"
    assert data["round_data_list"] == []
    assert data["best_round"] is None
    last_best = 0
    for round_ in task.rounds:
        clock.advance_to(round_.finishes_at - 0.001)
        _, before = await query(session, emu, task_id)
        assert len(before["round_data_list"]) == round_.number - 1
        clock.advance_to(round_.finishes_at)
        _, data = await query(session, emu, task_id)
        rounds = data["round_data_list"]
        assert [r["round"] for r in rounds] == list(range(1, round_.number + 1))
        assert rounds[-1] == round_.to_wire()
        expected_best = max(r["round"] for r in rounds if r["success"])
        assert data["best_round"] == expected_best >= last_best
        assert data["best_prompt"] == rounds[expected_best - 1]["prompt"]
        last_best = expected_best
        done = round_.number == REQUEST["max_rounds"]
        assert data["status"] == ("success" if done else "processing")
        assert data["error"] is None
    assert len(data["round_data_list"]) == REQUEST["max_rounds"]
    first = data["round_data_list"][0]
    assert first["prompt"] == REQUEST["prompt"]
    assert first["success"] is True
    assert {s["question"] for s in first["sample"]} <= {q["question"] for q in QA}
    assert len(first["sample"]) == 3


async def test_timeline_follows_the_configured_durations(emu: Emulator) -> None:
    """Queue, a shorter first round and then full rounds make up the task's timeline."""
    task = SimulatedTask(
        "t", REQUEST, seed=1, submitted_at=10.0, settings=emu.config.simulation_settings()
    )
    assert task.queue_ends_at == pytest.approx(11.0)
    finishes = [r.finishes_at for r in task.rounds]
    assert finishes == pytest.approx([12.0, 15.0, 18.0, 21.0, 24.0])
    assert task.ends_at == finishes[-1]
    assert task.max_rounds == 5
    assert not task.will_fail


def test_jitter_spreads_durations_within_bounds_and_time_scale_shrinks_them() -> None:
    """Jitter draws each duration within ±jitter; time_scale multiplies all of them."""
    settings = SimulationSettings(round_seconds=10.0, first_round_fraction=1.0, jitter=0.3)
    body = request_with(max_rounds=40)
    task = SimulatedTask("t", body, seed=3, submitted_at=0.0, settings=settings)
    times = [0.0] + [r.finishes_at for r in task.rounds]
    durations = [b - a for a, b in itertools.pairwise(times)]
    assert all(7.0 <= d <= 13.0 for d in durations)
    assert len({round(d, 6) for d in durations}) > 1
    fast = SimulatedTask(
        "t", body, seed=3, submitted_at=0.0, settings=attrs.evolve(settings, time_scale=0.01)
    )
    assert fast.ends_at == pytest.approx(task.ends_at * 0.01)


async def test_max_rounds_one_yields_only_round_one(
    emu: Emulator, session: aiohttp.ClientSession, clock: ManualClock
) -> None:
    """max_rounds = 1 is accepted and ends in success with just the original prompt."""
    task_id = await new_task(session, emu, request_with(max_rounds=1, qa=QA[:2]))
    clock.advance(100)
    _, data = await query(session, emu, task_id)
    assert data["status"] == "success"
    assert data["best_round"] == 1
    assert data["best_prompt"] == REQUEST["prompt"]
    assert [r["round"] for r in data["round_data_list"]] == [1]
    assert len(data["round_data_list"][0]["sample"]) == 2


async def test_best_can_be_hidden_until_the_end(
    session: aiohttp.ClientSession, clock: ManualClock
) -> None:
    """With expose_best_while_processing off, best_* stay null until the task succeeds."""
    config = EmulatorConfig(clock=clock, expose_best_while_processing=False, round_seconds=1.0)
    async with Emulator(config) as emulator:
        task_id = await new_task(session, emulator)
        clock.advance_to(emulator.tasks[task_id].rounds[2].finishes_at)
        _, data = await query(session, emulator, task_id)
        assert data["status"] == "processing"
        assert len(data["round_data_list"]) == 3
        assert data["best_round"] is None
        assert data["best_prompt"] is None
        clock.advance(100)
        _, data = await query(session, emulator, task_id)
        assert data["status"] == "success"
        assert isinstance(data["best_round"], int)


async def test_running_round_can_be_shown_with_an_empty_sample(
    session: aiohttp.ClientSession, clock: ManualClock
) -> None:
    """With show_running_round on, the round being run is listed with an empty sample."""
    config = EmulatorConfig(clock=clock, show_running_round=True, round_seconds=1.0)
    async with Emulator(config) as emulator:
        task_id = await new_task(session, emulator)
        task = emulator.tasks[task_id]
        _, data = await query(session, emulator, task_id)
        assert data["round_data_list"] == [
            {"round": 1, "prompt": REQUEST["prompt"], "success": False, "sample": []}
        ]
        clock.advance_to(task.rounds[0].finishes_at)
        _, data = await query(session, emulator, task_id)
        assert [(r["round"], len(r["sample"])) for r in data["round_data_list"]] == [(1, 3), (2, 0)]
        clock.advance(100)
        _, data = await query(session, emulator, task_id)
        assert all(r["sample"] for r in data["round_data_list"])


# -- votes and determinism ------------------------------------------------------------


async def test_same_seed_and_request_give_identical_results(
    session: aiohttp.ClientSession,
) -> None:
    """Two emulators with one seed report the same rounds for the same request."""
    bodies = []
    for seed in (7, 7, 8):
        clock = ManualClock()
        async with Emulator(EmulatorConfig(seed=seed, clock=clock)) as emulator:
            task_id = await new_task(session, emulator)
            clock.advance(1000)
            bodies.append((await query(session, emulator, task_id))[1])
    assert bodies[0] == bodies[1]
    assert bodies[0] != bodies[2]


async def test_repeated_identical_requests_get_different_but_reproducible_results(
    emu: Emulator, session: aiohttp.ClientSession
) -> None:
    """The n-th copy of a request is seeded by n: copies differ, other requests do not matter."""
    first, second = [await new_task(session, emu) for _ in range(2)]
    assert emu.tasks[first].seed != emu.tasks[second].seed
    assert emu.tasks[first].rounds != emu.tasks[second].rounds
    async with Emulator(attrs.evolve(emu.config, port=0)) as other:
        await new_task(session, other, request_with(max_rounds=2))
        again = [await new_task(session, other) for _ in range(2)]
        assert [other.tasks[i].rounds for i in again] == [
            emu.tasks[first].rounds,
            emu.tasks[second].rounds,
        ]


def test_success_is_a_strict_majority_of_four_votes() -> None:
    """A round succeeds with 3 or 4 wins of 4 votes; a 2-2 tie fails; round 1 always succeeds."""
    task = SimulatedTask(
        "t", request_with(max_rounds=200), seed=11, submitted_at=0.0, settings=SimulationSettings()
    )
    first, *later = task.rounds
    assert first.success
    assert first.votes == ()
    assert first.prompt == REQUEST["prompt"]
    assert all(len(r.votes) == 4 for r in later)
    assert all(r.success == (r.wins >= 3) for r in later)
    wins = {r.wins for r in later}
    assert wins == {0, 1, 2, 3, 4}
    assert any(r.success for r in later)
    assert not all(r.success for r in later)
    assert any(v.swapped for r in later for v in r.votes)
    assert not all(v.swapped for r in later for v in r.votes)


@pytest.mark.parametrize(
    ("swapped", "choice", "won"),
    [(False, "B", True), (False, "A", False), (True, "A", True), (True, "B", False)],
    ids=["unswapped-B-new", "unswapped-A-old", "swapped-A-new", "swapped-B-old"],
)
def test_a_vote_counts_for_the_new_round_after_undoing_the_swap(
    swapped: bool, choice: Any, won: bool
) -> None:
    """The judge's choice is read through the swap: unswapped, B is the new round."""
    assert Vote(swapped=swapped, choice=choice).new_round_won is won


@pytest.mark.parametrize(("probability", "expected"), [(1.0, True), (0.0, False)])
def test_win_probability_drives_the_judges(probability: float, expected: bool) -> None:
    """Judges that always (never) prefer the new round make every later round succeed (fail)."""
    settings = SimulationSettings(win_probability=probability)
    task = SimulatedTask(
        "t", request_with(max_rounds=12), seed=0, submitted_at=0, settings=settings
    )
    assert all(r.success is expected for r in task.rounds[1:])


def test_prompts_build_on_the_best_round_and_answers_on_prompt_and_question() -> None:
    """Each new prompt extends the best prompt so far; answers depend on prompt and question."""
    settings = SimulationSettings(win_probability=1.0)
    task = SimulatedTask("t", request_with(max_rounds=4), seed=2, submitted_at=0, settings=settings)
    prompts = [r.prompt for r in task.rounds]
    assert all(later.startswith(earlier) for earlier, later in itertools.pairwise(prompts))
    assert len(set(prompts)) == 4
    answers = {(r.prompt, q): a for r in task.rounds for q, a in r.samples}
    assert len(set(answers.values())) == len(answers)


# -- scripted outcomes ----------------------------------------------------------------


async def finished(
    session: aiohttp.ClientSession, emu: Emulator, clock: ManualClock, body: Any = None
) -> dict[str, Any]:
    task_id = await new_task(session, emu, body)
    clock.advance(1000)
    status, data = await query(session, emu, task_id)
    assert status == 200
    result: dict[str, Any] = data
    return result


@pytest.mark.parametrize(
    "error",
    [
        pytest.param("The optimizer failed", id="string"),
        pytest.param({"err_code": -1024, "message": "AI timeout"}, id="object"),
    ],
)
async def test_scripted_failure_reports_fail_with_the_error(
    emu: Emulator, session: aiohttp.ClientSession, clock: ManualClock, error: Any
) -> None:
    """A task scripted to fail at round 3 shows rounds 1-2, then fail with the given error."""
    emu.script_next(TaskOutcome(fail_at_round=3, error=error))
    task_id = await new_task(session, emu)
    task = emu.tasks[task_id]
    assert task.will_fail
    clock.advance_to(task.rounds[1].finishes_at)
    _, data = await query(session, emu, task_id)
    assert (data["status"], len(data["round_data_list"]), data["error"]) == ("processing", 2, None)
    clock.advance_to(task.ends_at)
    _, data = await query(session, emu, task_id)
    assert data["status"] == "fail"
    assert data["error"] == error
    assert [r["round"] for r in data["round_data_list"]] == [1, 2]
    assert data["best_round"] in (1, 2)


async def test_failure_at_round_one_reports_no_rounds(
    emu: Emulator, session: aiohttp.ClientSession, clock: ManualClock
) -> None:
    """Failing in round 1 ends the task with an empty round list and no best round."""
    emu.script_next(TaskOutcome(fail_at_round=1))
    data = await finished(session, emu, clock)
    assert data["status"] == "fail"
    assert data["round_data_list"] == []
    assert data["best_round"] is None
    assert isinstance(data["error"], str)
    assert data["error"]


async def test_failure_can_be_reported_under_a_processing_status(
    emu: Emulator, session: aiohttp.ClientSession, clock: ManualClock
) -> None:
    """fail_status lets a failed task say processing while carrying a truthy error."""
    emu.script_next(TaskOutcome(fail_at_round=2, fail_status="processing", error="boom"))
    data = await finished(session, emu, clock)
    assert (data["status"], data["error"]) == ("processing", "boom")
    assert emu.tasks[next(iter(emu.tasks))].status(clock()) == "processing"


async def test_fail_at_round_beyond_max_rounds_never_fails(
    emu: Emulator, session: aiohttp.ClientSession, clock: ManualClock
) -> None:
    """A failure scripted after the last round does not happen."""
    emu.script_next(TaskOutcome(fail_at_round=9))
    data = await finished(session, emu, clock)
    assert data["status"] == "success"
    assert len(data["round_data_list"]) == REQUEST["max_rounds"]


async def test_empty_prompt_and_execution_error_rounds(
    emu: Emulator, session: aiohttp.ClientSession, clock: ManualClock
) -> None:
    """Scripted rounds carry an empty prompt or an execution error stored as an answer."""
    emu.script_next(TaskOutcome(empty_prompt_rounds={2}, execution_error_rounds=[3]))
    data = await finished(session, emu, clock)
    rounds = data["round_data_list"]
    assert rounds[1]["prompt"] == ""
    assert rounds[2]["sample"][0]["answer"] == DEFAULT_EXECUTION_ERROR
    assert all(s["answer"] != DEFAULT_EXECUTION_ERROR for s in rounds[3]["sample"])


async def test_outcome_can_set_its_own_pace(emu: Emulator, session: aiohttp.ClientSession) -> None:
    """queue_seconds and per-round durations in an outcome override the config's pace."""
    emu.script_next(
        TaskOutcome(queue_seconds=60.0, round_seconds=(1.0, 2.0)),
        TaskOutcome(round_seconds=6.0),
    )
    paced, uniform = (
        emu.tasks[await new_task(session, emu)],
        emu.tasks[await new_task(session, emu)],
    )
    assert paced.queue_ends_at - paced.submitted_at == pytest.approx(60.0)
    finishes = [r.finishes_at - paced.queue_ends_at for r in paced.rounds]
    assert finishes == pytest.approx([1.0, 3.0, 5.0, 7.0, 9.0])
    assert uniform.rounds[0].finishes_at - uniform.queue_ends_at == pytest.approx(2.0)
    assert uniform.ends_at - uniform.queue_ends_at == pytest.approx(26.0)


async def test_scripted_outcomes_are_used_first_in_first_out_then_outcome_for(
    session: aiohttp.ClientSession, clock: ManualClock
) -> None:
    """script_next feeds the next tasks in order; after that outcome_for decides per request."""
    seen: list[Any] = []

    def outcome_for(body: Any) -> TaskOutcome | None:
        seen.append(body)
        return TaskOutcome(fail_at_round=2, error="by rule") if body["max_rounds"] == 3 else None

    config = EmulatorConfig(clock=clock, outcome_for=outcome_for)
    async with Emulator(config) as emulator:
        emulator.script_next(TaskOutcome(fail_at_round=1, error="first"))
        emulator.script_next(TaskOutcome(fail_at_round=1, error="second"))
        results = [await finished(session, emulator, clock) for _ in range(2)]
        assert [r["error"] for r in results] == ["first", "second"]
        assert seen == []
        assert (await finished(session, emulator, clock, request_with(max_rounds=3)))[
            "error"
        ] == "by rule"
        assert (await finished(session, emulator, clock))["status"] == "success"
        assert len(seen) == 2


# -- language -------------------------------------------------------------------------


def has_cjk(text: str) -> bool:
    """Whether ``text`` holds a CJK ideograph (Chinese, or Japanese kanji)."""
    return any("\u4e00" <= c <= "\u9fff" for c in text)


def has_kana(text: str) -> bool:
    """Whether ``text`` holds Japanese hiragana or katakana."""
    return any("\u3040" <= c <= "\u30ff" for c in text)


async def finished_rounds(
    session: aiohttp.ClientSession, emu: Emulator, clock: ManualClock, body: dict[str, Any]
) -> list[dict[str, Any]]:
    """Submit ``body``, run its task to the end and return the rounds it reports."""
    task_id = await new_task(session, emu, body)
    clock.advance_to(emu.tasks[task_id].ends_at)
    _, data = await query(session, emu, task_id)
    assert data["status"] == "success"
    rounds: list[dict[str, Any]] = data["round_data_list"]
    return rounds


def written_texts(rounds: list[dict[str, Any]]) -> list[str]:
    """What the emulator wrote: the prompts of rounds 2 on and every sample answer."""
    prompts = [r["prompt"].removeprefix(REQUEST["prompt"]) for r in rounds[1:]]
    return prompts + [s["answer"] for r in rounds for s in r["sample"]]


async def test_chinese_requests_get_chinese_prompts_and_answers(
    emu: Emulator, session: aiohttp.ClientSession, clock: ManualClock
) -> None:
    """language="zh" makes every rewritten prompt and sample answer visibly Chinese."""
    rounds = await finished_rounds(session, emu, clock, request_with(language="zh"))
    assert all(has_cjk(text) and not has_kana(text) for text in written_texts(rounds))
    assert "第 2 轮" in rounds[1]["prompt"]


async def test_english_requests_get_english_prompts_and_answers(
    emu: Emulator, session: aiohttp.ClientSession, clock: ManualClock
) -> None:
    """language="en" keeps the emulator's texts in English, with no CJK at all."""
    rounds = await finished_rounds(session, emu, clock, request_with(language="en"))
    assert not any(has_cjk(text) for text in written_texts(rounds))
    assert "- round 2 (from round 1): be " in rounds[1]["prompt"]
    assert rounds[0]["sample"][0]["answer"].startswith("[answer ")


async def test_japanese_requests_get_japanese_prompts_and_answers(
    emu: Emulator, session: aiohttp.ClientSession, clock: ManualClock
) -> None:
    """language="ja" writes Japanese: the rewritten prompts carry kana."""
    rounds = await finished_rounds(session, emu, clock, request_with(language="ja"))
    assert all(has_cjk(text) for text in written_texts(rounds))
    assert all(has_kana(r["prompt"]) for r in rounds[1:])


async def test_a_missing_language_is_the_services_default_chinese(
    emu: Emulator, session: aiohttp.ClientSession, clock: ManualClock
) -> None:
    """A submit without language gets Chinese, the service's default, so forgetting it shows."""
    assert "language" not in REQUEST
    rounds = await finished_rounds(session, emu, clock, REQUEST)
    assert all(has_cjk(text) and not has_kana(text) for text in written_texts(rounds))
    assert "第 2 轮" in rounds[1]["prompt"]


@pytest.mark.parametrize("code", ["fr", "auto", ""])
async def test_an_unknown_language_falls_back_to_english_and_names_the_code(
    emu: Emulator, session: aiohttp.ClientSession, clock: ManualClock, code: str
) -> None:
    """A code the emulator does not write is answered in English, each text naming it."""
    rounds = await finished_rounds(session, emu, clock, request_with(language=code))
    texts = written_texts(rounds)
    assert all(f"language {code!r} is not emulated" in text for text in texts)
    assert not any(has_cjk(text) for text in texts)


@pytest.mark.parametrize("spelling", ["zh-CN", "ZH", "zh_Hans", "cn", "Chinese"])
def test_common_spellings_of_a_language_are_understood(spelling: str) -> None:
    """Region tags, case and the 302 ``cn`` spelling all select the same language."""
    settings = SimulationSettings()
    plain = SimulatedTask(
        "t", request_with(language="zh"), seed=4, submitted_at=0, settings=settings
    )
    other = SimulatedTask(
        "t", request_with(language=spelling), seed=4, submitted_at=0, settings=settings
    )
    assert [r.prompt for r in other.rounds] == [r.prompt for r in plain.rounds]
    assert [r.samples for r in other.rounds][1:] == [r.samples for r in plain.rounds][1:]


def test_language_changes_the_words_but_not_one_draw() -> None:
    """One seed gives the same votes, successes, questions and timeline in every language."""
    settings = SimulationSettings()

    def task(language: str) -> SimulatedTask:
        body = request_with(language=language, max_rounds=30)
        return SimulatedTask("t", body, seed=12, submitted_at=0.0, settings=settings)

    tasks = [task(code) for code in ("en", "zh", "ja", "fr")]
    shapes = [
        [(r.votes, r.success, r.finishes_at, [q for q, _ in r.samples]) for r in t.rounds]
        for t in tasks
    ]
    assert all(shape == shapes[0] for shape in shapes)
    assert len({t.rounds[5].prompt for t in tasks}) == len(tasks)
    assert task("zh").rounds == tasks[1].rounds
