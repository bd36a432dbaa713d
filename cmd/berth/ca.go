package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"

	"github.com/berth-dev/berth/edge/certs"
	"github.com/berth-dev/berth/server"
)

const caUsage = `Usage: berth ca COMMAND [--data-dir DIR]

Berth's local certificate authority signs the HTTPS certificates of --tls
internal (the default). Clients trust Berth once they trust its root.

Commands:
  export   print the root certificate (PEM); no running server needed
  trust    install the root into the system store (Debian/Ubuntu:
           /usr/local/share/ca-certificates + update-ca-certificates; needs root)
           and print how to point Node, Python and Go clients at it`

// systemCertDir is where Debian's update-ca-certificates picks up local CAs.
const systemCertDir = "/usr/local/share/ca-certificates"

func runCA(ctx context.Context, args []string) error {
	return caCommand(ctx, args, os.Stdout, systemCertDir, updateCACertificates)
}

// caCommand is runCA with its outputs and the system store as parameters.
func caCommand(ctx context.Context, args []string, out io.Writer, certDir string, update func(context.Context) error) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprintln(out, caUsage)
		return nil
	}
	sub, args := args[0], args[1:]
	fs := flag.NewFlagSet("ca "+sub, flag.ContinueOnError)
	dataDir := fs.String("data-dir", server.DefaultDataDir(), "the server's data directory [$BERTH_DATA_DIR]")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 0 {
		return usageError(fmt.Sprintf("ca %s takes no arguments\n\n%s", sub, caUsage))
	}
	switch sub {
	case "export":
		pem, err := certs.ReadRootPEM(*dataDir)
		if err != nil {
			return err
		}
		_, err = out.Write(pem)
		return err
	case "trust":
		return caTrust(ctx, out, *dataDir, certDir, update)
	}
	return usageError(fmt.Sprintf("unknown ca command %q\n\n%s", sub, caUsage))
}

func caTrust(ctx context.Context, out io.Writer, dataDir, certDir string, update func(context.Context) error) error {
	pem, err := certs.ReadRootPEM(dataDir)
	if err != nil {
		return err
	}
	root, err := filepath.Abs(certs.RootCertPath(dataDir))
	if err != nil {
		return err
	}
	if st, err := os.Stat(certDir); err != nil || !st.IsDir() {
		return fmt.Errorf("no %s here (not Debian or Ubuntu?): add %s to the system's trust store by hand", certDir, root)
	}
	dest := filepath.Join(certDir, "berth-root.crt")
	if err := os.WriteFile(dest, pem, 0o644); err != nil {
		if errors.Is(err, os.ErrPermission) {
			return fmt.Errorf("cannot write %s: run berth ca trust as root (sudo)", dest)
		}
		return err
	}
	if err := update(ctx); err != nil {
		return fmt.Errorf("%s written, but update-ca-certificates failed: %w", dest, err)
	}
	fmt.Fprintf(out, `Berth's root is now trusted system-wide (%s).

Clients that do not read the system store:
  Node:    export NODE_EXTRA_CA_CERTS=%s
           (Node 23.8+ can also use: node --use-system-ca)
  Python:  export SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
           export REQUESTS_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt   (requests, httpx use certifi otherwise)
  Go:      reads the system store; on another machine: export SSL_CERT_FILE=%s
  curl:    reads the system store; elsewhere: curl --cacert %s
`, dest, dest, root, root)
	return nil
}

// updateCACertificates rebuilds the system bundle (/etc/ssl/certs).
func updateCACertificates(ctx context.Context) error {
	cmd := exec.CommandContext(ctx, "update-ca-certificates")
	b, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%w: %s", err, b)
	}
	return nil
}
