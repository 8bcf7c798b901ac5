package compact

import "errors"

var (
	// ErrShort is returned when the input ends before a value does.
	ErrShort = errors.New("compact: input too short")
	// ErrTooLong is returned when a length or count is larger than the
	// input left, or than the caller's bound.
	ErrTooLong = errors.New("compact: length exceeds input or bound")
	// ErrInvalid is returned for a value outside its encoding's range
	// (a bool that is not 0 or 1, an unknown address family).
	ErrInvalid = errors.New("compact: invalid value")
	// ErrTrailing is returned by Decoder.Finish when input is left over.
	ErrTrailing = errors.New("compact: trailing bytes")
)
