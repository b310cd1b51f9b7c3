package conformance

import "unsafe"

func uintptrOf(b []byte) uintptr { return uintptr(unsafe.Pointer(unsafe.SliceData(b))) }

func uintptrOfRange(r *[2]uint64) uintptr { return uintptr(unsafe.Pointer(r)) }
