// Command imagebuild writes an OCI image layout from a rootfs tarball; see
// package internal/imagebuild. scripts/images.sh runs it with go run.
//
//	go run ./scripts/imagebuild -rootfs ROOTFS.tar -out DIR [-name N]
//	   [-env K=V]… [-workdir DIR] [-user U] [-cmd ARG]… [-description TEXT]
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"time"

	"github.com/berth-dev/berth/internal/imagebuild"
)

type list []string

func (l *list) String() string     { return strings.Join(*l, ",") }
func (l *list) Set(s string) error { *l = append(*l, s); return nil }

func main() {
	var o imagebuild.Options
	var env, cmd list
	var desc string
	flag.StringVar(&o.Name, "name", "", "the image's name (layout annotation)")
	flag.StringVar(&o.RootfsTar, "rootfs", "", "the root file system, an uncompressed tar")
	flag.StringVar(&o.Out, "out", "", "the OCI layout directory to create")
	flag.StringVar(&o.Config.WorkingDir, "workdir", "", "WorkingDir")
	flag.StringVar(&o.Config.User, "user", "", "User")
	flag.StringVar(&desc, "description", "", "org.opencontainers.image.description label")
	flag.Var(&env, "env", "an Env entry K=V (repeatable)")
	flag.Var(&cmd, "cmd", "a Cmd argument (repeatable)")
	flag.Parse()
	if o.RootfsTar == "" || o.Out == "" || flag.NArg() > 0 {
		fmt.Fprintln(os.Stderr, "usage: imagebuild -rootfs ROOTFS.tar -out DIR [-name N] [-env K=V]… [-workdir D] [-user U] [-cmd ARG]…")
		os.Exit(2)
	}
	o.Config.Env, o.Config.Cmd = env, cmd
	o.Config.Labels = map[string]string{"org.opencontainers.image.title": o.Name}
	if desc != "" {
		o.Config.Labels["org.opencontainers.image.description"] = desc
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	start := time.Now()
	r, err := imagebuild.Build(ctx, o)
	if err != nil {
		fmt.Fprintln(os.Stderr, "imagebuild:", err)
		os.Exit(1)
	}
	fmt.Printf("%s: %s, 1 layer (%d entries, %.1f MB gzip), %s\n", o.Out, r.Digest, r.Entries,
		float64(r.LayerBytes)/1e6, time.Since(start).Round(100*time.Millisecond))
}
