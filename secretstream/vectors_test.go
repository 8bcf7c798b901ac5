package secretstream

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/blake2b"

	"github.com/keytunnel/keytunnel/internal/nodetest"
)

func TestNamespaces(t *testing.T) {
	base := blake2b.Sum256([]byte("hyperswarm/secret-stream"))
	for i, want := range [][32]byte{nsInitiator, nsResponder, nsSend} {
		if got := blake2b.Sum256(append(base[:], byte(i))); got != want {
			t.Errorf("NS[%d] = %x, want %x", i, got, want)
		}
	}
}

// The handshake hash of hyperdht.md §7's deterministic IK vector, with the
// stream ids listed there and the datagram keys of secretstream.md §3.
func TestStreamIDsAndDatagramKeys(t *testing.T) {
	var hash [HashSize]byte
	copy(hash[:], unhex(t, "784ae37b79e48c6b6dc8f6285b8c1c28d6c85c3a5b649bd2a20dd9db55725490d9a808de2f9cbabed302ff0aecfe48e4b9350ea1dbd6c9c498b52e9919aa826c"))
	check := func(name string, got [32]byte, want string) {
		t.Helper()
		if hex.EncodeToString(got[:]) != want {
			t.Errorf("%s = %x, want %s", name, got, want)
		}
	}
	check("stream id (initiator)", StreamID(&hash, true), "47d027e2659ddba537ec0cd13a976e5d976a2767a649d580ef3d86726a2fb8d4")
	check("stream id (responder)", StreamID(&hash, false), "a833bdadbe11070c6f93312c957bfd434c5b5cd3d104bf16ece16c5851bbd752")
	check("send key (initiator)", DatagramKey(&hash, true), "bc729510d00fc613263b86f0c8576cc50b1968c4d5928e7cec18e9c1cc13442e")
	check("send key (responder)", DatagramKey(&hash, false), "83deadf7febac0b1d42faf2a7be27c12bf4f0a142299da470ced33e7551e53de")
}

func TestDatagrams(t *testing.T) {
	var hash [HashSize]byte
	hash[0] = 1
	a, err := NewDatagrams(&hash, true, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := NewDatagrams(&hash, false, nil)
	start := a.counter
	env, err := a.Seal(nil, []byte("ping"))
	if err != nil {
		t.Fatal(err)
	}
	// Envelope layout: counter (incremented once, little-endian) ‖ MAC ‖ ct.
	want := start
	for i := range want {
		want[i]++
		if want[i] != 0 {
			break
		}
	}
	if len(env) != DatagramOverhead+4 || !bytes.Equal(env[:8], want[:]) {
		t.Fatalf("envelope % x (start % x)", env, start)
	}
	if m, ok := b.Open(nil, env); !ok || string(m) != "ping" {
		t.Fatalf("open: %q %v", m, ok)
	}
	if _, ok := a.Open(nil, env); ok {
		t.Fatal("a peer opened its own datagram (keys must differ by role)")
	}
	bad := append([]byte(nil), env...)
	bad[len(bad)-1] ^= 1
	for name, e := range map[string][]byte{"corrupt": bad, "short": env[:23], "empty": nil} {
		if _, ok := b.Open(nil, e); ok {
			t.Errorf("%s envelope accepted", name)
		}
	}
	// Exhaustion: the counter one step before coming back to its start.
	a.mu.Lock()
	a.counter = a.initial
	for i := range a.counter {
		a.counter[i]--
		if a.counter[i] != 0xff {
			break
		}
	}
	a.mu.Unlock()
	if _, err := a.Seal(nil, nil); err != ErrNonceExhausted {
		t.Fatalf("got %v, want ErrNonceExhausted", err)
	}
	if _, err := a.Seal(nil, nil); err != ErrNonceExhausted {
		t.Fatal("exhaustion is not sticky")
	}
}

type transcript struct {
	Key    string `json:"key"`
	Header string `json:"header"`
	Ops    []struct {
		M     string `json:"m,omitempty"`
		Tag   byte   `json:"tag"`
		C     string `json:"c,omitempty"`
		Rekey bool   `json:"rekey,omitempty"`
	} `json:"ops"`
}

// TestNodeTranscript: a stream pushed by libsodium (sodium-native), with all
// four tags, an explicit rekey and sizes around block boundaries, pulled by
// both Go paths; then the same plaintexts pushed by Go and pulled by
// libsodium.
func TestNodeTranscript(t *testing.T) {
	p := nodetest.Start(t, "secretstream-vectors.js", "push")
	var tr transcript
	if err := json.Unmarshal([]byte(p.Expect("transcript ", 20*time.Second)), &tr); err != nil {
		t.Fatal(err)
	}
	key := (*[KeySize]byte)(unhex(t, tr.Key))
	header := (*[HeaderSize]byte)(unhex(t, tr.Header))
	var ref, fast, push xstream
	ref.init(key, header)
	fast.init(key, header)
	push.init(key, header)
	n := 0
	for i, op := range tr.Ops {
		if op.Rekey {
			ref.rekey()
			fast.rekey()
			push.rekey()
			continue
		}
		c, m := unhex(t, op.C), unhex(t, op.M)
		got, tag, err := ref.pull(nil, c)
		if err != nil || tag != op.Tag || !bytes.Equal(got, m) {
			t.Fatalf("op %d: reference pull: tag %d err %v", i, tag, err)
		}
		got, tag, err = openFast(&fast, c)
		if err != nil || tag != op.Tag || !bytes.Equal(got, m) {
			t.Fatalf("op %d: fast pull: tag %d err %v", i, tag, err)
		}
		// Go's push with the same state and header reproduces libsodium.
		var out []byte
		if i%2 == 0 {
			out = push.push(nil, m, op.Tag)
		} else {
			out = sealFast(&push, m, op.Tag)
		}
		if !bytes.Equal(out, c) {
			t.Fatalf("op %d: Go push differs from libsodium", i)
		}
		n++
	}
	if n < 15 {
		t.Fatalf("only %d messages in the transcript", n)
	}

	// Go → libsodium, under a fresh key and header.
	var k2 [KeySize]byte
	var h2 [HeaderSize]byte
	copy(k2[:], bytes.Repeat([]byte{7}, 32))
	copy(h2[:], bytes.Repeat([]byte{9}, 24))
	var s xstream
	s.init(&k2, &h2)
	var sb strings.Builder
	fmt.Fprintf(&sb, `transcript {"key":"%x","header":"%x","ops":[`, k2, h2)
	var want []string
	for i, size := range []int{0, 3, 16, 24, 33, 1000, 65536, 100003} {
		m := bytes.Repeat([]byte{byte(i + 1)}, size)
		tag := byte(i % 4)
		var c []byte
		if i%2 == 0 {
			c = sealFast(&s, m, tag)
		} else {
			c = s.push(nil, m, tag)
		}
		if i > 0 {
			sb.WriteString(",")
		}
		fmt.Fprintf(&sb, `{"c":"%x"}`, c)
		if i == 3 {
			s.rekey()
			sb.WriteString(`,{"rekey":true}`)
		}
		want = append(want, fmt.Sprintf(`{"m":"%x","tag":%d}`, m, tag))
	}
	sb.WriteString("]}\n")
	q := nodetest.Start(t, "secretstream-vectors.js", "pull")
	if _, err := q.Stdin().Write([]byte(sb.String())); err != nil {
		t.Fatal(err)
	}
	q.Stdin().Close()
	got := q.Expect("result ", 20*time.Second)
	if w := "[" + strings.Join(want, ",") + "]"; got != w {
		t.Fatalf("libsodium pulled %.300s…, want %.300s…", got, w)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	q.Wait(ctx)
}
