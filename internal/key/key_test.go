package key

import (
	"bytes"
	"crypto/ed25519"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/keytunnel/keytunnel/internal/nodetest"
)

var testSeeds = []string{
	"0000000000000000000000000000000000000000000000000000000000000000",
	"000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
	"ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
	"9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
}

// TestNodeKeyPairs derives key pairs from seeds in Go and with
// hypercore-crypto (libsodium's crypto_sign_seed_keypair), and compares the
// public key, the 64-byte secret key and the z32 form.
func TestNodeKeyPairs(t *testing.T) {
	p := nodetest.Start(t, "compact-vectors.js", testSeeds...)
	for range testSeeds {
		f := strings.Fields(p.Expect("key ", 30*time.Second))
		if len(f) != 4 {
			t.Fatalf("bad line %q", f)
		}
		seed, err := ParseSeed(f[0])
		if err != nil {
			t.Fatal(err)
		}
		kp := FromSeed(seed)
		if kp.Public.String() != f[1] {
			t.Errorf("seed %s: public %s, Node %s", f[0], kp.Public, f[1])
		}
		if hex.EncodeToString(kp.Private) != f[2] {
			t.Errorf("seed %s: secret key differs from Node", f[0])
		}
		if kp.Public.Z32() != f[3] {
			t.Errorf("seed %s: z32 %s, Node %s", f[0], kp.Public.Z32(), f[3])
		}
		for _, form := range []string{f[1], strings.ToUpper(f[1]), f[3], strings.ToUpper(f[3]), "pear://" + f[3] + "/path", " " + f[1] + "\n"} {
			got, err := ParsePublicKey(form)
			if err != nil || got != kp.Public {
				t.Errorf("ParsePublicKey(%q) = %v, %v", form, got, err)
			}
		}
		if kp.Seed() != seed {
			t.Errorf("Seed() does not return the seed")
		}
		msg := []byte("keytunnel")
		if !ed25519.Verify(ed25519.PublicKey(kp.Public[:]), msg, ed25519.Sign(kp.Private, msg)) {
			t.Errorf("signature does not verify")
		}
	}
}

func TestParseErrors(t *testing.T) {
	good := FromSeed(Seed{1}).Public
	bad := []string{
		"",
		"abc",
		good.String()[:63],
		good.String() + "0",
		strings.Replace(good.String(), good.String()[:1], "g", 1),
		good.Z32()[:51],
		"l" + good.Z32()[1:],           // 'l' is not in the alphabet
		"0" + good.Z32()[1:],           // nor is '0'
		"pear://" + good.String()[:10], // prefix with a short key
	}
	for _, s := range bad {
		if _, err := ParsePublicKey(s); !errors.Is(err, ErrKeyFormat) {
			t.Errorf("ParsePublicKey(%q): err %v, want ErrKeyFormat", s, err)
		}
	}
	if _, err := ParseSeed("00"); !errors.Is(err, ErrSeedLength) {
		t.Errorf("short seed: %v", err)
	}
	if _, err := ParseSeed(strings.Repeat("zz", 32)); err == nil {
		t.Errorf("non-hex seed accepted")
	}
	if _, err := SeedFromBytes(make([]byte, 31)); !errors.Is(err, ErrSeedLength) {
		t.Errorf("31-byte seed: %v", err)
	}
}

func TestTextRoundTrip(t *testing.T) {
	kp, err := Generate(nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := kp.Public.MarshalText()
	var k PublicKey
	if err := k.UnmarshalText(b); err != nil || k != kp.Public {
		t.Fatalf("text round trip: %v", err)
	}
	if err := k.UnmarshalText([]byte(kp.Public.Z32())); err != nil || k != kp.Public {
		t.Fatalf("z32 round trip: %v", err)
	}
	if k.IsZero() || !(PublicKey{}).IsZero() {
		t.Fatal("IsZero")
	}
	if _, err := Generate(bytes.NewReader(make([]byte, 3))); err == nil {
		t.Fatal("short randomness accepted")
	}
}

func FuzzParsePublicKey(f *testing.F) {
	k := FromSeed(Seed{7}).Public
	f.Add(k.String())
	f.Add(k.Z32())
	f.Add("pear://" + k.Z32())
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParsePublicKey(s)
		if err != nil {
			return
		}
		// Whatever parses must print back to a form that parses to the same key.
		for _, form := range []string{p.String(), p.Z32()} {
			q, err := ParsePublicKey(form)
			if err != nil || q != p {
				t.Fatalf("%q parsed, but %q did not round trip: %v", s, form, err)
			}
		}
	})
}
