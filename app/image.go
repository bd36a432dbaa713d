package app

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"

	"github.com/berth-dev/berth/image"
	"github.com/berth-dev/berth/sandbox"
)

// Images is the image store (see package image).
type Images interface {
	Pull(ctx context.Context, ref string, po image.PullOptions) (*image.Image, error)
	Get(digest string) (*image.Image, error)
}

// RegistryLogins keeps apps' own registry logins, sealed (the store does).
type RegistryLogins interface {
	PutAppRegistryCredential(ctx context.Context, app, host, user, password string) error
	AppRegistryCredential(ctx context.Context, app, host string) (user, password string, ok bool, err error)
	DeleteAppRegistryCredentials(ctx context.Context, app string) error
}

// imageHost is the registry host of an image reference.
func imageHost(ref string) (string, error) {
	r, err := name.ParseReference(ref, name.WeakValidation)
	if err != nil {
		return "", invalid("image %q: %v", ref, err)
	}
	return r.Context().RegistryStr(), nil
}

// resolveImage pulls a deploy's image (a tag is resolved to its digest),
// keeps the app's registry logins, and fills what the image says: the
// revision's source becomes REPO@DIGEST and its port the image's first
// exposed port when the deploy names none.
func (m *Manager) resolveImage(ctx context.Context, appName string, cfg *Config, progress func(image.Progress)) error {
	if !cfg.HasImage() {
		return nil
	}
	if m.images == nil {
		return invalid("this server keeps no images")
	}
	ref := strings.TrimSpace(cfg.Source.Image)
	host, err := imageHost(ref)
	if err != nil {
		return err
	}
	auth, err := m.appLogin(ctx, appName, host, cfg.Registries)
	if err != nil {
		return err
	}
	im, err := m.images.Pull(ctx, ref, image.PullOptions{Auth: auth, Progress: progress})
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return invalid("%v", err) // it names the image
	}
	r, _ := name.ParseReference(ref, name.WeakValidation)
	cfg.Source.ImageTag = ref
	cfg.Source.Image = r.Context().Name() + "@" + im.Digest
	if cfg.Port == 0 && len(im.Config.ExposedPorts) > 0 {
		cfg.Port = im.Config.ExposedPorts[0]
	}
	if len(imageArgv(cfg, im)) == 0 {
		return invalid("image %s has no Entrypoint or Cmd: give the command to run (--command, or command in the manifest)", ref)
	}
	// The logins are the app's: store the passwords, keep the rest.
	for i, reg := range cfg.Registries {
		if reg.Password != "" {
			if m.logins == nil {
				return invalid("this server keeps no registry logins")
			}
			if err := m.logins.PutAppRegistryCredential(ctx, appName, reg.Server, reg.Username, reg.Password); err != nil {
				return err
			}
		}
		cfg.Registries[i].Password = ""
	}
	return nil
}

// appLogin finds the login for host: the deploy's, or the app's stored
// one; nil leaves it to the image store (the server's logins, then
// anonymous).
func (m *Manager) appLogin(ctx context.Context, appName, host string, regs []Registry) (*image.Auth, error) {
	for _, r := range regs {
		if r.Server != host {
			continue
		}
		if r.Password != "" {
			return &image.Auth{User: r.Username, Password: r.Password}, nil
		}
		if r.PasswordSecretRef != "" {
			return m.secretLogin(ctx, appName, r)
		}
	}
	if m.logins == nil {
		return nil, nil
	}
	u, p, ok, err := m.logins.AppRegistryCredential(ctx, appName, host)
	if err != nil || !ok {
		return nil, err
	}
	return &image.Auth{User: u, Password: p}, nil
}

// secretLogin is the login of a registry whose password is one of the
// app's secrets (passwordSecretRef), read at each pull so that a changed
// secret is used by the next one.
func (m *Manager) secretLogin(ctx context.Context, appName string, r Registry) (*image.Auth, error) {
	values, err := m.store.Secrets(ctx, appName)
	if err != nil {
		return nil, err
	}
	v, ok := values[r.PasswordSecretRef]
	if !ok {
		return nil, invalid("registry %s: passwordSecretRef names secret %q, which app %s does not have: set it first with: berth secret set %s %s",
			r.Server, r.PasswordSecretRef, appName, appName, r.PasswordSecretRef)
	}
	return &image.Auth{User: r.Username, Password: string(v)}, nil
}

// image returns the revision's image, pulled again by digest if it was
// removed since the deploy.
func (r *revisionRuntime) image(ctx context.Context) (*image.Image, error) {
	src := r.rev.Config.Source
	_, digest, ok := strings.Cut(src.Image, "@")
	if !ok {
		return nil, fmt.Errorf("revision image %q has no digest", src.Image)
	}
	im, err := r.app.m.images.Get(digest)
	if err == nil {
		return im, nil
	}
	if !errors.Is(err, image.ErrNotFound) {
		return nil, err
	}
	host, err := imageHost(src.Image)
	if err != nil {
		return nil, err
	}
	auth, err := r.app.m.appLogin(ctx, r.app.name, host, r.rev.Config.Registries)
	if err != nil {
		return nil, err
	}
	r.log.Info("pulling the revision's image again", "image", src.Image)
	return r.app.m.images.Pull(ctx, src.Image, image.PullOptions{Auth: auth})
}

// imageRoot is the sandbox root of an image.
func imageRoot(im *image.Image) *sandbox.Root {
	return &sandbox.Root{Dir: im.RootFS, IDShift: sandbox.ImageIDShift, UID: im.Config.UID, GID: im.Config.GID}
}

// imageArgv is what an image app runs: the deploy's entrypoint (else the
// image's) and its args (else, unless the entrypoint was replaced, the
// image's Cmd), as Kubernetes does.
func imageArgv(cfg *Config, im *image.Image) []string {
	ep, args := im.Config.Entrypoint, im.Config.Cmd
	if len(cfg.Entrypoint) > 0 {
		ep, args = cfg.Entrypoint, nil
	}
	if len(cfg.Args) > 0 {
		args = cfg.Args
	}
	return append(append([]string(nil), ep...), args...)
}

// imageEnv is the image's environment under the app's variables.
func imageEnv(im *image.Image, env map[string]string) map[string]string {
	out := map[string]string{}
	if im.Config.Home != "" {
		out["HOME"] = im.Config.Home
	}
	for _, kv := range im.Config.Env {
		if k, v, ok := strings.Cut(kv, "="); ok && k != "" {
			out[k] = v
		}
	}
	for k, v := range env {
		out[k] = v
	}
	return out
}

// imageCommand is how the agent starts an image app: the argv with its
// program found on the image's PATH (the agent's own PATH is not the
// image's), the environment, and the image's working directory.
func imageCommand(cfg Config, im *image.Image, env map[string]string) (argv []string, outEnv map[string]string, dir string) {
	outEnv = imageEnv(im, env)
	argv = imageArgv(&cfg, im)
	if len(argv) > 0 && !strings.Contains(argv[0], "/") {
		argv[0] = lookPath(im.RootFS, outEnv["PATH"], argv[0])
	}
	dir = im.Config.WorkingDir
	if dir == "" {
		dir = "/"
	}
	return argv, outEnv, dir
}

// lookPath finds prog on the image's PATH (or the usual one), inside its
// root; it returns prog unchanged when nothing matches.
func lookPath(rootfs, pathEnv, prog string) string {
	if pathEnv == "" {
		pathEnv = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	}
	root, err := os.OpenRoot(rootfs)
	if err != nil {
		return prog
	}
	defer root.Close()
	for _, d := range filepath.SplitList(pathEnv) {
		if !strings.HasPrefix(d, "/") {
			continue
		}
		p := path.Join(d, prog)
		if fi, err := root.Lstat(strings.TrimPrefix(p, "/")); err == nil && !fi.IsDir() {
			return p
		}
	}
	return prog
}

// usedImages reports whether a stored revision of an app runs an image.
func (m *Manager) usedImages() map[string]bool {
	used := map[string]bool{}
	for _, a := range m.List() {
		for _, r := range a.Doc().Revisions {
			if r.Config.HasImage() {
				if _, d, ok := strings.Cut(r.Config.Source.Image, "@"); ok {
					used[d] = true
				}
			}
		}
	}
	return used
}

// ImageInUse reports whether any revision of any app runs the image with
// this digest (for the image store's prune).
func (m *Manager) ImageInUse(digest string) bool {
	return m.usedImages()[digest]
}
