// Package conformance holds the frontend conformance suite (its tests): one script of block
// operations recorded through every frontend must give the same operations and explore to the
// same crash states as the in-process recording of the same steps.
package conformance
