package staticimage_test

import (
	"archive/tar"
	"io"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/mutate"

	"github.com/berth-dev/berth/internal/staticimage"
)

func TestBuild(t *testing.T) {
	o := staticimage.Options{
		Files:      []staticimage.File{{Path: "/usr/bin/x", Data: []byte("x")}, {Path: "/berth", Data: []byte("b"), Mode: 0o700}},
		Entrypoint: []string{"/berth"},
		User:       "65534",
	}
	img, err := staticimage.Build(o)
	if err != nil {
		t.Fatal(err)
	}
	again, err := staticimage.Build(o)
	if err != nil {
		t.Fatal(err)
	}
	d1, _ := img.Digest()
	d2, _ := again.Digest()
	if d1 != d2 {
		t.Errorf("same files, different digests %s %s", d1, d2)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cf.OS != "linux" || cf.Architecture != "amd64" || len(cf.Config.Entrypoint) != 1 ||
		cf.Config.Entrypoint[0] != "/berth" || cf.Config.User != "65534" {
		t.Errorf("config = %+v %+v", cf.Platform(), cf.Config)
	}
	got := map[string]int64{}
	tr := tar.NewReader(mutate.Extract(img))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		got[h.Name] = h.Mode
	}
	want := map[string]int64{"berth": 0o700, "usr": 0o755, "usr/bin": 0o755, "usr/bin/x": 0o755}
	if len(got) != len(want) {
		t.Errorf("entries %v, want %v", got, want)
	}
	for n, m := range want {
		if got[n] != m {
			t.Errorf("%s: mode %o, want %o (entries %v)", n, got[n], m, got)
		}
	}
}

func TestBuildRejects(t *testing.T) {
	tests := []struct {
		name  string
		files []staticimage.File
	}{
		{"no files", nil},
		{"relative", []staticimage.File{{Path: "berth"}}},
		{"unclean", []staticimage.File{{Path: "/a/../berth"}}},
		{"missing source", []staticimage.File{{Path: "/berth", Source: "/nonexistent/berth"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := staticimage.Build(staticimage.Options{Files: tt.files}); err == nil {
				t.Fatal("no error")
			}
		})
	}
}
