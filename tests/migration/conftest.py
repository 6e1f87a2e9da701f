import pytest

from tests.fleet import Fleet


@pytest.fixture
async def fleet(tmp_path, redis_client, redis_port):
    fleet = Fleet(tmp_path, redis_port)
    yield fleet
    await fleet.close()
