/** Limits the node enforces (api/src/limits.rs) that the SDK respects
 * before sending. */
export const MAX_MESSAGE_BYTES = 64 * 1024 * 1024;
export const MAX_ERROR_BYTES = 4 * 1024;
export const MAX_ENQUEUE_BATCH = 10_000;

/** A handler's error as a nack carries it: at most MAX_ERROR_BYTES of UTF-8,
 * cut on a character boundary and marked as cut. */
export function errorText(text: string): string {
  const bytes = Buffer.from(text, "utf8");
  if (bytes.length <= MAX_ERROR_BYTES) return text;
  const mark = "…";
  let end = MAX_ERROR_BYTES - Buffer.byteLength(mark);
  // Back up to the start of a UTF-8 character.
  while (end > 0 && (bytes[end] & 0xc0) === 0x80) end--;
  return bytes.subarray(0, end).toString("utf8") + mark;
}
