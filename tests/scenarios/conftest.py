import pytest

from tests.fleet import Fleet
from tests.unit.conftest import http, start_emulator  # noqa: F401  (in-process emulator fixtures)


@pytest.fixture
async def fleet(tmp_path, redis_client, redis_port):
    fleet = Fleet(tmp_path, redis_port)
    yield fleet
    await fleet.close()
