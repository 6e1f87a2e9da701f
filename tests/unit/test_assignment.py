"""plan_assignment: balanced, sticky and deterministic shard placement."""

from __future__ import annotations

import itertools
from collections import Counter

from coordinator.assignment import plan_assignment

SHARD_COUNTS = (0, 1, 2, 3, 5, 10, 17, 64, 100, 257)
WORKER_COUNTS = (1, 2, 3, 4, 7, 10, 16)


def shard_ids(count: int) -> list[str]:
    return [str(i) for i in range(count)]


def worker_names(count: int) -> list[str]:
    return [f"w{i:02d}" for i in range(count)]


def loads(plan: dict[str, str], workers: list[str]) -> list[int]:
    counts = Counter(plan.values())
    return [counts.get(worker, 0) for worker in workers]


def moved_shards(before: dict[str, str], after: dict[str, str]) -> set[str]:
    return {shard for shard, worker in after.items() if before.get(shard) != worker}


def test_plan_no_workers_empty() -> None:
    assert plan_assignment(shard_ids(10), {"0": "w00", "1": "w01"}, []) == {}


def test_plan_no_shards_empty() -> None:
    assert plan_assignment([], {}, ["w00", "w01"]) == {}


def test_plan_assigns_every_shard() -> None:
    for shards, workers in itertools.product(SHARD_COUNTS, WORKER_COUNTS):
        plan = plan_assignment(shard_ids(shards), {}, worker_names(workers))

        assert sorted(plan, key=int) == shard_ids(shards), (shards, workers)
        assert set(plan.values()) <= set(worker_names(workers)), (shards, workers)


def test_plan_balanced_from_empty() -> None:
    for shards, workers in itertools.product(SHARD_COUNTS, WORKER_COUNTS):
        counts = loads(plan_assignment(shard_ids(shards), {}, worker_names(workers)), worker_names(workers))

        assert max(counts) - min(counts) <= 1, (shards, workers, counts)


def test_plan_balanced_from_skewed() -> None:
    for shards, workers in itertools.product(SHARD_COUNTS, WORKER_COUNTS):
        names = worker_names(workers)
        all_on_first = {shard: names[0] for shard in shard_ids(shards)}

        counts = loads(plan_assignment(shard_ids(shards), all_on_first, names), names)

        assert max(counts) - min(counts) <= 1, (shards, workers, counts)


def test_plan_add_worker_moves_quota() -> None:
    for shards, workers in itertools.product(SHARD_COUNTS, WORKER_COUNTS):
        names = worker_names(workers)
        before = plan_assignment(shard_ids(shards), {}, names)
        newcomer = "w99"

        after = plan_assignment(shard_ids(shards), before, [*names, newcomer])

        moved = moved_shards(before, after)
        assert len(moved) == shards // (workers + 1), (shards, workers)
        assert {after[shard] for shard in moved} <= {newcomer}, (shards, workers)


def test_plan_add_worker_stays_balanced() -> None:
    for shards, workers in itertools.product(SHARD_COUNTS, WORKER_COUNTS):
        names = worker_names(workers)
        before = plan_assignment(shard_ids(shards), {}, names)

        after = plan_assignment(shard_ids(shards), before, [*names, "w99"])

        counts = loads(after, [*names, "w99"])
        assert max(counts) - min(counts) <= 1, (shards, workers, counts)


def test_plan_remove_worker_moves_only_its_shards() -> None:
    for shards, workers in itertools.product(SHARD_COUNTS, WORKER_COUNTS):
        if workers < 2:
            continue
        names = worker_names(workers)
        before = plan_assignment(shard_ids(shards), {}, names)
        for removed_worker in names:
            survivors = [name for name in names if name != removed_worker]

            after = plan_assignment(shard_ids(shards), before, survivors)

            removed_shards = {shard for shard, worker in before.items() if worker == removed_worker}
            assert moved_shards(before, after) == removed_shards, (shards, workers, removed_worker)
            counts = loads(after, survivors)
            assert max(counts) - min(counts) <= 1, (shards, workers, removed_worker, counts)


def test_plan_balanced_keeps_everything() -> None:
    names = worker_names(4)
    before = plan_assignment(shard_ids(10), {}, names)

    after = plan_assignment(shard_ids(10), before, names)

    assert after == before


def test_plan_unknown_owner_reassigned() -> None:
    current = {"0": "w00", "1": "gone", "2": "gone", "3": "w01"}

    plan = plan_assignment(shard_ids(4), current, ["w00", "w01"])

    assert plan["0"] == "w00"
    assert plan["3"] == "w01"
    assert loads(plan, ["w00", "w01"]) == [2, 2]


def test_plan_ignores_removed_shards() -> None:
    current = {str(i): "w00" for i in range(8)}

    plan = plan_assignment(shard_ids(4), current, ["w00"])

    assert plan == {"0": "w00", "1": "w00", "2": "w00", "3": "w00"}


def test_plan_overloaded_worker_sheds_excess() -> None:
    current = {**{str(i): "w00" for i in range(8)}, "8": "w01", "9": "w01"}

    plan = plan_assignment(shard_ids(10), current, ["w00", "w01"])

    assert moved_shards(current, plan) == {"5", "6", "7"}
    assert loads(plan, ["w00", "w01"]) == [5, 5]


def test_plan_deterministic() -> None:
    names = worker_names(5)
    current = {"0": "w03", "1": "w03", "2": "w03", "7": "w01", "9": "gone"}

    first = plan_assignment(shard_ids(23), current, names)
    second = plan_assignment(shard_ids(23), dict(current), list(names))

    assert first == second


def test_plan_ignores_worker_order() -> None:
    names = worker_names(5)
    current = {"0": "w03", "1": "w03", "2": "w03", "7": "w01"}

    forward = plan_assignment(shard_ids(23), current, names)
    backward = plan_assignment(shard_ids(23), current, list(reversed(names)))

    assert forward == backward
