// Package verify is powercut's data-integrity workload: it writes self-describing blocks to a
// target (file, block device or NBD export), remembers which version of every block it wrote, and
// checks every block it reads back against that memory.
//
// Why not fio's verify: fio writes a header and a checksum into each block and, on read, accepts
// any block whose header and checksum are intact. A device that loses a write and keeps (or brings
// back) an older but intact version of the block passes that check, because the older version is
// a perfectly valid block (fio issue #1067). Verifying after a power cut is worse: fio cannot know
// which writes were flushed, so it either reports every unflushed write as lost or checks nothing.
//
// What we do instead:
//   - Every block carries a header (magic, format version, block offset, run ID, per-block version
//     number, CRC32C over header and data). The payload is a pure function of (run ID, offset,
//     version), so the content of any version ever written can be regenerated for triage.
//   - A tracking table keeps one 64-bit word per block (see Word): the last version issued, the
//     version covered by the last completed flush, and whether zeroes/trims are involved. Every
//     read is checked against it, so an intact older version is reported as stale ("stale: holds
//     version 3 of 7"), an intact block of another offset as misdirected, a checksum failure whose
//     sectors come from two versions as torn, anything else as corrupt, and data where zeros are
//     owed as lost zeroes.
//   - Two operations never touch the same block concurrently (striped per-block locks), so every
//     expectation is exact.
//   - The table can be saved at the end of a run (--track) together with the target's identity and
//     loaded by the next run; the file is deleted as soon as it is loaded so that a run that dies
//     can never leave expectations behind that no longer describe the target.
//   - Under --policy flushed the next run accepts, per block, any version between the one covered
//     by the last completed flush and the last one written: exactly what a power cut may leave.
//   - With a recording (pclog) of the workload, ExploreChecker checks every block of every crash
//     state against the set of writes the durability model allows at that crash point, and against
//     the flushes the workload was told had completed (which catches a device that acknowledges
//     FLUSH without persisting anything).
package verify
