"""Logging setup: readable text by default, JSON lines with CF_LOG_FORMAT=json.

Loggers are named after modules (`shard_worker.session`); extra ids (shard_id, session_id, worker_id)
passed with `extra=` appear as fields in both formats.
"""

from __future__ import annotations

import logging
import sys
import time

import orjson

_ID_FIELDS = ("worker_id", "shard_id", "session_id", "epoch", "conduit_id")


class ContextAdapter(logging.LoggerAdapter):
    """A LoggerAdapter whose fixed ids are merged with a call's own `extra=`.

    The standard adapter replaces a call's `extra` with its own before Python 3.13, which dropped the
    `session_id` that shard sessions pass per line.
    """

    def process(self, msg, kwargs):
        kwargs["extra"] = {**self.extra, **(kwargs.get("extra") or {})}
        return msg, kwargs


class JsonFormatter(logging.Formatter):
    """Formats each record as one JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in _ID_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                line[name] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(line, default=str).decode()


class TextFormatter(logging.Formatter):
    """Formats records as `time level logger: message [ids]`."""

    converter = time.gmtime

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%Y-%m-%dT%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        ids = [f"{name}={getattr(record, name)}" for name in _ID_FIELDS if getattr(record, name, None) is not None]
        return f"{text} [{' '.join(ids)}]" if ids else text


def setup_logging(level: str = "INFO", fmt: str = "text", *, process: str = "") -> None:
    """Send logs to stderr in the chosen format; call once per process."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # arq logs every job at INFO; bind jobs are traffic, so keep them quiet.
    logging.getLogger("arq").setLevel(logging.WARNING)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    if process:
        logging.getLogger("conduit_fleet").info("%s starting", process)
