// Package fsgen generates B3-style bounded file-system workloads (CrashMonkey/Ace, OSDI'18), runs
// them as Go code issuing the syscalls directly, snapshots at every persistence point what that
// point promised, and checks a recovered crash state against those promises (the built-in oracle).
//
// The pieces, in the order the fs harness uses them:
//
//   - Generate / All enumerate the workloads of 1..3 core operations over the fixed file set (dirs
//     A, B with files foo, bar; optionally A/C), each followed by a persistence point. Every
//     workload has an ID that round-trips through ParseID and a Script that prints the syscalls as
//     a runnable shell script.
//   - Validator runs each workload on tmpfs first; a workload whose operation fails there is
//     dropped before anything is recorded (B3's seq-2 had ~600 false positives from invalid
//     workloads, CrashMonkey issue #144).
//   - Run executes a workload in a mount directory, calls the recorder's mark after each
//     persistence point returns, and returns a Trace: the tree after every action and, per
//     persistence point, the list of promised objects and fields, following the guarantees table
//     of docs/fs-guarantees.md for the file system under test (Guarantees).
//   - Check compares a recovered mount with the trace: every promised (path, field) must hold one
//     of the values the object had from its promise point to the end of the workload (a crash
//     after the last mark may have landed any later operation, in part or whole), then the tree
//     must be usable. Differences are classified like B3.
package fsgen
