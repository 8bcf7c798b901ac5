package holesail

import (
	"bytes"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/keytunnel/keytunnel/internal/key"
)

// Vectors computed with holesail 2.4.1's code under Node:
// HyperDHT.keyPair(sha256(secret)) and HyperDHT.keyPair(seed).
const (
	vecSecret    = "abababababababababababababababababababababababababababababababab"
	vecSecretPub = "41896816ddc9fd456834e32b06894234a6439aa2747c07afb9b0c7750e055d87"
	vecSeedZ32   = "brro1nejbrro1nejbrro1nejbrro1nejbrro1nejbrro1nejbrro" // 32 bytes of 9
	vecSeedPub   = "fd1724385aa0c75b64fb78cd602fa1d991fdebf76b13c58ed702eac835e9f618"
)

func pk(t *testing.T, s string) key.PublicKey {
	t.Helper()
	k, err := key.ParsePublicKey(s)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestParseValid(t *testing.T) {
	seven := key.PublicKey(bytes.Repeat([]byte{7}, 32))
	sAt5 := seven.Z32()[:5] + "s" + seven.Z32()[6:]
	cases := []struct {
		name    string
		in      string
		private bool
		form    Form
		secure  bool
		pub     string
		str     string // String(); "" means in
	}{
		{"hs public z32", "hs://0000" + seven.Z32(), false, FormURL, false, seven.String(), ""},
		{"hs public hex", "hs://0000" + seven.String(), false, FormURL, false, seven.String(), "hs://0000" + seven.Z32()},
		{"hs public other flags", "hs://0abc" + seven.Z32(), false, FormURL, false, seven.String(), "hs://0000" + seven.Z32()},
		{"hs private", "hs://s000" + vecSecret, false, FormURL, true, vecSecretPub, ""},
		{"hs private with --private", "hs://s000" + vecSecret, true, FormURL, true, vecSecretPub, ""},
		{"hs private other flags", "hs://sxyz" + vecSecret, false, FormURL, true, vecSecretPub, "hs://s000" + vecSecret},
		{"hs private short secret", "hs://s000x", false, FormURL, true, "", ""},
		{"hs private secret with spaces", "hs://s000my secret phrase", false, FormURL, true, "", ""},
		{"bare z32 key", seven.Z32(), false, FormKey, false, seven.String(), "hs://0000" + seven.Z32()},
		{"bare z32 key upper case", strings.ToUpper(seven.Z32()), false, FormKey, false, seven.String(), "hs://0000" + seven.Z32()},
		{"bare hex key", seven.String(), false, FormKey, false, seven.String(), "hs://0000" + seven.Z32()},
		{"bare z32 seed", vecSeedZ32, true, FormSeed, true, vecSeedPub, ""},
		{"bare secret", vecSecret, true, FormSecret, true, vecSecretPub, "hs://s000" + vecSecret},
		{"bare short secret", "hunter2", true, FormSecret, true, "", "hs://s000hunter2"},
		// a bare string whose sixth character is s: holesail's urlParser
		// calls it private, Parse does not.
		{"bare key with s at index 5", sAt5, false, FormKey, false, "", "hs://0000" + sAt5},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := Parse(c.in, c.private)
			if err != nil {
				t.Fatal(err)
			}
			if got.Form != c.form || got.Private != c.secure {
				t.Fatalf("form %d private %v, want %d %v", got.Form, got.Private, c.form, c.secure)
			}
			if c.pub != "" && got.PublicKey != pk(t, c.pub) {
				t.Fatalf("public key %s, want %s", got.PublicKey, c.pub)
			}
			if got.Private {
				if got.KeyPair.Public != got.PublicKey || got.KeyPair.Public.IsZero() {
					t.Fatalf("private key pair %s does not match public key %s", got.KeyPair.Public, got.PublicKey)
				}
			} else if !got.KeyPair.Public.IsZero() {
				t.Fatal("public Conn carries a key pair")
			}
			want := c.str
			if want == "" {
				want = c.in
			}
			if got.String() != want {
				t.Fatalf("String() = %q, want %q", got.String(), want)
			}
			// What String writes parses back to the same service.
			again, err := Parse(got.String(), got.Form == FormSeed)
			if err != nil || again.PublicKey != got.PublicKey || again.Private != got.Private {
				t.Fatalf("String() %q parses to %+v, %v", got.String(), again, err)
			}
		})
	}
}

func TestParseInvalid(t *testing.T) {
	seven := key.PublicKey(bytes.Repeat([]byte{7}, 32))
	cases := []struct {
		name    string
		in      string
		private bool
		want    error
		hint    string // in the message
	}{
		{"empty", "", false, ErrNotKey, "0 characters"},
		{"empty private", "", true, ErrEmptySecret, ""},
		{"scheme only", "hs://", false, ErrShortURL, "hs://0000"},
		{"scheme and flags cut", "hs://s00", false, ErrShortURL, ""},
		{"private without secret", "hs://s000", false, ErrEmptySecret, "private hs://"},
		{"public without key", "hs://0000", false, ErrNotKey, "0 characters"},
		{"public short key", "hs://0000abc", false, ErrNotKey, "3 characters"},
		{"public bad z32", "hs://0000" + strings.Repeat("l", 52), false, ErrNotKey, "public hs://"},
		{"public bad hex", "hs://0000" + strings.Repeat("g", 64), false, ErrNotKey, ""},
		{"public with --private", "hs://0000" + seven.Z32(), true, ErrPublicURL, "drop --private"},
		{"bare secret without --private", "hunter2hunter2", false, ErrNotKey, "hs://"},
		{"bare key with space", " " + seven.Z32()[1:], false, ErrNotKey, ""},
		{"secret with newline", "hs://s000abc\ndef", false, ErrSecretChars, ""},
		{"secret invalid utf8", "hs://s000abc\xffdef", false, ErrSecretChars, ""},
		{"secret too long", "hs://s000" + strings.Repeat("a", MaxSecret+1), false, ErrSecretTooLong, ""},
		{"bare private too long", strings.Repeat("a", MaxSecret+1), true, ErrSecretTooLong, ""},
		{"wrong scheme case", "HS://0000" + seven.Z32(), false, ErrNotKey, ""},
		{"pear url", "pear://" + seven.Z32(), false, ErrNotKey, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := Parse(c.in, c.private)
			if !errors.Is(err, c.want) {
				t.Fatalf("Parse(%q) = %+v, %v; want %v", c.in, got, err, c.want)
			}
			if !strings.Contains(err.Error(), c.hint) {
				t.Fatalf("error %q does not say %q", err, c.hint)
			}
		})
	}
}

// Errors about private strings never repeat the secret.
func TestParseErrorsHideSecret(t *testing.T) {
	for _, in := range []string{"hs://s000top\nsecret", "hs://s000" + strings.Repeat("topsecret", 200)} {
		_, err := Parse(in, false)
		if err == nil || strings.Contains(err.Error(), "topsecret") || strings.Contains(err.Error(), "top\n") {
			t.Fatalf("error %v shows the secret", err)
		}
	}
}

func TestRedactedHidesSecret(t *testing.T) {
	c, err := Parse("hs://s000"+vecSecret, false)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(c.Redacted(), vecSecret) || !strings.Contains(c.Redacted(), vecSecretPub) {
		t.Fatalf("Redacted() = %q", c.Redacted())
	}
	if fmtd := strings.Join([]string{c.PublicKey.String(), c.PublicKey.Z32()}, " "); strings.Contains(fmtd, vecSecret) {
		t.Fatal("public key shows the secret")
	}
}

func TestNewSecret(t *testing.T) {
	a, err := NewSecret(nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := NewSecret(nil)
	if len(a) != 64 || a == b {
		t.Fatalf("secrets %q %q", a, b)
	}
	if _, err := NewSecret(bytes.NewReader(nil)); err == nil {
		t.Fatal("NewSecret from an empty reader succeeded")
	}
}

func TestLooksPrivate(t *testing.T) {
	for s, want := range map[string]bool{
		"hs://s000x": true, "hs://0000x": false, "hs://": false, "abcdesfghi": false, "": false,
	} {
		if LooksPrivate(s) != want {
			t.Errorf("LooksPrivate(%q) = %v", s, !want)
		}
	}
}

func TestRecordMarshal(t *testing.T) {
	// holesail-server: JSON.stringify({ host, udp, port })
	got := string(Record{Host: "127.0.0.1", Port: 8080}.Marshal())
	if want := `{"host":"127.0.0.1","udp":false,"port":8080}`; got != want {
		t.Fatalf("%s, want %s", got, want)
	}
	got = string(Record{Host: "127.0.0.1", Port: 8080, Keytunnel: "mux1"}.Marshal())
	if want := `{"host":"127.0.0.1","udp":false,"port":8080,"keytunnel":"mux1"}`; got != want {
		t.Fatalf("%s, want %s", got, want)
	}
}

func TestParseRecord(t *testing.T) {
	valid := map[string]Record{
		`{"host":"127.0.0.1","udp":false,"port":8080}`: {Host: "127.0.0.1", Port: 8080},
		`{"host":"127.0.0.1","port":8080}`:             {Host: "127.0.0.1", Port: 8080}, // udp undefined
		`{"host":"localhost","udp":true,"port":"53"}`:  {Host: "localhost", UDP: true, Port: 53},
		`{"port":1}`: {Port: 1},
		`{"host":"::1","port":65535,"extra":[1,2]}`:                 {Host: "::1", Port: 65535},
		`{"port":80,"keytunnel":"mux1"}`:                            {Port: 80, Keytunnel: "mux1"},
		`{"port":80,"keytunnel":1}`:                                 {Port: 80},
		`{"port":80,"keytunnel":"` + strings.Repeat("x", 33) + `"}`: {Port: 80},
	}
	for in, want := range valid {
		got, err := ParseRecord([]byte(in))
		if err != nil || got != want {
			t.Errorf("ParseRecord(%s) = %+v, %v; want %+v", in, got, err, want)
		}
	}
	for _, in := range []string{
		``, `null`, `[]`, `"x"`, `{}`, `{"port":0}`, `{"port":65536}`, `{"port":-1}`, `{"port":1.5}`,
		`{"port":"80x"}`, `{"port":"080"}`, `{"port":null}`, `{"port":true}`, `{"host":5,"port":80}`,
		`{"host":"a b","port":80}`, `{"udp":"yes","port":80}`, `{"port":80` + strings.Repeat(" ", MaxRecord) + `}`,
	} {
		if r, err := ParseRecord([]byte(in)); !errors.Is(err, ErrRecord) {
			t.Errorf("ParseRecord(%q) = %+v, %v; want ErrRecord", in, r, err)
		}
	}
}

func FuzzParse(f *testing.F) {
	seven := key.PublicKey(bytes.Repeat([]byte{7}, 32))
	for _, s := range []string{
		"hs://0000" + seven.Z32(), "hs://s000" + vecSecret, seven.Z32(), seven.String(), vecSeedZ32, vecSecret,
		"hs://", "hs://s000", "", "hs://0000" + seven.String(),
	} {
		f.Add(s, false)
		f.Add(s, true)
	}
	f.Fuzz(func(t *testing.T, s string, private bool) {
		c, err := Parse(s, private)
		if err != nil {
			if LooksPrivate(s) && len(s) > 12 && strings.Contains(err.Error(), s[9:]) {
				t.Fatalf("error %q repeats the secret", err)
			}
			return
		}
		if c.Private != (c.KeyPair.Public == c.PublicKey && !c.PublicKey.IsZero()) && c.Private {
			t.Fatalf("private Conn with key pair %s for %s", c.KeyPair.Public, c.PublicKey)
		}
		// What String writes parses back to the same service.
		again, err := Parse(c.String(), c.Form == FormSeed)
		if err != nil || again.PublicKey != c.PublicKey || again.Private != c.Private {
			t.Fatalf("%q -> %q -> %+v, %v", s, c.String(), again, err)
		}
	})
}

func FuzzParseRecord(f *testing.F) {
	f.Add(Record{Host: "127.0.0.1", Port: 8080}.Marshal())
	f.Add(Record{Host: "localhost", UDP: true, Port: 53}.Marshal())
	f.Add(Record{Host: "127.0.0.1", Port: 80, Keytunnel: "mux1"}.Marshal())
	f.Add([]byte(`{"host":"127.0.0.1","port":"8080"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := ParseRecord(b)
		if err != nil {
			return
		}
		again, err := ParseRecord(r.Marshal())
		if err != nil || again != r {
			t.Fatalf("%q -> %+v -> %+v, %v", b, r, again, err)
		}
	})
}

func TestSecretFile(t *testing.T) {
	dir := t.TempDir()
	c, _ := FromSecret(vecSecret)
	p := dir + "/s/x.secret"
	if err := WriteSecretFile(p, c); err != nil {
		t.Fatal(err)
	}
	if err := WriteSecretFile(p, c); err == nil {
		t.Fatal("WriteSecretFile overwrote a file")
	}
	got, err := ReadSecretFile(p)
	if err != nil || got.PublicKey != c.PublicKey || got.String() != c.String() {
		t.Fatalf("read back %+v, %v", got, err)
	}
	if err := WriteSecretFile(dir+"/pub", Public(c.PublicKey)); err == nil {
		t.Fatal("wrote a public string as a secret")
	}
	if err := os.Chmod(p, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadSecretFile(p); !errors.Is(err, key.ErrPermissions) {
		t.Fatalf("a world-readable secret file: %v", err)
	}
	big := dir + "/big"
	os.WriteFile(big, bytes.Repeat([]byte("a"), 5000), 0o600)
	if _, err := ReadSecretFile(big); !errors.Is(err, ErrSecretTooLong) {
		t.Fatalf("a 5000-byte secret file: %v", err)
	}
	seedFile := dir + "/seed"
	os.WriteFile(seedFile, []byte(vecSeedZ32+"\n"), 0o600)
	if got, err := ReadSecretFile(seedFile); err != nil || got.PublicKey != pk(t, vecSeedPub) {
		t.Fatalf("z32 seed file: %+v, %v", got, err)
	}
}
