from __future__ import annotations

import asyncio

import pytest
from tideflow.worker._group_commit import GroupCommit


async def test_calls_arriving_while_a_batch_is_written_go_together() -> None:
    batches: list[list[int]] = []
    release = asyncio.Event()

    async def write(items: list[int]) -> list[int]:
        batches.append(items)
        if len(batches) == 1:
            await release.wait()
        return [item * 10 for item in items]

    group = GroupCommit(write)
    first = asyncio.create_task(group.submit(1))
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    rest = [asyncio.create_task(group.submit(n)) for n in (2, 3, 4)]
    await asyncio.sleep(0)
    release.set()
    assert await first == 10
    assert [await task for task in rest] == [20, 30, 40]
    assert batches == [[1], [2, 3, 4]]


async def test_equal_keys_never_share_a_batch_and_size_is_bounded() -> None:
    batches: list[list[tuple[str, int]]] = []

    async def write(items: list[tuple[str, int]]) -> list[int]:
        batches.append(items)
        return [n for _, n in items]

    group = GroupCommit(write, key=lambda item: item[0], max_size=2)
    calls = [("a", 1), ("a", 2), ("b", 3), ("c", 4)]
    assert await asyncio.gather(*(group.submit(c) for c in calls)) == [1, 2, 3, 4]
    assert batches == [[("a", 1), ("b", 3)], [("a", 2), ("c", 4)]]


async def test_a_failed_write_fails_every_call_of_its_batch_only() -> None:
    async def write(items: list[int]) -> list[int]:
        if 0 in items:
            raise RuntimeError("down")
        return items

    group = GroupCommit(write, key=lambda n: n % 2)
    results = await asyncio.gather(
        group.submit(0), group.submit(2), group.submit(1), return_exceptions=True
    )
    assert isinstance(results[0], RuntimeError)
    assert isinstance(results[2], RuntimeError)
    assert results[1] == 2
    with pytest.raises(RuntimeError):
        await group.submit(0)
