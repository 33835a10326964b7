package raftq

import "unicode/utf8"

// Limits the node enforces (api/src/limits.rs) that the SDK respects
// before sending.
const (
	maxMessageBytes = 64 * 1024 * 1024
	maxErrorBytes   = 4 * 1024
	// MaxEnqueueBatch is the most jobs one EnqueueMany call takes.
	MaxEnqueueBatch = 10_000
)

// errorText is a handler's error as a nack carries it: at most
// maxErrorBytes of UTF-8, cut on a character boundary and marked as cut.
func errorText(text string) string {
	if len(text) <= maxErrorBytes {
		return text
	}
	const mark = "…"
	end := maxErrorBytes - len(mark)
	for end > 0 && !utf8.RuneStart(text[end]) {
		end--
	}
	return text[:end] + mark
}
