"""Log set-up shared by every entry point: text lines, or one JSON object per line (LOG_FORMAT=json)."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

TEXT = "text"
JSON = "json"
# "plain" is what the node agent called text lines before every program took the chart's names.
_ALIASES = {"plain": TEXT}
LOG_FORMATS = (TEXT, JSON)
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message (and the exception, if any)."""

    def format(self, record: logging.LogRecord) -> str:
        """Render `record` as a single JSON line."""
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, sort_keys=False)


def parse_log_format(text: str) -> str:
    """`text` or `json` (the chart's `logFormat`), in any case; `plain` reads as `text`."""
    lowered = text.strip().lower()
    lowered = _ALIASES.get(lowered, lowered)
    if lowered not in LOG_FORMATS:
        raise ValueError("must be json or text")
    return lowered


def parse_log_level(text: str) -> str:
    """A level name of the `logging` module, in any case."""
    upper = text.strip().upper()
    if upper not in LOG_LEVELS:
        raise ValueError(f"must be one of {', '.join(LOG_LEVELS)}")
    return upper


def configure_logging(fmt: str, level: str | int = "INFO") -> None:
    """Send the root logger to stderr in `fmt` (`text` or `json`, see `parse_log_format`) at `level`;
    stdout stays free for reports."""
    handler = logging.StreamHandler(sys.stderr)
    if parse_log_format(fmt) == JSON:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper() if isinstance(level, str) else level)
