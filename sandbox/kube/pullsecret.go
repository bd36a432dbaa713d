package kube

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"

	"github.com/google/go-containerregistry/pkg/name"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/berth-dev/berth/sandbox"
)

// Pull credentials: a sandbox whose image's registry wants a login
// (Spec.PullAuth, else Options.Credentials for the registry's host) gets a
// Secret of type kubernetes.io/dockerconfigjson of its own, named in its
// Pod's imagePullSecrets and deleted with it, so that the kubelet pulls
// with the login Berth holds and no other sandbox's Pod can use it.

// Credentials finds Berth's stored login for a registry host (host[:port]);
// the image store's credentials (package image) have this method.
type Credentials interface {
	RegistryCredential(ctx context.Context, host string) (user, password string, ok bool, err error)
}

// SetCredentials sets the logins asked for when Options.Credentials is
// nil: a server builds its runtimes before it opens the store that keeps
// them.
func (r *Runtime) SetCredentials(c Credentials) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.creds = c
}

func (r *Runtime) credentials() Credentials {
	if r.o.Credentials != nil {
		return r.o.Credentials
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.creds
}

// pullSecret is the sandbox's pull Secret, or nil if its image needs none.
func (r *Runtime) pullSecret(ctx context.Context, spec sandbox.Spec, b *box, labels map[string]string) (*corev1.Secret, error) {
	if spec.Image == "" {
		return nil, nil
	}
	ref, err := name.ParseReference(spec.Image, name.WeakValidation)
	if err != nil {
		return nil, fmt.Errorf("kube: image %q: %w", spec.Image, err)
	}
	host := ref.Context().RegistryStr()
	login := spec.PullAuth
	if creds := r.credentials(); login == nil && creds != nil {
		u, p, ok, err := creds.RegistryCredential(ctx, host)
		if err != nil {
			return nil, fmt.Errorf("kube: the login for %s: %w", host, err)
		}
		if ok {
			login = &sandbox.RegistryLogin{User: u, Password: p}
		}
	}
	if login == nil {
		return nil, nil
	}
	cfg, err := dockerConfig(host, *login)
	if err != nil {
		return nil, err
	}
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: b.name + "-pull", Namespace: r.o.Namespace, Labels: labels},
		Type:       corev1.SecretTypeDockerConfigJson,
		Data:       map[string][]byte{corev1.DockerConfigJsonKey: cfg},
	}, nil
}

// dockerConfig is a .dockerconfigjson with one login, for host (and for
// Docker Hub under the names the kubelet looks it up by).
func dockerConfig(host string, l sandbox.RegistryLogin) ([]byte, error) {
	type entry struct {
		Username string `json:"username"`
		Password string `json:"password"`
		Auth     string `json:"auth"`
	}
	e := entry{Username: l.User, Password: l.Password, Auth: base64.StdEncoding.EncodeToString([]byte(l.User + ":" + l.Password))}
	auths := map[string]entry{host: e}
	if host == name.DefaultRegistry || host == "docker.io" {
		auths["https://index.docker.io/v1/"] = e
		auths["docker.io"] = e
	}
	return json.Marshal(map[string]any{"auths": auths})
}
