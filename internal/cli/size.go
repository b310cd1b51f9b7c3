package cli

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// parseSize parses a byte count for flags like --size: "4096", "128M", "1G", "300MiB", "2KB",
// "1.5G" (units K, M, G, T are powers of 1024, with an optional "B" or "iB"; case does not
// matter). A fraction must come to a whole number of bytes. Negative sizes are refused; zero is
// accepted (the caller decides whether it makes sense).
func parseSize(s string) (int64, error) {
	t := strings.ToUpper(strings.TrimSpace(s))
	if strings.HasSuffix(t, "IB") {
		t = strings.TrimSuffix(t, "IB")
		if t == "" || !strings.ContainsRune("KMGT", rune(t[len(t)-1])) {
			return 0, fmt.Errorf("invalid size %q: \"iB\" needs a unit (KiB, MiB, GiB, TiB)", s)
		}
	} else {
		t = strings.TrimSuffix(t, "B")
	}
	shift := 0
	if t != "" {
		if i := strings.IndexByte("KMGT", t[len(t)-1]); i >= 0 {
			shift = 10 * (i + 1)
			t = t[:len(t)-1]
		}
	}
	if t == "" || t[0] == '+' || t[0] == '-' {
		if strings.HasPrefix(t, "-") {
			return 0, fmt.Errorf("invalid size %q: negative", s)
		}
		return 0, fmt.Errorf("invalid size %q: want a number of bytes, optionally with K, M, G or T (powers of 1024)", s)
	}
	if v, err := strconv.ParseInt(t, 10, 64); err == nil {
		if v > math.MaxInt64>>shift {
			return 0, fmt.Errorf("invalid size %q: too large", s)
		}
		return v << shift, nil
	}
	f, err := strconv.ParseFloat(t, 64)
	if err != nil || strings.ContainsAny(t, "EXPN_") { // no exponents, hex, inf/nan, underscores
		return 0, fmt.Errorf("invalid size %q: want a number of bytes, optionally with K, M, G or T (powers of 1024)", s)
	}
	v := f * float64(int64(1)<<shift)
	if v >= math.MaxInt64 {
		return 0, fmt.Errorf("invalid size %q: too large", s)
	}
	if v != math.Trunc(v) {
		return 0, fmt.Errorf("invalid size %q: not a whole number of bytes", s)
	}
	return int64(v), nil
}
