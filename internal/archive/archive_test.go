package archive

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
)

type entry struct {
	h    tar.Header
	body string
}

func tgz(t *testing.T, entries ...entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	for _, e := range entries {
		h := e.h
		if h.Typeflag == tar.TypeReg {
			h.Size = int64(len(e.body))
		}
		if h.Mode == 0 {
			h.Mode = 0o644
		}
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatal(err)
		}
		if e.body != "" {
			if _, err := tw.Write([]byte(e.body)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func file(name, body string) entry {
	return entry{h: tar.Header{Name: name, Typeflag: tar.TypeReg}, body: body}
}

func dirE(name string) entry {
	return entry{h: tar.Header{Name: name, Typeflag: tar.TypeDir, Mode: 0o755}}
}

func symlink(name, target string) entry {
	return entry{h: tar.Header{Name: name, Typeflag: tar.TypeSymlink, Linkname: target}}
}

// TestUnpackHostile: every hostile archive is refused with an error that
// names the entry and the rule, and nothing lands outside the target.
func TestUnpackHostile(t *testing.T) {
	for _, tc := range []struct {
		name    string
		entries []entry
		want    string
	}{
		{"dotdot", []entry{file("../escaped", "x")}, "leaves the archive's root"},
		{"dotdot deep", []entry{dirE("a/"), file("a/../../escaped", "x")}, "leaves the archive's root"},
		{"absolute", []entry{file("/tmp/escaped", "x")}, "absolute name"},
		{"symlink escape then write", []entry{symlink("out", "OUTSIDE"), file("out/escaped", "x")}, "escapes"},
		{"relative symlink escape then write", []entry{symlink("out", "../"), file("out/escaped", "x")}, "escapes"},
		{"symlink then write to it", []entry{symlink("f", "OUTSIDE/escaped"), file("f", "x")}, "appears twice"},
		{"hard link outside", []entry{{h: tar.Header{Name: "h", Typeflag: tar.TypeLink, Linkname: "../../etc/passwd"}}}, "outside the archive"},
		{"hard link absolute", []entry{{h: tar.Header{Name: "h", Typeflag: tar.TypeLink, Linkname: "/etc/passwd"}}}, "outside the archive"},
		{"hard link via symlink", []entry{symlink("s", "OUTSIDE/escaped"), {h: tar.Header{Name: "h", Typeflag: tar.TypeLink, Linkname: "s"}}}, "not an earlier file"},
		{"char device", []entry{{h: tar.Header{Name: "null", Typeflag: tar.TypeChar, Devmajor: 1, Devminor: 3}}}, "device node"},
		{"block device", []entry{{h: tar.Header{Name: "sda", Typeflag: tar.TypeBlock, Devmajor: 8}}}, "device node"},
		{"fifo", []entry{{h: tar.Header{Name: "p", Typeflag: tar.TypeFifo}}}, "FIFO"},
		{"setuid", []entry{{h: tar.Header{Name: "su", Typeflag: tar.TypeReg, Mode: 0o4755}, body: "#!/bin/sh\n"}}, "setuid"},
		{"setgid dir", []entry{{h: tar.Header{Name: "d/", Typeflag: tar.TypeDir, Mode: 0o2755}}}, "setuid, setgid"},
		{"duplicate", []entry{file("a", "1"), file("a", "2")}, "appears twice"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			base := t.TempDir()
			outside := filepath.Join(base, "OUTSIDE")
			if err := os.Mkdir(outside, 0o755); err != nil {
				t.Fatal(err)
			}
			// The target sits two levels down, so that "../" and "../../"
			// would land in base, where they are looked for.
			dst := filepath.Join(base, "x", "dst")
			if err := os.MkdirAll(dst, 0o755); err != nil {
				t.Fatal(err)
			}
			// A symlink to OUTSIDE by absolute path, as an attacker would
			// write it.
			for i := range tc.entries {
				if tc.entries[i].h.Linkname == "OUTSIDE" || strings.HasPrefix(tc.entries[i].h.Linkname, "OUTSIDE/") {
					tc.entries[i].h.Linkname = filepath.Join(base, tc.entries[i].h.Linkname)
				}
			}
			_, err := Unpack(context.Background(), bytes.NewReader(tgz(t, tc.entries...)), dst, Owner{UID: os.Getuid(), GID: os.Getgid()}, Limits{})
			var ae *Error
			if !errors.As(err, &ae) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Unpack: %v, want an archive error with %q", err, tc.want)
			}
			if _, cerr := Check(context.Background(), bytes.NewReader(tgz(t, tc.entries...)), Limits{}); cerr == nil && !strings.Contains(tc.name, "escape") && !strings.Contains(tc.name, "via symlink") {
				t.Errorf("Check accepted what Unpack refused")
			}
			for _, p := range []string{filepath.Join(base, "escaped"), filepath.Join(base, "x", "escaped"), filepath.Join(outside, "escaped"), "/tmp/escaped"} {
				if _, err := os.Lstat(p); err == nil {
					t.Errorf("%s was written outside the target", p)
				}
			}
		})
	}
}

// TestUnpackLimits: too many bytes or entries are refused.
func TestUnpackLimits(t *testing.T) {
	data := tgz(t, file("a", strings.Repeat("x", 1000)), file("b", strings.Repeat("x", 1000)))
	if _, err := Check(context.Background(), bytes.NewReader(data), Limits{MaxBytes: 1500}); err == nil || !strings.Contains(err.Error(), "more than 1500 bytes") {
		t.Errorf("byte limit: %v", err)
	}
	if _, err := Check(context.Background(), bytes.NewReader(data), Limits{MaxEntries: 1}); err == nil || !strings.Contains(err.Error(), "more than 1 entries") {
		t.Errorf("entry limit: %v", err)
	}
	if _, err := Check(context.Background(), strings.NewReader("not gzip"), Limits{}); err == nil || !strings.Contains(err.Error(), "not a gzipped tar") {
		t.Errorf("garbage: %v", err)
	}
}

// TestPackUnpack: a tree packs and unpacks to the same files, links and
// (owner's) modes; special files and ignored ones are skipped; packing
// twice gives the same bytes.
func TestPackUnpack(t *testing.T) {
	src := t.TempDir()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(src, "sub", "deep"), 0o755))
	must(os.MkdirAll(filepath.Join(src, "node_modules", "x"), 0o755))
	must(os.WriteFile(filepath.Join(src, "run.sh"), []byte("#!/bin/sh\necho hi\n"), 0o755))
	must(os.WriteFile(filepath.Join(src, "sub", "deep", "data.txt"), []byte("data"), 0o600))
	must(os.WriteFile(filepath.Join(src, "node_modules", "x", "big.js"), []byte("ignored"), 0o644))
	must(os.WriteFile(filepath.Join(src, "secret.env"), []byte("ignored"), 0o644))
	must(os.WriteFile(filepath.Join(src, IgnoreFile), []byte("# comment\nnode_modules/\n*.env\n"), 0o644))
	must(os.Symlink("sub/deep/data.txt", filepath.Join(src, "link")))
	must(os.Symlink("/etc/shadow", filepath.Join(src, "shadow")))
	must(syscallMkfifo(filepath.Join(src, "fifo")))

	var a, b bytes.Buffer
	var skipped []string
	must(Pack(context.Background(), &a, src, PackOptions{Skipped: func(rel, why string) { skipped = append(skipped, rel+": "+why) }}))
	must(Pack(context.Background(), &b, src, PackOptions{}))
	if !bytes.Equal(a.Bytes(), b.Bytes()) {
		t.Error("two packs of one tree differ")
	}
	if len(skipped) != 1 || !strings.Contains(skipped[0], "fifo: a p") {
		t.Errorf("skipped %q, want the fifo", skipped)
	}
	dst := t.TempDir()
	st, err := Unpack(context.Background(), bytes.NewReader(a.Bytes()), dst, Owner{UID: os.Getuid(), GID: os.Getgid()}, Limits{})
	must(err)
	var got []string
	must(filepath.WalkDir(dst, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == dst {
			return err
		}
		info, _ := d.Info()
		rel, _ := filepath.Rel(dst, p)
		got = append(got, rel+" "+info.Mode().String())
		return nil
	}))
	want := []string{IgnoreFile + " -rw-------", "link Lrwxrwxrwx", "run.sh -rwx------", "shadow Lrwxrwxrwx",
		"sub drwx------", "sub/deep drwx------", "sub/deep/data.txt -rw-------"}
	if !slices.Equal(got, want) {
		t.Errorf("unpacked:\n%q\nwant\n%q", got, want)
	}
	if st.Entries != len(want) {
		t.Errorf("stats %+v", st)
	}
	if l, _ := os.Readlink(filepath.Join(dst, "shadow")); l != "/etc/shadow" {
		t.Errorf("shadow link: %q", l)
	}
}

func syscallMkfifo(p string) error { return syscall.Mkfifo(p, 0o644) }
