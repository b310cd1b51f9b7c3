package pclog_test

import (
	"testing"

	"github.com/powercut/powercut/pclog"
)

// TestValidateFlushOffset: a FLUSH may carry any aligned, non-negative offset (even past the
// device's end: it has no durability meaning) but no length; a MARK neither.
func TestValidateFlushOffset(t *testing.T) {
	h := &pclog.Header{Version: pclog.FormatVersion, Devices: []pclog.Device{{ID: 0, Size: 1 << 20, SectorSize: 512}}}
	for _, c := range []struct {
		r  pclog.Record
		ok bool
	}{
		{pclog.Record{Kind: pclog.KindFlush}, true},
		{pclog.Record{Kind: pclog.KindFlush, Offset: 248 * 512}, true},
		{pclog.Record{Kind: pclog.KindFlush, Offset: 4 << 20}, true},
		{pclog.Record{Kind: pclog.KindFlush, Offset: 100}, false},
		{pclog.Record{Kind: pclog.KindFlush, Offset: -512}, false},
		{pclog.Record{Kind: pclog.KindFlush, Length: 512}, false},
		{pclog.Record{Kind: pclog.KindMark, Name: "m"}, true},
		{pclog.Record{Kind: pclog.KindMark, Name: "m", Offset: 512}, false},
		{pclog.Record{Kind: pclog.KindMark, Name: "m", Length: 512}, false},
	} {
		if err := c.r.Validate(h); (err == nil) != c.ok {
			t.Errorf("%s offset %d length %d: Validate = %v, want ok %v", c.r.Kind, c.r.Offset, c.r.Length, err, c.ok)
		}
	}
}
