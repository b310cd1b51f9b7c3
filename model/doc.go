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
//   - R8 (in-order devices): the models prefix, flush and coalesce describe a device that
//     persists in its own order (completion order). There a completed FUA write W (cW < T)
//     implies that every operation of its device that completed before it (cO < cW) persisted
//     too: no state shows W landed while an earlier operation did not. An in-order log that
//     commits its head with a FUA write is correct under these models. Other devices are not
//     ordered by it, and reorder and torn do not assume an in-order device.
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
//     Which tears each strategy generates: see Strategies below.
//   - R7 (discard): WRITE_ZEROES reads zeros. DISCARD reads zeros (policy zero), the previous
//     content (policy keep: as if ignored by the device), or either, chosen per discard (policy
//     either, the default: a device that does not promise zeros). A choice whose outcomes give
//     the same bytes is not a choice, so under either a discard offers one only where it can
//     change the image: a landed discard stops being a choice (settles, as zeros) once a durable
//     WRITE or WRITE_ZEROES that must follow it covers its range (R4 hides it) or where what it
//     would keep reads as zeros anyway (zeros painted before it, or a base the history is told
//     is zero, History.BaseZero); under reorder and torn a possibly-persisted discard that the
//     device ignored leaves the same image as one that did not land, so dropping it is that
//     choice. The number of states then grows linearly with the discards of a store that trims
//     and reuses what it frees, not with their cube.
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
// # Strategies
//
// The reorder/torn space is exponential; a strategy picks which states of a crash point to
// generate (EnumOptions, Epoch.States). Every strategy only ever produces allowed states.
//   - exhaustive: every combination of choices (which possibly-persisted ops landed, tears,
//     discard outcomes, orders of concurrent overlapping pairs, coalesce carries). Above
//     ExhaustiveLimit states the point is capped: the states with the fewest changes come first,
//     spread over every choice, and the point counts as truncated.
//   - drop-k: everything landed except up to k changes (drop, tear, keep a discarded range, flip
//     a pair, carry): the "almost everything landed" states.
//   - keep-k: only up to k possibly-persisted ops landed, each landed set with up to k further
//     changes among what landed (tears, discard outcomes, flips of pairs that both landed).
//   - sample: seeded random states.
//
// With Max (states per crash point) smaller than a level of drop-k or keep-k, that level's states
// are spread evenly over all its combinations, fewer changes first. Tears: exhaustive tries
// every sector subset of an op of up to 12 sectors; every other strategy (and longer ops) tries
// the landed prefix or suffix a sequential device leaves, at up to 16 split points.
//
// # State IDs
//
// A State names one crash state exactly and prints as a compact ID that parses back to the same
// state (see State.String and ParseState), so a user can replay one state from a report.
package model
