"""Log lines about a shard carry its shard, session and worker ids in both formats."""

from __future__ import annotations

import io
import logging

import orjson

from common.log import ContextAdapter, JsonFormatter, TextFormatter


def capture(formatter: logging.Formatter) -> tuple[logging.Logger, io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    logger = logging.getLogger(f"test.log_ids.{id(formatter)}")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    return logger, stream


def test_adapter_merges_call_extra_json():
    logger, stream = capture(JsonFormatter())
    adapter = ContextAdapter(logger, {"shard_id": "7", "worker_id": "worker-1"})

    adapter.info("bound", extra={"session_id": "abc"})
    line = orjson.loads(stream.getvalue())

    assert line["shard_id"] == "7"
    assert line["worker_id"] == "worker-1"
    assert line["session_id"] == "abc"


def test_adapter_ids_in_text():
    logger, stream = capture(TextFormatter())
    adapter = ContextAdapter(logger, {"shard_id": "7", "worker_id": "worker-1"})

    adapter.warning("session lost", extra={"session_id": "abc"})

    assert stream.getvalue().rstrip().endswith("[worker_id=worker-1 shard_id=7 session_id=abc]")
