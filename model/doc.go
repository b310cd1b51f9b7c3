// Package model is powercut's durability model: given a recording (every operation with its
// submit and completion points in one global order), it says which disk images a power cut at a
// given point may leave behind. Every crash state powercut generates comes from here.
//
// # Rules
//
// Events. Every operation has a submit point and a complete point in one global sequence shared
// by all devices. Kinds: WRITE (optional FUA), WRITE_ZEROES (optional FUA), DISCARD, FLUSH, MARK.
// A write carrying PREFLUSH is a FLUSH with the same submit and complete points followed by the
// write. A MARK only labels a point; it has no durability effect.
//
// A crash point T is a position in the global order: events numbered below T happened.
//
// Durable at T, per device:
//   - R1 (flush): a FLUSH F with cF < T makes durable every write/zeroes/discard W of the same
//     device with cW < sF. A write still in flight while F ran (cW > sF) is not covered, even if it
//     completed before F did (the loop-device thread, NBD's "replied to before processing").
//   - R2 (FUA): a FUA operation with cW < T is durable.
//   - R3: nothing else is guaranteed; every other operation with sW < T (completed or still in
//     flight) may or may not have reached media, independently, in any order.
//
// Content of each sector after the crash:
//   - R4 (no resurrection): an operation O cannot be visible at a sector covered by a durable
//     operation D that was submitted after O completed (cO < sD): D overwrote it. This is the
//     design document's "newest durable op d" rule, generalised to every durable op over x (the
//     literal rule would let O resurface from under a durable D' that is older than d). A
//     durable DISCARD that the device ignored (policy keep, or the keep choice under either)
//     hides nothing: it is transparent.
//   - R5 (whole-operation atomicity, models reorder/prefix): the landed operations are applied in
//     one order consistent with the real order (A before B whenever cA < sB); where two landed
//     operations were concurrent the order between them is free, but it is one order, so two
//     overlapping operations show the same winner on every sector they share.
//   - R6 (torn): in model torn a possibly-persisted multi-sector operation may land any subset
//     of its sectors (the device's logical sector size: 512 or 4096). Durable ones land whole.
//     Enumeration note: exhaustive tries every subset for operations of up to 12 sectors; longer
//     ones (and every operation under drop-k, keep-k and sample) are torn where a sequential
//     device tears them, into a landed prefix or a landed suffix, at up to 16 split points.
//   - R7 (discard): WRITE_ZEROES reads zeros. DISCARD reads zeros (policy zero), the previous
//     content (policy keep: as if ignored by the device), or either, chosen per discard (policy
//     either, the default: a device that does not promise zeros).
//
// # Models
//
//   - prefix: every prefix of the completion-ordered stream, each op atomic (replay-log per entry).
//   - flush: only the states right after each FLUSH/FUA/PREFLUSH completion, and the end.
//   - reorder: durable set plus any subset of the possibly-persisted set, ops atomic (R1–R5, R7).
//   - torn: reorder plus sector-granular tearing of possibly-persisted operations (R6).
//   - coalesce: prefix, but an earlier write may carry the content of a later write to the same
//     range submitted before the crash point (ZFS-like, Crucible PR #1798).
//
// # Crash points
//
// prefix and coalesce visit the start and the point after every completion; flush the point after
// every FLUSH/FUA completion and the end; reorder and torn visit the point just before each FLUSH
// or FUA completion, just after each MARK, and the end of the log. Under reorder the states at any
// other point are a subset of the states at the next of these points, because the possibly
// persisted set only grows until a flush or FUA completes.
//
// # State IDs
//
// A State names one crash state exactly and prints as a compact ID that parses back to the same
// state (see State.String and ParseState), so a user can replay one state from a report.
package model
