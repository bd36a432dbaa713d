package main

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
)

// TestPodImage: Berth in a Pod finds the image it runs from (the agent
// image of its sandboxes): by digest, whatever the spec names.
func TestPodImage(t *testing.T) {
	pod := func(ctrs []corev1.Container, sts ...corev1.ContainerStatus) *corev1.Pod {
		return &corev1.Pod{Spec: corev1.PodSpec{Containers: ctrs}, Status: corev1.PodStatus{ContainerStatuses: sts}}
	}
	berth := corev1.Container{Name: "berth", Image: "reg:5000/berth:dev"}
	side := corev1.Container{Name: "side", Image: "reg:5000/side:1"}
	pulled := corev1.ContainerStatus{Name: "berth", ImageID: "reg:5000/berth@sha256:aa"}
	tests := []struct {
		name, container, want string
		pod                   *corev1.Pod
	}{
		{"tag resolved to the pulled digest", "", "reg:5000/berth@sha256:aa", pod([]corev1.Container{berth}, pulled)},
		{"docker-pullable prefix", "", "reg:5000/berth@sha256:aa", pod([]corev1.Container{berth},
			corev1.ContainerStatus{Name: "berth", ImageID: "docker-pullable://reg:5000/berth@sha256:aa"})},
		{"a digest in the spec stays", "", "reg:5000/berth@sha256:bb", pod([]corev1.Container{{Name: "berth", Image: "reg:5000/berth@sha256:bb"}}, pulled)},
		{"no status yet: the spec", "", "reg:5000/berth:dev", pod([]corev1.Container{berth})},
		{"an image id without a repository: the spec", "", "reg:5000/berth:dev", pod([]corev1.Container{berth},
			corev1.ContainerStatus{Name: "berth", ImageID: "sha256:cc"})},
		{"the container named berth among others", "", "reg:5000/berth@sha256:aa", pod([]corev1.Container{side, berth}, pulled)},
		{"the only container, whatever its name", "", "reg:5000/side:1", pod([]corev1.Container{side})},
		{"$BERTH_CONTAINER", "side", "reg:5000/side:1", pod([]corev1.Container{berth, side}, pulled)},
		{"no such container", "", "", pod([]corev1.Container{side, {Name: "other", Image: "x"}})},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := podImage(tt.pod, tt.container); got != tt.want {
				t.Errorf("podImage = %q, want %q", got, tt.want)
			}
		})
	}
}
