package cli

import (
	"fmt"

	"github.com/powercut/powercut/explore"
)

// newVerifyChecker is replaced when the verify workload's checker is wired in.
var newVerifyChecker = func(track string) (explore.Checker, error) {
	return nil, fmt.Errorf("--verify: the verify checker is not built into this binary")
}
