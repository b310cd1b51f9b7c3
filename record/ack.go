package record

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/powercut/powercut/pclog"
)

// Ack is an acknowledgement: the workload told its client that operation Ordinal (the
// workload's own numbering, unique in a recording) named Name is done. A crash state after the
// ack must keep what it promised. Acks are marks in the log (see String), so every tool that
// reads marks (explore --from-mark, reports, replay --to-mark) sees them.
type Ack struct {
	Ordinal uint64
	Name    string
}

// ackPrefix starts the mark name of every ack. It is part of the log format: changing it breaks
// the acks of existing recordings.
const ackPrefix = "ack:"

// String is the ack's mark name, "ack:ORDINAL:NAME" ("ack:ORDINAL" without a name).
func (a Ack) String() string {
	if a.Name == "" {
		return ackPrefix + strconv.FormatUint(a.Ordinal, 10)
	}
	return ackPrefix + strconv.FormatUint(a.Ordinal, 10) + ":" + a.Name
}

// ParseAck returns the ack a mark name records, and false for a mark that is not an ack.
func ParseAck(mark string) (Ack, bool) {
	rest, ok := strings.CutPrefix(mark, ackPrefix)
	if !ok {
		return Ack{}, false
	}
	num, name, _ := strings.Cut(rest, ":")
	n, err := strconv.ParseUint(num, 10, 64)
	if err != nil || num == "" || num[0] == '+' {
		return Ack{}, false
	}
	return Ack{Ordinal: n, Name: name}, true
}

// ErrDuplicateAck: an ordinal was acknowledged twice in one recording.
var ErrDuplicateAck = errors.New("record: ordinal already acknowledged")

// Ack records an acknowledgement mark at the current point of the global order: call it right
// where the workload tells its client that the operation is done (after the fsync or commit that
// made it so), from any goroutine.
func (r *Recorder) Ack(ordinal uint64, name string) error {
	r.mu.Lock()
	if r.acked == nil {
		r.acked = map[uint64]bool{}
	}
	dup := r.acked[ordinal]
	r.acked[ordinal] = true
	r.mu.Unlock()
	if dup {
		return fmt.Errorf("%w: %d", ErrDuplicateAck, ordinal)
	}
	return r.Mark(Ack{Ordinal: ordinal, Name: name}.String())
}

// Acks returns the acks of a log in log order, with the log index of each.
func Acks(l *pclog.Log) (acks []Ack, index []int) {
	for i := range l.Entries {
		e := &l.Entries[i]
		if e.Kind != pclog.KindMark {
			continue
		}
		if a, ok := ParseAck(e.Name); ok {
			acks = append(acks, a)
			index = append(index, i)
		}
	}
	return acks, index
}
