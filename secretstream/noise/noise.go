package noise

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"io"

	"github.com/flynn/noise"

	"github.com/keytunnel/keytunnel/internal/key"
)

// MaxCiphertext is the largest ciphertext noise-handshake 4.2.0 will
// encrypt or decrypt. Its limit is on each ciphertext, not on the message:
// an IK first message may be 80 bytes longer than this (e and the encrypted
// s come before the encrypted payload), and an unencrypted payload (XX
// message 1) has no limit in noise-handshake at all.
const MaxCiphertext = 65535

// tagLen is the length of the ChaCha20-Poly1305 tag on every ciphertext.
const tagLen = 16

// layout is the shape of one handshake message: prefix bytes of tokens
// (e is 32 bytes in the clear, s 32 in the clear or 48 encrypted) and then
// the payload, encrypted when keyed (a DH has happened before it).
type layout struct {
	prefix int
	keyed  bool
}

// layouts are the message shapes of each pattern, in order:
//
//	IK  -> e(32) ‖ enc(s)(48) ‖ enc(payload)(len+16)      (e, es, s, ss)
//	    <- e(32) ‖ enc(payload)(len+16)                   (e, ee, se)
//	XX  -> e(32) ‖ payload(len)                           (e)
//	    <- e(32) ‖ enc(s)(48) ‖ enc(payload)(len+16)      (e, ee, s, es)
//	    -> enc(s)(48) ‖ enc(payload)(len+16)              (s, se)
//
// flynn/noise encodes and decodes them; the table lets WriteMessage and
// ReadMessage apply noise-handshake's size rules themselves, before
// flynn/noise touches any state.
var layouts = [...][]layout{
	IK: {{prefix: 80, keyed: true}, {prefix: 32, keyed: true}},
	XX: {{prefix: 32}, {prefix: 80, keyed: true}, {prefix: 48, keyed: true}},
}

// Pattern is a Noise handshake pattern.
type Pattern int

const (
	IK Pattern = iota
	XX
)

func (p Pattern) String() string {
	switch p {
	case IK:
		return "IK"
	case XX:
		return "XX"
	}
	return fmt.Sprintf("Pattern(%d)", int(p))
}

// Result is what a completed handshake yields.
type Result struct {
	// Tx and Rx are the split keys: the initiator sends with k1 and
	// receives with k2, the responder the reverse. They are the first 32
	// bytes of each HKDF output, as noise-handshake hands them to
	// secret-stream.
	Tx, Rx [32]byte
	// Hash is the final handshake hash h (BLAKE2b-512).
	Hash            [64]byte
	PublicKey       key.PublicKey
	RemotePublicKey key.PublicKey
	IsInitiator     bool
}

// Config sets up one handshake.
type Config struct {
	Pattern   Pattern
	Initiator bool
	// KeyPair is the static key pair. Its Private (seed ‖ public, 64
	// bytes) is what the DH function uses: the seed gives the scalar. It
	// is not copied, so it must not change during the handshake.
	KeyPair key.KeyPair
	// RemoteKey is the responder's static key; the IK initiator must set
	// it. Everyone else learns the remote key from the messages, and
	// ignores this field.
	RemoteKey key.PublicKey
	// Prologue: hyperdht passes NSPeerHandshake; secret-stream's own XX
	// handshake uses none. Both sides must agree, or the first encrypted
	// message fails to authenticate.
	Prologue []byte
	// Ephemeral fixes the ephemeral key pair, for test vectors only.
	Ephemeral *key.KeyPair
	// Random is the entropy for the ephemeral key (a 32-byte seed, read
	// when the e token is written); nil means crypto/rand.
	Random io.Reader
}

var suite = noise.NewCipherSuite(ed25519DH{}, noise.CipherChaChaPoly, noise.HashBLAKE2b)

// Handshake is one side of a Noise handshake in progress. It is not safe
// for concurrent use; a handshake is a strict alternation of writes and
// reads anyway.
type Handshake struct {
	cfg    Config
	hs     *noise.HandshakeState
	writes bool // whether the next call is a WriteMessage
	msg    int  // index of the next message in the pattern
	done   bool
	failed error
	res    Result
}

// New starts a handshake.
func New(cfg Config) (*Handshake, error) {
	if err := checkKeyPair(cfg.KeyPair); err != nil {
		return nil, fmt.Errorf("%w: KeyPair: %v", ErrConfig, err)
	}
	if cfg.Ephemeral != nil {
		if err := checkKeyPair(*cfg.Ephemeral); err != nil {
			return nil, fmt.Errorf("%w: Ephemeral: %v", ErrConfig, err)
		}
	}
	var pattern noise.HandshakePattern
	switch cfg.Pattern {
	case IK:
		pattern = noise.HandshakeIK
	case XX:
		pattern = noise.HandshakeXX
	default:
		return nil, fmt.Errorf("%w: unknown pattern %d", ErrConfig, cfg.Pattern)
	}
	rnd := cfg.Random
	if rnd == nil {
		rnd = rand.Reader
	}
	if cfg.Ephemeral != nil {
		// GenerateKeypair reads the seed from Random, so handing it the
		// fixed seed fixes the ephemeral key.
		seed := cfg.Ephemeral.Seed()
		rnd = bytes.NewReader(seed[:])
	}
	nc := noise.Config{
		CipherSuite: suite,
		Random:      rnd,
		Pattern:     pattern,
		Initiator:   cfg.Initiator,
		Prologue:    cfg.Prologue,
		StaticKeypair: noise.DHKey{
			Private: cfg.KeyPair.Private,
			Public:  cfg.KeyPair.Public[:],
		},
	}
	if cfg.Pattern == IK && cfg.Initiator {
		if cfg.RemoteKey.IsZero() {
			return nil, fmt.Errorf("%w: IK initiator needs RemoteKey", ErrConfig)
		}
		nc.PeerStatic = append([]byte(nil), cfg.RemoteKey[:]...)
	}
	// A bad responder key would otherwise only fail deep inside the first
	// DH; say so up front.
	if nc.PeerStatic != nil {
		if _, err := checkPoint(nc.PeerStatic); err != nil {
			return nil, fmt.Errorf("%w: RemoteKey: %w", ErrConfig, err)
		}
	}
	hs, err := noise.NewHandshakeState(nc)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrConfig, err)
	}
	h := &Handshake{cfg: cfg, hs: hs, writes: cfg.Initiator}
	h.res.IsInitiator = cfg.Initiator
	h.res.PublicKey = cfg.KeyPair.Public
	return h, nil
}

// checkKeyPair refuses a key pair DH cannot use: Private must be the
// 64-byte seed ‖ public form and agree with Public, or the peer would be
// sent one key and answered with the DH of another.
func checkKeyPair(kp key.KeyPair) error {
	if len(kp.Private) != ed25519.PrivateKeySize {
		return fmt.Errorf("private key of %d bytes, want %d", len(kp.Private), ed25519.PrivateKeySize)
	}
	if !bytes.Equal(kp.Private[32:], kp.Public[:]) {
		return errors.New("public key does not match the private key")
	}
	return nil
}

// WriteMessage appends the next handshake message, carrying payload, to out.
// A payload too large for noise-handshake to encrypt is refused before any
// state changes, so the handshake may go on with a smaller one.
func (h *Handshake) WriteMessage(out, payload []byte) ([]byte, error) {
	if err := h.turn(true); err != nil {
		return out, err
	}
	// A keyed payload is refused as noise-handshake refuses it. An unkeyed
	// one (XX message 1) has no limit in noise-handshake, but flynn/noise
	// refuses payloads over 65535 bytes; secret-stream sends that message
	// empty, so the difference cannot show on the wire.
	if n := len(payload) + tagLen; layouts[h.cfg.Pattern][h.msg].keyed && n > MaxCiphertext {
		return out, fmt.Errorf("%w: ciphertext of %d bytes exceeds %d", ErrMessage, n, MaxCiphertext)
	}
	msg, cs1, cs2, err := h.hs.WriteMessage(out, payload)
	if err != nil {
		// flynn/noise has already moved on (the ephemeral may be mixed
		// in), so the handshake cannot be retried.
		return out, h.fail(fmt.Errorf("%w: %w", ErrMessage, err))
	}
	h.writes = false
	h.msg++
	h.finish(cs1, cs2)
	return msg, nil
}

// ReadMessage reads the peer's next handshake message and appends its
// payload to out. Any failure ends the handshake: Noise state is not
// recoverable after a bad message, and hyperdht drops such peers.
func (h *Handshake) ReadMessage(out, msg []byte) ([]byte, error) {
	if err := h.turn(false); err != nil {
		return out, err
	}
	l := layouts[h.cfg.Pattern][h.msg]
	min := l.prefix
	if l.keyed {
		min += tagLen
	}
	if len(msg) < min {
		return out, h.fail(fmt.Errorf("%w: %d bytes, message %d of %v needs at least %d", ErrMessage, len(msg), h.msg+1, h.cfg.Pattern, min))
	}
	if n := len(msg) - l.prefix; l.keyed && n > MaxCiphertext {
		return out, h.fail(fmt.Errorf("%w: ciphertext of %d bytes exceeds %d", ErrMessage, n, MaxCiphertext))
	}
	payload, cs1, cs2, err := h.hs.ReadMessage(out, msg)
	if err != nil {
		// Both sentinels stay visible: a message carrying a bad point is
		// a bad message, and errors.Is(err, ErrBadPoint) says why.
		return out, h.fail(fmt.Errorf("%w: %w", ErrMessage, err))
	}
	h.writes = true
	h.msg++
	h.finish(cs1, cs2)
	return payload, nil
}

func (h *Handshake) turn(write bool) error {
	switch {
	case h.failed != nil:
		return h.failed
	case h.done:
		return fmt.Errorf("%w: handshake already complete", ErrState)
	case h.writes != write:
		if write {
			return fmt.Errorf("%w: a read is due", ErrState)
		}
		return fmt.Errorf("%w: a write is due", ErrState)
	}
	return nil
}

func (h *Handshake) fail(err error) error {
	h.failed = err
	return err
}

// finish records the result once flynn/noise hands out the split cipher
// states (after the last message). cs1 is k1, the initiator's sending key.
func (h *Handshake) finish(cs1, cs2 *noise.CipherState) {
	if cs1 == nil || cs2 == nil {
		return
	}
	h.done = true
	k1, k2 := cs1.UnsafeKey(), cs2.UnsafeKey()
	if h.cfg.Initiator {
		h.res.Tx, h.res.Rx = k1, k2
	} else {
		h.res.Tx, h.res.Rx = k2, k1
	}
	copy(h.res.Hash[:], h.hs.ChannelBinding())
	copy(h.res.RemotePublicKey[:], h.hs.PeerStatic())
}

// Complete reports whether the handshake has finished successfully.
func (h *Handshake) Complete() bool { return h.done }

// RemotePublicKey returns the peer's static key once a message has carried
// it (for the IK responder, after the first message), else the zero key.
func (h *Handshake) RemotePublicKey() key.PublicKey {
	var k key.PublicKey
	copy(k[:], h.hs.PeerStatic())
	return k
}

// Result returns the keys of a completed handshake.
func (h *Handshake) Result() (Result, error) {
	if !h.done {
		return Result{}, fmt.Errorf("%w: handshake not complete", ErrState)
	}
	return h.res, nil
}
