package image

import (
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
)

// PullRef is the reference a sandbox driver that pulls images itself
// (kube) runs im from: the repository im was last pulled from, pinned at
// its digest; "" for an image that came from no registry (a built-in
// "builtin:NAME", a loaded layout), which such a driver cannot pull.
func (im *Image) PullRef() string {
	if im == nil || im.Digest == "" || !strings.Contains(im.Ref, "/") {
		return ""
	}
	ref, err := name.ParseReference(im.Ref)
	if err != nil {
		return ""
	}
	return ref.Context().Name() + "@" + im.Digest
}
