package record

import (
	"encoding/json"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
)

// stacks holds, when CaptureStacks is on, the caller's stack of every operation issued through
// a Device: the code that issued a write a minimal crash state drops, shown beside it.
type stacks struct {
	on      bool
	pending map[uint64][]uintptr // by submit sequence, until the record is appended
	byIndex map[int][]uintptr    // by log index
}

// CaptureStacks makes the recorder keep the caller's stack of every operation issued through a
// Device from now on (a few microseconds per operation: see BenchmarkRecordStacks), and write
// them beside the log at Close, as LOG.stacks (JSON: log index -> stack), for reports.
func (r *Recorder) CaptureStacks() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.st.on = true
	if r.st.pending == nil {
		r.st.pending, r.st.byIndex = map[uint64][]uintptr{}, map[int][]uintptr{}
	}
}

// capture keeps the stack of the operation submitted at seq (skipping the recorder's frames).
func (r *Recorder) capture(seq uint64) {
	if !r.stacksOn() {
		return
	}
	pcs := make([]uintptr, 32)
	n := runtime.Callers(4, pcs)
	r.mu.Lock()
	r.st.pending[seq] = pcs[:n]
	r.mu.Unlock()
}

func (r *Recorder) stacksOn() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.st.on
}

// appended moves the stack of the record submitted at seq to its log index (under r.mu).
func (r *Recorder) appended(seq uint64, index int) {
	if !r.st.on {
		return
	}
	if pcs, ok := r.st.pending[seq]; ok {
		delete(r.st.pending, seq)
		r.st.byIndex[index] = pcs
	}
}

// Stack returns the caller's stack of log entry i ("" when not captured).
func (r *Recorder) Stack(i int) string {
	r.mu.Lock()
	pcs := r.st.byIndex[i]
	r.mu.Unlock()
	return formatStack(pcs)
}

func formatStack(pcs []uintptr) string {
	if len(pcs) == 0 {
		return ""
	}
	var b strings.Builder
	frames := runtime.CallersFrames(pcs)
	for {
		f, more := frames.Next()
		if strings.HasPrefix(f.Function, "runtime.") || strings.HasPrefix(f.Function, "testing.") {
			if !more {
				break
			}
			continue
		}
		fmt.Fprintf(&b, "%s\n\t%s:%d\n", f.Function, f.File, f.Line)
		if !more {
			break
		}
	}
	return b.String()
}

// StacksPath is where the stacks of the log at path are kept.
func StacksPath(logPath string) string { return logPath + ".stacks" }

// writeStacks writes the captured stacks beside the log (under r.mu).
func (r *Recorder) writeStacks(logPath string) error {
	if !r.st.on || len(r.st.byIndex) == 0 {
		return nil
	}
	out := make(map[string]string, len(r.st.byIndex))
	for i, pcs := range r.st.byIndex {
		out[strconv.Itoa(i)] = formatStack(pcs)
	}
	b, err := json.Marshal(out)
	if err != nil {
		return err
	}
	return os.WriteFile(StacksPath(logPath), b, 0o644)
}

// LoadStacks reads the stacks kept beside a log (nil, nil when there are none).
func LoadStacks(logPath string) (map[int]string, error) {
	b, err := os.ReadFile(StacksPath(logPath))
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var raw map[string]string
	if err := json.Unmarshal(b, &raw); err != nil {
		return nil, fmt.Errorf("%s: %w", StacksPath(logPath), err)
	}
	out := make(map[int]string, len(raw))
	for k, v := range raw {
		i, err := strconv.Atoi(k)
		if err != nil {
			return nil, fmt.Errorf("%s: bad index %q", StacksPath(logPath), k)
		}
		out[i] = v
	}
	return out, nil
}
