package wire

import (
	"crypto/ed25519"

	"filippo.io/edwards25519"
	"golang.org/x/crypto/blake2b"

	"github.com/keytunnel/keytunnel/internal/key"
)

// Every hyperdht signature is an Ed25519 detached signature over 64 bytes:
// a 32-byte namespace followed by a 32-byte BLAKE2b hash of the signed
// content. The namespace keeps an announce signature from being replayed
// as an unannounce or a mutable put.

// AnnounceSignable returns the 64 bytes an ANNOUNCE (ns = NSAnnounce) or
// UNANNOUNCE (ns = NSUnannounce) signature covers:
//
//	ns ‖ H(target ‖ nodeID ‖ token ‖ encode(peer) ‖ refresh)
//
// nodeID is the storing node's id, which binds the signature to one node
// and token so another node cannot replay it. refresh may be nil.
func AnnounceSignable(ns, target, nodeID [32]byte, token []byte, peer *Peer, refresh *[32]byte) [64]byte {
	h, _ := blake2b.New256(nil)
	h.Write(target[:])
	h.Write(nodeID[:])
	h.Write(token)
	h.Write(peer.Append(make([]byte, 0, 64)))
	if refresh != nil {
		h.Write(refresh[:])
	}
	var out [64]byte
	copy(out[:], ns[:])
	h.Sum(out[32:32])
	return out
}

// MutableSignable returns the 64 bytes a MUTABLE_PUT signature covers:
//
//	NSMutablePut ‖ H(uint seq ‖ buffer value)
func MutableSignable(seq uint64, value []byte) [64]byte {
	var out [64]byte
	copy(out[:], NSMutablePut[:])
	h := blake2b.Sum256(AppendMutableSignable(nil, seq, value))
	copy(out[32:], h[:])
	return out
}

func sign(kp key.KeyPair, msg [64]byte) (sig [64]byte) {
	copy(sig[:], ed25519.Sign(kp.Private, msg[:]))
	return sig
}

// SignAnnounce signs a's peer and refresh for the node nodeID that handed
// out token, for an ANNOUNCE to target.
func SignAnnounce(kp key.KeyPair, target, nodeID [32]byte, token []byte, a *Announce) [64]byte {
	return sign(kp, AnnounceSignable(NSAnnounce, target, nodeID, token, a.Peer, a.Refresh))
}

// SignUnannounce is SignAnnounce for UNANNOUNCE.
func SignUnannounce(kp key.KeyPair, target, nodeID [32]byte, token []byte, a *Announce) [64]byte {
	return sign(kp, AnnounceSignable(NSUnannounce, target, nodeID, token, a.Peer, a.Refresh))
}

// VerifyAnnounce checks a's signature under namespace ns (NSAnnounce or
// NSUnannounce) with a.Peer.PublicKey, as the storing node nodeID does.
// An announce without peer or signature does not verify.
func VerifyAnnounce(ns, target, nodeID [32]byte, token []byte, a *Announce) bool {
	if a.Peer == nil || a.Signature == nil {
		return false
	}
	msg := AnnounceSignable(ns, target, nodeID, token, a.Peer, a.Refresh)
	return Verify(a.Peer.PublicKey, msg[:], a.Signature[:])
}

// SignMutable signs a mutable value with sequence number seq.
func SignMutable(kp key.KeyPair, seq uint64, value []byte) [64]byte {
	return sign(kp, MutableSignable(seq, value))
}

// VerifyMutable checks a mutable value's signature.
func VerifyMutable(pk key.PublicKey, sig [64]byte, seq uint64, value []byte) bool {
	msg := MutableSignable(seq, value)
	return Verify(pk, msg[:], sig[:])
}

// Verify checks an Ed25519 signature with libsodium's rules
// (crypto_sign_verify_detached), which are stricter than crypto/ed25519:
// it also refuses a public key that is a non-canonical encoding or of
// small order, and a signature whose R is of small order. A Go node must
// refuse exactly what Node refuses, or a record only Go nodes accept
// could be spread through them.
func Verify(pk key.PublicKey, msg, sig []byte) bool {
	if len(sig) != ed25519.SignatureSize {
		return false
	}
	if !canonicalPoint(pk[:]) || smallOrder(pk[:]) || smallOrder(sig[:32]) {
		return false
	}
	return ed25519.Verify(pk[:], msg, sig)
}

// canonicalPoint reports whether the y coordinate encoded in s (sign bit
// aside) is below the field prime 2^255-19.
func canonicalPoint(s []byte) bool {
	if s[31]&0x7f != 0x7f || s[0] < 0xed {
		return true
	}
	for _, c := range s[1:31] {
		if c != 0xff {
			return true
		}
	}
	return false
}

// smallOrder reports whether s decodes to a point of order dividing 8
// (libsodium checks a list of their encodings; multiplying by the
// cofactor finds the same points). Undecodable encodings are not small
// order here: verification rejects them anyway.
func smallOrder(s []byte) bool {
	p, err := new(edwards25519.Point).SetBytes(s)
	if err != nil {
		return false
	}
	return p.MultByCofactor(p).Equal(edwards25519.NewIdentityPoint()) == 1
}
