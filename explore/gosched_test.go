package explore

import "runtime"

func runtimeGosched() { runtime.Gosched() }
