// Command tlogcheck verifies what the dlog binary produced with the Go
// team's own transparency-log code (golang.org/x/mod/sumdb/note and
// golang.org/x/mod/sumdb/tlog), which fixes the tree to RFC 6962 SHA-256.
// It is a test oracle: DLog's tests run it on receipts, checkpoints and
// consistency proofs of sha256 logs.
//
// Usage:
//
//	tlogcheck receipt [-quorum N] -vkey VKEY [-vkey VKEY...] FILE.tlog-proof
//	tlogcheck note -vkey VKEY [-vkey VKEY...] CHECKPOINT-NOTE-FILE
//	tlogcheck consistency -vkey VKEY... OLD-NOTE NEW-NOTE PROOF.json
//	tlogcheck consistency -vkey VKEY... PROOF.json
//	tlogcheck tiles -vkey VKEY... DIR
//
// With PROOF.json alone, the two checkpoints are the notes the JSON names
// (old_checkpoint, new_checkpoint).
//
// tiles rebuilds the tree from the C2SP entry bundles with tlog's own
// StoredHashes (trusting no hash tile), checks the root against the signed
// checkpoint, and every hash tile against the rebuilt tree.
//
// Every given key must have signed, or -quorum N of them.
//
// Exit status 0: verified; 1: verification failed; 2: bad usage or input.
package main

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

type vkeys []string

func (v *vkeys) String() string     { return strings.Join(*v, ",") }
func (v *vkeys) Set(s string) error { *v = append(*v, s); return nil }

// checkpoint is a verified C2SP checkpoint body.
type checkpoint struct {
	origin string
	size   int64
	root   tlog.Hash
}

func fail(code int, format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "tlogcheck: "+format+"\n", args...)
	os.Exit(code)
}

// quorum is how many of the given keys must have signed (0: all).
var quorum int

// openNote verifies a signed note under the keys given: all of them, or
// -quorum of them, must have signed it (note.Open alone accepts a note
// once one known key signed it).
func openNote(msg []byte, keys []string) (*checkpoint, error) {
	var verifiers []note.Verifier
	for _, k := range keys {
		v, err := note.NewVerifier(k)
		if err != nil {
			return nil, fmt.Errorf("vkey %q: %v", k, err)
		}
		verifiers = append(verifiers, v)
	}
	n, err := note.Open(msg, note.VerifierList(verifiers...))
	if err != nil {
		return nil, err
	}
	signed := map[string]bool{}
	for _, s := range n.Sigs {
		signed[fmt.Sprintf("%s+%08x", s.Name, s.Hash)] = true
	}
	need := len(verifiers)
	if quorum > 0 {
		need = quorum
	}
	have := 0
	var missing []string
	for _, v := range verifiers {
		if signed[fmt.Sprintf("%s+%08x", v.Name(), v.KeyHash())] {
			have++
		} else {
			missing = append(missing, v.Name())
		}
	}
	if have < need {
		return nil, fmt.Errorf("%d of %d required signatures (missing %s)", have, need, strings.Join(missing, ", "))
	}
	lines := strings.Split(n.Text, "\n")
	if len(lines) < 4 {
		return nil, errors.New("checkpoint body has fewer than three lines")
	}
	size, err := strconv.ParseInt(lines[1], 10, 64)
	if err != nil || size < 0 {
		return nil, fmt.Errorf("bad tree size %q", lines[1])
	}
	root, err := base64.StdEncoding.DecodeString(lines[2])
	if err != nil || len(root) != tlog.HashSize {
		return nil, fmt.Errorf("bad root hash %q", lines[2])
	}
	var h tlog.Hash
	copy(h[:], root)
	return &checkpoint{origin: lines[0], size: size, root: h}, nil
}

func hash(s string) (tlog.Hash, error) {
	var h tlog.Hash
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil || len(b) != tlog.HashSize {
		return h, fmt.Errorf("bad hash %q", s)
	}
	copy(h[:], b)
	return h, nil
}

// receipt checks a c2sp.org/tlog-proof@v1 file whose extra data is the
// canonical entry: the leaf is tlog.RecordHash(entry).
func receipt(path string, keys []string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		fail(2, "%v", err)
	}
	head, cp, ok := bytes.Cut(data, []byte("\n\n"))
	if !ok {
		fail(2, "%s: no blank line before the checkpoint", path)
	}
	sc := bufio.NewScanner(bytes.NewReader(head))
	var entry []byte
	index := int64(-1)
	var proof tlog.RecordProof
	line := 0
	for sc.Scan() {
		t := sc.Text()
		line++
		switch {
		case line == 1:
			if t != "c2sp.org/tlog-proof@v1" {
				fail(2, "%s: not a tlog-proof@v1 file", path)
			}
		case strings.HasPrefix(t, "extra "):
			entry, err = base64.StdEncoding.DecodeString(strings.TrimPrefix(t, "extra "))
			if err != nil {
				fail(2, "%s: extra: %v", path, err)
			}
		case strings.HasPrefix(t, "index "):
			index, err = strconv.ParseInt(strings.TrimPrefix(t, "index "), 10, 64)
			if err != nil {
				fail(2, "%s: index: %v", path, err)
			}
		default:
			h, err := hash(t)
			if err != nil {
				fail(2, "%s: line %d: %v", path, line, err)
			}
			proof = append(proof, h)
		}
	}
	if entry == nil || index < 0 {
		fail(2, "%s: no entry (extra) or no index", path)
	}
	c, err := openNote(cp, keys)
	if err != nil {
		return fmt.Errorf("checkpoint: %v", err)
	}
	leaf := tlog.RecordHash(entry)
	if err := tlog.CheckRecord(proof, c.size, c.root, index, leaf); err != nil {
		return fmt.Errorf("entry %d in tree %d: %v", index, c.size, err)
	}
	fmt.Printf("ok: entry %d of %s is in the tree of size %d\n", index, c.origin, c.size)
	return nil
}

type consistencyJSON struct {
	OldSize int64    `json:"old_size"`
	NewSize int64    `json:"new_size"`
	OldRoot string   `json:"old_root"`
	NewRoot string   `json:"new_root"`
	Proof   []string `json:"proof"`
	OldNote *string  `json:"old_checkpoint"`
	NewNote *string  `json:"new_checkpoint"`
}

// consistency checks a consistency proof between two signed checkpoints:
// the files given, or (paths empty) the notes the proof JSON names.
func consistency(oldPath, newPath, proofPath string, keys []string) error {
	read := func(p string) []byte {
		b, err := os.ReadFile(p)
		if err != nil {
			fail(2, "%v", err)
		}
		return b
	}
	var j consistencyJSON
	if err := json.Unmarshal(read(proofPath), &j); err != nil {
		fail(2, "%s: %v", proofPath, err)
	}
	var oldNote, newNote []byte
	if oldPath == "" {
		if j.OldNote == nil || j.NewNote == nil {
			return errors.New("the proof names no old_checkpoint or no new_checkpoint")
		}
		oldNote, newNote = []byte(*j.OldNote), []byte(*j.NewNote)
	} else {
		oldNote, newNote = read(oldPath), read(newPath)
	}
	old, err := openNote(oldNote, keys)
	if err != nil {
		return fmt.Errorf("old checkpoint: %v", err)
	}
	cur, err := openNote(newNote, keys)
	if err != nil {
		return fmt.Errorf("new checkpoint: %v", err)
	}
	if j.OldSize != old.size || j.NewSize != cur.size {
		return fmt.Errorf("proof is %d -> %d, checkpoints are %d and %d", j.OldSize, j.NewSize, old.size, cur.size)
	}
	var proof tlog.TreeProof
	for _, s := range j.Proof {
		h, err := hash(s)
		if err != nil {
			fail(2, "%s: %v", proofPath, err)
		}
		proof = append(proof, h)
	}
	if err := tlog.CheckTree(proof, cur.size, cur.root, old.size, old.root); err != nil {
		return fmt.Errorf("tree %d -> %d: %v", old.size, cur.size, err)
	}
	fmt.Printf("ok: the tree of size %d extends the tree of size %d\n", cur.size, old.size)
	return nil
}

// tilePath is the C2SP tlog-tiles path of tile (level, index, width);
// level -1 is the entry bundle.
func tilePath(level int, index int64, width int) string {
	var groups []string
	n := index
	groups = append(groups, fmt.Sprintf("%03d", n%1000))
	for n /= 1000; n > 0; n /= 1000 {
		groups = append([]string{fmt.Sprintf("x%03d", n%1000)}, groups...)
	}
	l := strconv.Itoa(level)
	if level < 0 {
		l = "entries"
	}
	p := "tile/" + l + "/" + strings.Join(groups, "/")
	if width < 256 {
		p += fmt.Sprintf(".p/%d", width)
	}
	return p
}

func tiles(dir string, keys []string) error {
	note, err := os.ReadFile(dir + "/checkpoint")
	if err != nil {
		fail(2, "%v", err)
	}
	c, err := openNote(note, keys)
	if err != nil {
		return fmt.Errorf("checkpoint: %v", err)
	}
	var stored []tlog.Hash
	reader := tlog.HashReaderFunc(func(idx []int64) ([]tlog.Hash, error) {
		out := make([]tlog.Hash, len(idx))
		for i, x := range idx {
			if x < 0 || x >= int64(len(stored)) {
				return nil, fmt.Errorf("no stored hash %d", x)
			}
			out[i] = stored[x]
		}
		return out, nil
	})
	for n := int64(0); n*256 < c.size; n++ {
		w := c.size - n*256
		if w > 256 {
			w = 256
		}
		p := tilePath(-1, n, int(w))
		b, err := os.ReadFile(dir + "/" + p)
		if err != nil {
			return fmt.Errorf("%s: %v", p, err)
		}
		for j := int64(0); j < w; j++ {
			if len(b) < 2 {
				return fmt.Errorf("%s: cut short at entry %d", p, j)
			}
			l := int(b[0])<<8 | int(b[1])
			if len(b) < 2+l {
				return fmt.Errorf("%s: entry %d cut short", p, j)
			}
			hs, err := tlog.StoredHashes(n*256+j, b[2:2+l], reader)
			if err != nil {
				return err
			}
			stored = append(stored, hs...)
			b = b[2+l:]
		}
		if len(b) != 0 {
			return fmt.Errorf("%s: %d bytes after its %d entries", p, len(b), w)
		}
	}
	root, err := tlog.TreeHash(c.size, reader)
	if err != nil {
		return err
	}
	if root != c.root {
		return fmt.Errorf("the entries hash to %v, the checkpoint says %v", root, c.root)
	}
	files := 0
	for level := 0; c.size>>(8*uint(level)) > 0; level++ {
		nodes := c.size >> (8 * uint(level))
		for n := int64(0); n*256 < nodes; n++ {
			w := nodes - n*256
			if w > 256 {
				w = 256
			}
			p := tilePath(level, n, int(w))
			b, err := os.ReadFile(dir + "/" + p)
			if err != nil {
				return fmt.Errorf("%s: %v", p, err)
			}
			if int64(len(b)) != w*tlog.HashSize {
				return fmt.Errorf("%s: %d bytes, want %d", p, len(b), w*tlog.HashSize)
			}
			for j := int64(0); j < w; j++ {
				want := stored[tlog.StoredHashIndex(8*level, n*256+j)]
				if !bytes.Equal(b[j*32:(j+1)*32], want[:]) {
					return fmt.Errorf("%s: hash %d differs from the tree the entries give", p, j)
				}
			}
			files++
		}
	}
	fmt.Printf("ok: %d hash tiles and the entries of %s rebuild its tree of size %d\n", files, c.origin, c.size)
	return nil
}

func main() {
	if len(os.Args) < 2 {
		fail(2, "usage: tlogcheck receipt|note|consistency -vkey VKEY... FILES")
	}
	fs := flag.NewFlagSet(os.Args[1], flag.ExitOnError)
	var keys vkeys
	fs.Var(&keys, "vkey", "a verifier key that must have signed (repeatable)")
	fs.IntVar(&quorum, "quorum", 0, "how many of the keys must have signed (default: all)")
	fs.Parse(os.Args[2:])
	if len(keys) == 0 {
		fail(2, "at least one -vkey")
	}
	var err error
	switch os.Args[1] {
	case "receipt":
		if fs.NArg() != 1 {
			fail(2, "receipt: one file")
		}
		err = receipt(fs.Arg(0), keys)
	case "note":
		if fs.NArg() != 1 {
			fail(2, "note: one file")
		}
		b, rerr := os.ReadFile(fs.Arg(0))
		if rerr != nil {
			fail(2, "%v", rerr)
		}
		var c *checkpoint
		if c, err = openNote(b, keys); err == nil {
			fmt.Printf("ok: checkpoint of %s at size %d\n", c.origin, c.size)
		}
	case "consistency":
		switch fs.NArg() {
		case 3:
			err = consistency(fs.Arg(0), fs.Arg(1), fs.Arg(2), keys)
		case 1:
			err = consistency("", "", fs.Arg(0), keys)
		default:
			fail(2, "consistency: [OLD-NOTE NEW-NOTE] PROOF.json")
		}
	case "tiles":
		if fs.NArg() != 1 {
			fail(2, "tiles: DIR")
		}
		err = tiles(fs.Arg(0), keys)
	default:
		fail(2, "unknown command %q", os.Args[1])
	}
	if err != nil {
		fail(1, "%v", err)
	}
}
