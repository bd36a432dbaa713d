package app

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/berth-dev/berth/image"
	"github.com/berth-dev/berth/sandbox"
)

// box is one of a revision's sandboxes, with its ID.
type box struct {
	id string
	sb sandbox.Sandbox
	im *image.Image
	// attached: another Berth replica started it (Shared runtimes).
	attached bool
}

// startSandbox starts a sandbox for one of the revision's replicas: for
// slot s's in a Shared runtime (s nil: a spare, a new ID).
func (r *revisionRuntime) startSandbox(s *slot) (box, error) {
	var id string
	if s != nil && r.shared != nil {
		id = s.id
	} else {
		r.mu.Lock()
		r.seq++
		id = fmt.Sprintf("%s-%d", r.rev.Name, r.seq)
		r.mu.Unlock()
	}
	spec, im, err := r.sandboxSpec(id)
	if err != nil {
		return box{id: id}, err
	}
	if r.shared != nil {
		sb, attached, err := r.startShared(spec)
		return box{id: id, sb: sb, im: im, attached: attached}, err
	}
	sb, err := r.app.m.runtime.Start(r.ctx, spec)
	return box{id: id, sb: sb, im: im}, err
}

// sandboxSpec is the spec of sandbox id for one of the revision's
// replicas, with the revision's image if it runs one.
func (r *revisionRuntime) sandboxSpec(id string) (sandbox.Spec, *image.Image, error) {
	cfg := r.rev.Config
	secrets, err := r.secrets()
	if err != nil {
		return sandbox.Spec{}, nil, err
	}
	files := r.app.files(r.rev)
	if secrets.dir != "" {
		files = append(files, sandbox.Files{Dir: secrets.dir, Target: cfg.SecretVolume})
	}
	spec := sandbox.Spec{
		ID:     id,
		Limits: sandbox.Limits{MemoryBytes: cfg.MemoryBytes, CPU: cfg.CPU, DiskBytes: cfg.DiskBytes},
		Egress: cfg.Egress != "disabled",
		// The app's replicas are one group: they share its volumes.
		Group:   r.app.group(),
		Volumes: volumes(r.rev),
		Files:   files,
		Owner:   sandbox.Owner{Kind: "app", Name: r.app.name},
	}
	if spec.Egress && cfg.Egress != "enabled" {
		if r.app.m.egress == nil {
			return spec, nil, errors.New("egress rules need the server's egress proxy")
		}
		px, err := r.app.m.egress.ProxyFor("app/"+r.app.name, cfg.Egress, cfg.EgressInject)
		if err != nil {
			return spec, nil, err
		}
		spec.EgressProxy = px
	}
	var im *image.Image
	if cfg.HasImage() {
		var err error
		if im, err = r.image(r.ctx); err != nil {
			return spec, nil, fmt.Errorf("the revision's image: %w", err)
		}
		spec.Root = imageRoot(im)
		spec.Image = im.PullRef()
		if spec.PullAuth, err = r.pullAuth(spec.Image); err != nil {
			return spec, nil, err
		}
	}
	return spec, im, nil
}

// pullAuth is the app's login for ref's registry, for drivers that pull
// the image themselves (kube: the Pod's pull Secret); nil if it has none.
func (r *revisionRuntime) pullAuth(ref string) (*sandbox.RegistryLogin, error) {
	if ref == "" {
		return nil, nil
	}
	host, err := imageHost(ref)
	if err != nil {
		return nil, err
	}
	auth, err := r.app.m.appLogin(r.ctx, r.app.name, host, r.rev.Config.Registries)
	if err != nil || auth == nil {
		return nil, err
	}
	return &sandbox.RegistryLogin{User: auth.User, Password: auth.Password}, nil
}

// takeSandbox returns the spare sandbox if there is a live one, or starts
// a new one for slot s.
func (r *revisionRuntime) takeSandbox(s *slot) (box, error) {
	if r.shared != nil {
		return r.startSandbox(s) // no spare: a replica's sandbox has its slot's ID
	}
	for {
		select {
		case sp := <-r.spares:
			select {
			case <-sp.sb.Done():
				r.destroy(sp) // it died while it waited
				continue
			default:
				return sp, nil
			}
		default:
			return r.startSandbox(s)
		}
	}
}

// keepSpare keeps a spare sandbox ready until the revision stops, handing
// it over through r.spares; it owns the spare until a replica takes it.
//
// A spare is a started sandbox with nothing running in it yet, made ahead
// of the revision's next replica: starting the sandbox is most of the
// platform's part of a cold start (tens of milliseconds), so a request that
// finds the revision at zero waits for the app's own start and little
// else. Each running revision keeps one, at the cost of one idle sandbox
// (a few MiB with bwrap). It also speeds up scaling out and replacing a
// crashed replica.
//
// With a Shared runtime there is none: every sandbox of a revision is one
// of its replicas', shared by the Berth replicas.
func (r *revisionRuntime) keepSpare() {
	defer r.wg.Done()
	if r.shared != nil {
		return
	}
	backoff := time.Second
	for {
		var freed <-chan struct{}
		if r.app.m.cap != nil {
			freed = r.app.m.cap.Freed() // before the start, so no release is missed
		}
		sp, err := r.startSandbox(nil)
		if errors.Is(err, sandbox.ErrNoCapacity) && freed != nil {
			// The spare waits for the host's capacity, quietly: a replica
			// that needs a sandbox meanwhile starts one itself (and is
			// refused the same way, which its requests are told).
			r.log.Debug("spare sandbox waits for the host's capacity", "err", err)
			select {
			case <-r.ctx.Done():
				return
			case <-freed:
			}
			continue
		}
		if err != nil {
			if r.ctx.Err() != nil {
				return
			}
			r.log.Warn("spare sandbox failed to start", "err", err, "retryIn", backoff)
			select {
			case <-r.ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(backoff*2, 30*time.Second)
			continue
		}
		backoff = time.Second
		select {
		case r.spares <- sp:
		case <-sp.sb.Done():
			r.destroy(sp)
		case <-r.ctx.Done():
			r.destroy(sp)
			return
		}
	}
}

// destroy ends one of the revision's sandboxes, a replica's or the spare.
func (r *revisionRuntime) destroy(sp box) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := sp.sb.Destroy(ctx); err != nil {
		r.log.Warn("destroy sandbox", "sandbox", sp.id, "err", err)
	}
}
