package local

import (
	"context"
	"os"
	"path/filepath"

	"github.com/berth-dev/berth/internal/netns"
	"github.com/berth-dev/berth/sandbox"
)

// EgressCAFile is the CA bundle's name in a sandbox's directory.
const EgressCAFile = "egress-ca.pem"

// AttachEgress starts a sandbox's egress proxy on its namespace, if it has
// one, and writes the CA bundle it gives into dir (read-only for the
// sandbox). It returns nil without a proxy.
func AttachEgress(ctx context.Context, px sandbox.EgressProxy, ns *netns.Namespace, dir string) (*sandbox.EgressAttachment, error) {
	if px == nil || ns == nil {
		return nil, nil
	}
	att, err := px.Attach(ctx, ns.Gateway, ns.Address)
	if err != nil {
		return nil, err
	}
	if att.CABundle != nil {
		if err := os.WriteFile(filepath.Join(dir, EgressCAFile), att.CABundle, 0o644); err != nil {
			att.Close()
			return nil, err
		}
	}
	return att, nil
}
