"""Limits the node enforces (api/src/limits.rs), mirrored where the SDK
must respect them before sending."""

MAX_MESSAGE_BYTES = 64 * 1024 * 1024
MAX_ERROR_BYTES = 4 * 1024
MAX_ENQUEUE_BATCH = 10_000


def error_text(text: str) -> str:
    """A handler's error as a nack carries it: at most MAX_ERROR_BYTES of
    UTF-8, cut on a character boundary and marked as cut."""
    data = text.encode("utf-8")
    if len(data) <= MAX_ERROR_BYTES:
        return text
    mark = "…"
    cut = data[: MAX_ERROR_BYTES - len(mark.encode("utf-8"))]
    return cut.decode("utf-8", errors="ignore") + mark
