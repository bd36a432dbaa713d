package pool

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/berth-dev/berth/image"
	"github.com/berth-dev/berth/sandbox"
)

// BuiltinPrefix names Berth's built-in images: "builtin:python",
// "builtin:shell" (see ResolveImage).
const BuiltinPrefix = "builtin:"

// Images is the image store as pools use it.
type Images interface {
	// Pull resolves ref (a tag to a digest), fetching what the store
	// lacks.
	Pull(ctx context.Context, ref string, po image.PullOptions) (*image.Image, error)
	// Get returns an image the store holds, by digest.
	Get(digest string) (*image.Image, error)
}

// ResolveImage is how a manager finds an image reference (by default, a
// pull from the image store). Berth's server resolves "builtin:NAME" to
// its built-in images first.
type ResolveImage func(ctx context.Context, ref string) (*image.Image, error)

// resolveImage makes sure cfg's image is in the store and pins
// cfg.ImageDigest to it. A digest the caller already resolved (the CLI
// pulls first, to show progress) is taken as is if the store holds it.
func (m *Manager) resolveImage(ctx context.Context, cfg *Config) (*image.Image, error) {
	if cfg.Image == "" {
		cfg.ImageDigest = ""
		return nil, nil
	}
	if m.images == nil {
		return nil, invalid("image", "this server has no image store: pools cannot run images")
	}
	if cfg.ImageDigest != "" {
		if im, err := m.images.Get(cfg.ImageDigest); err == nil {
			return im, nil
		}
	}
	resolve := m.resolve
	if resolve == nil {
		resolve = func(ctx context.Context, ref string) (*image.Image, error) {
			return m.images.Pull(ctx, ref, image.PullOptions{})
		}
	}
	im, err := resolve(ctx, cfg.Image)
	if err != nil {
		if ctx.Err() != nil {
			return nil, err
		}
		return nil, invalid("image", "image %s: %v", cfg.Image, err)
	}
	cfg.ImageDigest = im.Digest
	return im, nil
}

// ImageDigests lists the digests of the images the pools run, so that a
// prune keeps them.
func (m *Manager) ImageDigests() map[string]bool {
	out := map[string]bool{}
	for _, p := range m.List() {
		if d := p.Config().ImageDigest; d != "" {
			out[d] = true
		}
	}
	return out
}

// rootOf is the sandbox root of an image.
func rootOf(im *image.Image) *sandbox.Root {
	if im == nil {
		return nil
	}
	return &sandbox.Root{Dir: im.RootFS, IDShift: sandbox.ImageIDShift, UID: im.Config.UID, GID: im.Config.GID}
}

// probeError explains why an image cannot back a pool of its type.
func probeError(cfg Config, err error) error {
	if errors.Is(err, sandbox.ErrNoCapacity) || errors.Is(err, context.Canceled) {
		return err
	}
	need := map[string]string{
		TypeShell:  "bash at /bin/bash",
		TypePython: "python3 at /usr/bin/python3",
		TypeCustom: fmt.Sprintf("a server that listens on port %d", cfg.Container.port()),
	}[cfg.Type]
	return invalid("image", "image %s cannot run a %s pool: a session's sandbox did not start (%v); the pool needs %s in the image", cfg.Image, cfg.Type, err, need)
}

func (c *Container) port() int {
	if c == nil {
		return 0
	}
	return c.TargetPort
}

// serviceArgv is what a custom pool's container runs, as Docker and
// Container Apps read an image: Command replaces the Entrypoint and drops
// the Cmd; Args replace the Cmd.
func serviceArgv(c *Container, ic image.Config) ([]string, error) {
	var argv []string
	switch {
	case len(c.Command) > 0:
		argv = append(append(argv, c.Command...), c.Args...)
	case len(c.Args) > 0:
		argv = append(append(argv, ic.Entrypoint...), c.Args...)
	default:
		argv = append(append(argv, ic.Entrypoint...), ic.Cmd...)
	}
	if len(argv) == 0 {
		return nil, errors.New("the image has no Entrypoint or Cmd, and the pool no --command")
	}
	return argv, nil
}

// serviceEnv is the image's environment, then the pool's, then PORT.
func serviceEnv(c *Container, ic image.Config) map[string]string {
	env := map[string]string{}
	for _, kv := range ic.Env {
		if k, v, ok := strings.Cut(kv, "="); ok && k != "" {
			env[k] = v
		}
	}
	if ic.Home != "" {
		if _, ok := env["HOME"]; !ok {
			env["HOME"] = ic.Home
		}
	}
	keys := make([]string, 0, len(c.Env))
	for k := range c.Env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		env[k] = c.Env[k]
	}
	if _, ok := env["PORT"]; !ok {
		env["PORT"] = strconv.Itoa(c.TargetPort)
	}
	return env
}
