"""The controller's choice of phase and batch, on a real Redis with no Twitch behind it."""

from __future__ import annotations

from common.channels import ChannelStore, make_channel
from common.keys import Keys
from common.migration import MigrationState
from common.settings import Settings
from coordinator.migration import MigrationController

SETTINGS = Settings.from_env({})


async def _controller(redis_client, channels: int) -> tuple[MigrationController, ChannelStore]:
    store = ChannelStore(redis_client, Keys(), SETTINGS)
    await store.add([make_channel(str(1000 + i), types=["stream.online:1"], transport_mode="websocket")
                     for i in range(channels)])
    return MigrationController(SETTINGS, redis_client, redis_client, helix=None, alerts=None), store


async def _cut_over(store: ChannelStore, state: MigrationState) -> None:
    await store.set_mode(state.batch, "conduit")
    state.batch, state.step = [], "idle"


async def test_phases_batches_and_trial(redis_client):
    controller, store = await _controller(redis_client, 300)
    state = MigrationState(status="running")

    await controller._next_batch(state)
    assert (state.phase, len(state.batch)) == (1, 20)  # 10 % is 30 channels; the trial batch takes 20
    await _cut_over(store, state)
    await controller._next_batch(state)
    assert (state.phase, len(state.batch)) == (1, 10)
    await _cut_over(store, state)
    await controller._next_batch(state)
    assert (state.phase, len(state.batch)) == (2, 50)
    assert [entry["verdict"] for entry in state.history] == ["phase_done"]


async def test_stop_after_phase_pauses_once(redis_client):
    controller, store = await _controller(redis_client, 100)
    state = MigrationState(status="running", stop_after_phase=1)

    await controller._next_batch(state)
    await _cut_over(store, state)
    await controller._next_batch(state)
    assert state.status == "paused"
    assert state.phase == 1
    assert "phase 1 (10 %) reached" in state.paused_reason
    assert "フェーズ 1（10 %）に到達しました" in state.paused_reason_ja

    state.status = "running"
    await controller._next_batch(state)
    assert (state.phase, len(state.batch)) == (2, 20)
    assert [entry["verdict"] for entry in state.history] == ["phase_done"]


async def test_full_rollback_starts_over_with_trial(redis_client):
    controller, store = await _controller(redis_client, 300)
    state = MigrationState(status="running")
    for _ in range(3):
        await controller._next_batch(state)
        await _cut_over(store, state)
    assert state.phase == 2

    await store.set_mode([c.broadcaster_user_id for c in await store.list()], "websocket")
    await controller._next_batch(state)
    assert (state.phase, len(state.batch)) == (1, 20)


async def test_completed_when_everything_moved(redis_client):
    controller, store = await _controller(redis_client, 4)
    state = MigrationState(status="running")
    for _ in range(10):
        await controller._next_batch(state)
        if state.status == "completed":
            break
        await _cut_over(store, state)
    assert state.status == "completed"
    assert state.phase == 4
    assert state.history[-1]["verdict"] == "completed"
