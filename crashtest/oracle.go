package crashtest

import (
	"fmt"
	"sort"
	"strings"

	"github.com/powercut/powercut/record"
)

// Recovered is what a recovered crash state contains: the ordinals Crash.Found reported.
type Recovered map[uint64]bool

// Promises is what the workload had said by the time of the crash.
type Promises struct {
	// Acked are the acknowledgements issued before the crash point, in log order.
	Acked []record.Ack
	// All are every acknowledgement of the recording, in log order: an operation acknowledged
	// after the crash point may or may not have survived.
	All []record.Ack
}

// An Oracle compares what a recovered state contains with the promises. Check returns one
// message per broken promise (none: the state is fine). Oracles are pure functions of their
// arguments and are called concurrently.
type Oracle interface {
	Name() string
	Check(p *Promises, got Recovered) []string
}

// OracleFunc makes an Oracle of a function.
func OracleFunc(name string, check func(p *Promises, got Recovered) []string) Oracle {
	return funcOracle{name, check}
}

type funcOracle struct {
	name  string
	check func(*Promises, Recovered) []string
}

func (o funcOracle) Name() string                              { return o.name }
func (o funcOracle) Check(p *Promises, got Recovered) []string { return o.check(p, got) }

func ack(a record.Ack) string {
	if a.Name == "" {
		return fmt.Sprintf("op %d", a.Ordinal)
	}
	return fmt.Sprintf("op %d (%s)", a.Ordinal, a.Name)
}

// AckedPresent is the durability promise: every operation acknowledged before the crash is in
// the recovered state.
func AckedPresent() Oracle {
	return OracleFunc("acked-present", func(p *Promises, got Recovered) []string {
		var out []string
		for _, a := range p.Acked {
			if !got[a.Ordinal] {
				out = append(out, ack(a)+" was acknowledged before the crash and is lost")
			}
		}
		return out
	})
}

// NoHole is the prefix promise: operations survive in the order they were acknowledged, so a
// lost operation implies every operation acknowledged after it is lost too. It holds for
// engines that may lose a tail (asynchronous commit) but never the middle. Order is the order
// of the acks in the whole recording, including those after the crash point.
func NoHole() Oracle {
	return OracleFunc("no-hole", func(p *Promises, got Recovered) []string {
		lost := -1
		for i, a := range p.All {
			switch {
			case !got[a.Ordinal] && lost < 0:
				lost = i
			case got[a.Ordinal] && lost >= 0:
				later := 0
				for _, b := range p.All[i+1:] {
					if got[b.Ordinal] {
						later++
					}
				}
				msg := fmt.Sprintf("%s survived but %s, acknowledged before it, is lost", ack(a), ack(p.All[lost]))
				if later > 0 {
					msg += fmt.Sprintf(" (and %d later operations survived too)", later)
				}
				return []string{msg}
			}
		}
		return nil
	})
}

// AllOrNothing is the atomicity promise: the operations group puts under the same non-empty key
// (a transaction, a batch) are recovered all or none, whatever their acks' places.
func AllOrNothing(group func(record.Ack) string) Oracle {
	return OracleFunc("all-or-nothing", func(p *Promises, got Recovered) []string {
		type members struct{ in, out []string }
		groups := map[string]*members{}
		var keys []string
		for _, a := range p.All {
			k := group(a)
			if k == "" {
				continue
			}
			g := groups[k]
			if g == nil {
				g = &members{}
				groups[k] = g
				keys = append(keys, k)
			}
			if got[a.Ordinal] {
				g.in = append(g.in, ack(a))
			} else {
				g.out = append(g.out, ack(a))
			}
		}
		var out []string
		for _, k := range keys {
			if g := groups[k]; len(g.in) > 0 && len(g.out) > 0 {
				out = append(out, fmt.Sprintf("group %q is partly recovered: %s present, %s lost", k, strings.Join(g.in, ", "), strings.Join(g.out, ", ")))
			}
		}
		return out
	})
}

// NoPhantom is the integrity promise: the recovered state contains only operations the workload
// issued (acknowledged somewhere in the recording), never garbage read back as an operation.
func NoPhantom() Oracle {
	return OracleFunc("no-phantom", func(p *Promises, got Recovered) []string {
		known := make(map[uint64]bool, len(p.All))
		for _, a := range p.All {
			known[a.Ordinal] = true
		}
		var bad []uint64
		for o := range got {
			if !known[o] {
				bad = append(bad, o)
			}
		}
		if len(bad) == 0 {
			return nil
		}
		sort.Slice(bad, func(i, j int) bool { return bad[i] < bad[j] })
		return []string{fmt.Sprintf("recovered operations %v the workload never acknowledged", bad)}
	})
}
