package kubetest_test

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/berth-dev/berth/internal/kubetest"
)

func TestReadEnvFile(t *testing.T) {
	tests := []struct {
		name, text string
		want       kubetest.Env
		wantErr    bool
	}{
		{name: "all", text: "export KUBECONFIG=/k\nexport BERTH_KUBE_REGISTRY=127.0.0.1:5000\nexport BERTH_KUBE_BIN=/b\n" +
			"export BERTH_KUBE_DIR=/d\nexport BERTH_KUBE_BERTH_IMAGE=127.0.0.1:5000/berth@sha256:00\n",
			want: kubetest.Env{Kubeconfig: "/k", Registry: "127.0.0.1:5000", Bin: "/b", Dir: "/d",
				BerthImage: "127.0.0.1:5000/berth@sha256:00"}},
		{name: "no registry", text: "export KUBECONFIG=/k\n", wantErr: true},
		{name: "empty", text: "", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "env")
			if err := os.WriteFile(p, []byte(tt.text), 0o600); err != nil {
				t.Fatal(err)
			}
			got, err := kubetest.ReadEnvFile(p)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, want error %v", err, tt.wantErr)
			}
			if got != tt.want {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

// probePod is a Pod running kubeprobe with args, under runtimeClass ("" = runc).
func probePod(name, image, runtimeClass string, args ...string) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"app": name}},
		Spec: corev1.PodSpec{
			AutomountServiceAccountToken:  new(bool),
			TerminationGracePeriodSeconds: new(int64),
			Containers:                    []corev1.Container{{Name: "probe", Image: image, Args: args}},
		},
	}
	if runtimeClass != "" {
		p.Spec.RuntimeClassName = &runtimeClass
	}
	return p
}

func create(t *testing.T, k *kubetest.Kube, ns string, p *corev1.Pod) {
	t.Helper()
	if _, err := k.Client.CoreV1().Pods(ns).Create(context.Background(), p, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// A Pod from an image pushed to the cluster's registry runs under runc and
// under gVisor, and its IP answers from the host.
func TestPodRuns(t *testing.T) {
	k := kubetest.Cluster(t)
	image := k.ProbeImage(t)
	ns := k.Namespace(t, "kubetest")
	for _, rc := range []string{"", "gvisor"} {
		name := "web-" + map[string]string{"": "runc", "gvisor": "gvisor"}[rc]
		t.Run(name, func(t *testing.T) {
			create(t, k, ns, probePod(name, image, rc, "serve", ":8080"))
			p := k.WaitRunning(t, ns, name, 90*time.Second)
			body := httpGet(t, "http://"+net.JoinHostPort(p.Status.PodIP, "8080")+"/")
			if !strings.HasPrefix(body, "kubeprobe "+name+" ") {
				t.Fatalf("pod answered %q", body)
			}
			if gvisor := strings.Contains(body, "gvisor"); gvisor != (rc == "gvisor") {
				t.Fatalf("runtime class %q, but the pod's kernel says %q", rc, body)
			}
		})
	}
}

func httpGet(t *testing.T, url string) string {
	t.Helper()
	c := &http.Client{Timeout: 5 * time.Second}
	var last error
	for i := 0; i < 25; i++ {
		resp, err := c.Get(url)
		if err == nil {
			b, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err == nil {
				return string(b)
			}
		}
		last = err
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("GET %s: %v", url, last)
	return ""
}

// Berth's own image (the static binary on an empty base) runs in a Pod,
// under runc and under gVisor: `/berth version`.
func TestBerthImageRuns(t *testing.T) {
	k := kubetest.Cluster(t)
	image := k.BerthImage(t)
	ns := k.Namespace(t, "berthimage")
	for _, rc := range []string{"", "gvisor"} {
		name := "berth-" + map[string]string{"": "runc", "gvisor": "gvisor"}[rc]
		t.Run(name, func(t *testing.T) {
			p := probePod(name, image, rc, "version")
			p.Spec.RestartPolicy = corev1.RestartPolicyNever
			create(t, k, ns, p)
			if got := k.WaitExited(t, ns, name, 90*time.Second); got.Status.Phase != corev1.PodSucceeded {
				t.Fatalf("pod ended %s", got.Status.Phase)
			}
			if log := k.Logs(t, ns, name); !strings.HasPrefix(log, "berth ") {
				t.Fatalf("/berth version printed %q", log)
			}
		})
	}
}

// A PVC of the default StorageClass binds, and what one Pod writes to it
// the next Pod reads.
func TestPersistentVolumeClaim(t *testing.T) {
	k := kubetest.Cluster(t)
	ctx := context.Background()
	ns := k.Namespace(t, "pvc")
	pvc := &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: "data"},
		Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			Resources: corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{
				corev1.ResourceStorage: resource.MustParse("16Mi")}},
		},
	}
	if _, err := k.Client.CoreV1().PersistentVolumeClaims(ns).Create(ctx, pvc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	image := k.ProbeImage(t)
	withData := func(p *corev1.Pod) *corev1.Pod {
		p.Spec.Volumes = []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{
			PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "data"}}}}
		p.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "data", MountPath: "/data"}}
		p.Spec.RestartPolicy = corev1.RestartPolicyNever
		return p
	}
	create(t, k, ns, withData(probePod("writer", image, "", "write", "/data/x", "kept")))
	if p := k.WaitExited(t, ns, "writer", 90*time.Second); p.Status.Phase != corev1.PodSucceeded {
		t.Fatalf("writer %s: %s", p.Status.Phase, k.Logs(t, ns, "writer"))
	}
	create(t, k, ns, withData(probePod("reader", image, "gvisor", "cat", "/data/x")))
	if p := k.WaitExited(t, ns, "reader", 90*time.Second); p.Status.Phase != corev1.PodSucceeded {
		t.Fatalf("reader %s: %s", p.Status.Phase, k.Logs(t, ns, "reader"))
	}
	if got := k.Logs(t, ns, "reader"); got != "kept" {
		t.Fatalf("reader read %q", got)
	}
	got, err := k.Client.CoreV1().PersistentVolumeClaims(ns).Get(ctx, "data", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got.Status.Phase != corev1.ClaimBound || got.Spec.StorageClassName == nil || *got.Spec.StorageClassName != "standard" {
		t.Fatalf("PVC %s, class %v", got.Status.Phase, got.Spec.StorageClassName)
	}
}

// The cluster's kubectl talks to an API server of the version built.
func TestKubectl(t *testing.T) {
	k := kubetest.Cluster(t)
	var v struct {
		Server struct{ GitVersion string } `json:"serverVersion"`
	}
	out := k.Kubectl(t, "", "version", "-o", "json")
	if err := json.Unmarshal([]byte(out), &v); err != nil || v.Server.GitVersion != "v1.34.4" {
		t.Fatalf("kubectl version (%v):\n%s", err, out)
	}
	ns := k.Namespace(t, "kubectl")
	k.Kubectl(t, "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndata: {k: v}\n", "apply", "-n", ns, "-f", "-")
	if got := k.Kubectl(t, "", "get", "-n", ns, "configmap", "c", "-o", "jsonpath={.data.k}"); got != "v" {
		t.Fatalf("configmap data %q", got)
	}
}
