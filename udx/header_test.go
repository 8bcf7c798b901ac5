package udx

import (
	"bytes"
	"encoding/hex"
	"strings"
	"testing"
)

func unhex(s string) []byte {
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		panic(err)
	}
	return b
}

// Worked examples from the fact sheet (§17).
func TestHeaderVectors(t *testing.T) {
	h := Header{Type: FlagData, ID: 0x01020304, RWnd: 4 << 20}
	got := AppendPacket(nil, &h, nil, []byte{0xaa, 0xbb, 0xcc})
	want := unhex("ff 01 01 00 04 03 02 01 00 00 40 00 00 00 00 00 00 00 00 00 aa bb cc")
	if !bytes.Equal(got, want) {
		t.Fatalf("DATA\n got %x\nwant %x", got, want)
	}

	h = Header{Type: FlagSACK, ID: 7, RWnd: 4 << 20, Seq: 7, Ack: 3}
	got = AppendPacket(nil, &h, []SACKBlock{{5, 7}, {9, 10}}, nil)
	want = unhex("ff 01 04 00 07 00 00 00 00 00 40 00 07 00 00 00 03 00 00 00 05 00 00 00 07 00 00 00 09 00 00 00 0a 00 00 00")
	if !bytes.Equal(got, want) {
		t.Fatalf("SACK\n got %x\nwant %x", got, want)
	}
	p, err := DecodePacket(got, nil)
	if err != nil || p.Seq != 7 || p.Ack != 3 || len(p.SACKs) != 2 || p.SACKs[1] != (SACKBlock{9, 10}) {
		t.Fatalf("decode SACK: %+v %v", p, err)
	}

	for typ, b := range map[uint8]byte{FlagHeartbeat: 0x20, FlagDestroy: 0x10, FlagMessage: 0x08, FlagEnd: 0x02, 0: 0} {
		h := Header{Type: typ}
		e := AppendPacket(nil, &h, nil, nil)
		if len(e) != HeaderSize || e[2] != b || e[3] != 0 {
			t.Fatalf("type %#x: %x", typ, e)
		}
	}

	// An MTU probe: 32 bytes of zero padding, announced in byte 3.
	h = Header{Type: FlagData, DataOffset: 32, ID: 9}
	e := AppendPacket(nil, &h, nil, []byte("xyz"))
	if e[3] != 32 || len(e) != HeaderSize+32+3 || !bytes.Equal(e[HeaderSize:HeaderSize+32], make([]byte, 32)) {
		t.Fatalf("probe: %x", e)
	}
	p, _ = DecodePacket(e, nil)
	if string(p.Payload) != "xyz" {
		t.Fatalf("probe payload %q", p.Payload)
	}
}

func TestDecodeRules(t *testing.T) {
	if _, err := DecodePacket([]byte{0xff, 0x01, 0}, nil); err != ErrNotUDX {
		t.Fatal("short packet accepted")
	}
	b := make([]byte, 20)
	b[0], b[1] = 0xff, 0x02
	if _, err := DecodePacket(b, nil); err != ErrNotUDX {
		t.Fatal("wrong version accepted")
	}
	// data_offset past the end: header kept (a HEARTBEAT is still
	// answered), the rest dropped.
	h := Header{Type: FlagHeartbeat, DataOffset: 5}
	e := AppendPacket(nil, &h, nil, nil)[:HeaderSize]
	p, err := DecodePacket(e, nil)
	if err != nil || !p.BadOffset || p.Type != FlagHeartbeat {
		t.Fatalf("%+v %v", p, err)
	}
	// SACK area bounded by data_offset when it lies inside the body.
	h = Header{Type: FlagSACK | FlagData, DataOffset: 8}
	e = AppendPacket(nil, &h, nil, nil)
	e = e[:HeaderSize]
	e = append(e, 1, 0, 0, 0, 2, 0, 0, 0, 'h', 'i')
	p, _ = DecodePacket(e, nil)
	if len(p.SACKs) != 1 || p.SACKs[0] != (SACKBlock{1, 2}) || string(p.Payload) != "hi" {
		t.Fatalf("%+v", p)
	}
	// A trailing partial block is ignored.
	h = Header{Type: FlagSACK}
	e = AppendPacket(nil, &h, []SACKBlock{{1, 2}}, []byte{1, 2, 3})
	p, _ = DecodePacket(e, nil)
	if len(p.SACKs) != 1 {
		t.Fatalf("%+v", p)
	}
	// Unknown bits are carried through.
	h = Header{Type: 0xC1}
	p, _ = DecodePacket(AppendPacket(nil, &h, nil, nil), nil)
	if p.Type != 0xC1 {
		t.Fatal(p.Type)
	}
}

func TestSeqArithmetic(t *testing.T) {
	if !seqLess(0xFFFFFFFF, 0) || seqLess(0, 0xFFFFFFFF) || seqDiff(2, 0xFFFFFFFE) != 4 {
		t.Fatal("wraparound")
	}
}

func FuzzDecodePacket(f *testing.F) {
	for _, typ := range []uint8{0, FlagData, FlagEnd, FlagData | FlagEnd, FlagSACK, FlagMessage, FlagDestroy, FlagHeartbeat} {
		h := Header{Type: typ, ID: 1, RWnd: 4 << 20, Seq: 5, Ack: 3}
		var sacks []SACKBlock
		if typ == FlagSACK {
			sacks = []SACKBlock{{4, 6}, {8, 9}}
		}
		f.Add(AppendPacket(nil, &h, sacks, []byte("payload")))
	}
	h := Header{Type: FlagData, DataOffset: 40}
	f.Add(AppendPacket(nil, &h, nil, []byte("probe")))
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := DecodePacket(b, nil)
		if err != nil {
			if isStreamPacket(b) {
				t.Fatal("stream packet rejected")
			}
			return
		}
		if p.BadOffset {
			return
		}
		if len(p.Payload) > len(b)-HeaderSize || len(p.SACKs)*8 > len(b)-HeaderSize {
			t.Fatal("out of bounds")
		}
		// Re-encoding the header reproduces the first 20 bytes.
		var hb [HeaderSize]byte
		p.Header.Put(hb[:])
		if !bytes.Equal(hb[:], b[:HeaderSize]) {
			t.Fatalf("header round trip %x vs %x", hb, b[:HeaderSize])
		}
		// Payload is the tail after data_offset.
		if !bytes.Equal(p.Payload, b[HeaderSize+int(p.DataOffset):]) {
			t.Fatal("payload")
		}
	})
}
