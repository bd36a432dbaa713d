// Command image builds an image of static files on an empty base and pushes
// it to a loopback registry (internal/staticimage); scripts/kube/up.sh and
// scripts/kube/berth-image.sh use it:
//
//	image -ref 127.0.0.1:5000/berth:dev -file /berth=.bin/berth-static -entrypoint /berth
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/berth-dev/berth/internal/staticimage"
)

type fileFlags []staticimage.File

func (f *fileFlags) String() string { return fmt.Sprint(len(*f)) }

func (f *fileFlags) Set(v string) error {
	p, src, ok := strings.Cut(v, "=")
	if !ok {
		return fmt.Errorf("-file wants /path/in/image=host/file, got %q", v)
	}
	*f = append(*f, staticimage.File{Path: p, Source: src})
	return nil
}

func main() {
	var files fileFlags
	ref := flag.String("ref", "", "image reference to push to (required)")
	entry := flag.String("entrypoint", "", "entrypoint, words separated by spaces")
	user := flag.String("user", "", "the config's user")
	flag.Var(&files, "file", "/path/in/image=host/file (repeatable)")
	flag.Parse()
	if err := run(*ref, *entry, *user, files); err != nil {
		fmt.Fprintln(os.Stderr, "image:", err)
		os.Exit(1)
	}
}

func run(ref, entry, user string, files []staticimage.File) error {
	if ref == "" {
		return fmt.Errorf("-ref is required")
	}
	img, err := staticimage.Build(staticimage.Options{Files: files, Entrypoint: strings.Fields(entry), User: user})
	if err != nil {
		return err
	}
	d, err := staticimage.Push(context.Background(), img, ref)
	if err != nil {
		return err
	}
	fmt.Println(d)
	return nil
}
