package model

import "errors"

// Sentinel errors of the model's public API: callers test them with errors.Is; the messages that
// wrap them add the detail (which name, op or state) and never name a command-line flag.
var (
	// ErrUnknownModel: a model name that is not one of Models().
	ErrUnknownModel = errors.New("unknown model")
	// ErrUnknownStrategy: a strategy name that is not one of Strategies().
	ErrUnknownStrategy = errors.New("unknown strategy")
	// ErrUnknownDiscardPolicy: a discard policy other than zero, keep or either.
	ErrUnknownDiscardPolicy = errors.New("unknown discard policy")
	// ErrBadStateID: a state ID that does not parse.
	ErrBadStateID = errors.New("malformed state ID")
	// ErrStateNotAllowed: a state ID that parses but names a choice its crash point does not offer.
	ErrStateNotAllowed = errors.New("state not allowed")
	// ErrNoSuchMark: a mark name the recording does not hold.
	ErrNoSuchMark = errors.New("not in the log")
)
