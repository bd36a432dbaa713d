package server

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"

	"github.com/berth-dev/berth/image"
	"github.com/berth-dev/berth/pool"
)

// builtinImages resolves pool images: "builtin:NAME" is the OCI layout
// Options.BuiltinImages names, loaded into the store (once per run, then
// found by digest); any other reference is pulled.
func builtinImages(images *image.Store, layouts map[string]string) pool.ResolveImage {
	var mu sync.Mutex
	loaded := map[string]*image.Image{}
	return func(ctx context.Context, ref string) (*image.Image, error) {
		name, ok := strings.CutPrefix(ref, pool.BuiltinPrefix)
		if !ok {
			return images.Pull(ctx, ref, image.PullOptions{})
		}
		mu.Lock()
		im := loaded[name]
		mu.Unlock()
		if im != nil {
			return im, nil
		}
		dir, ok := layouts[name]
		if !ok {
			names := make([]string, 0, len(layouts))
			for n := range layouts {
				names = append(names, pool.BuiltinPrefix+n)
			}
			sort.Strings(names)
			return nil, fmt.Errorf("no built-in image %q on this server (it has %v; berth up --builtin-image NAME=OCI_LAYOUT_DIR adds one, scripts/images.sh builds them)", name, names)
		}
		// Concurrent loads of one layout are one unpack: the store
		// installs a digest once.
		im, err := images.Load(ctx, dir, "berth.local/builtin/"+name+":latest")
		if err != nil {
			return nil, err
		}
		mu.Lock()
		loaded[name] = im
		mu.Unlock()
		return im, nil
	}
}
