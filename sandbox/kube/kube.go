// Package kube is the Kubernetes sandbox driver: each sandbox is a Pod in
// a namespace Berth is given, created with client-go.
//
// A sandbox's Pod runs the sandbox's image (Spec.Image, else the driver's
// default) with Berth's agent as its entrypoint: an init container from
// Berth's own image copies the static agent ("berth-agent --install") into
// an emptyDir, and the main container runs it from there. The agent
// listens on TCP (Options.AgentPort) and serves only requests carrying the
// sandbox's token, which Berth makes, keeps, and puts in a Secret mounted
// root-only into the main container alone: the agent starts as root,
// reads it, and drops to an unprivileged uid (no capabilities,
// no_new_privs) before it runs any code (see package agent). The Pod has
// no service account token, no service links, and a NetworkPolicy of its
// own: ingress only to the agent's port and only from Berth
// (Options.AgentFrom, AgentFromPods); egress none at all, or with
// Spec.Egress everything but the cluster's and the node's networks
// (Options.DenyCIDRs) and link-local addresses (the metadata service).
// That the policy is enforced is the cluster's CNI's business.
//
// Resources come from the limits: memory and CPU limits, ephemeral
// storage (and the emptyDirs' size) from DiskBytes; requests are small
// (Options.Requests) so that many idle sandboxes fit a node.
//
// Objects carry the labels app.kubernetes.io/managed-by=berth,
// berth.dev/instance, berth.dev/sandbox, berth.dev/owner-kind and
// berth.dev/owner-name; Cleanup deletes every object of the instance.
package kube

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"github.com/berth-dev/berth/sandbox"
)

// Labels the driver sets on every object it makes.
const (
	LabelManagedBy = "app.kubernetes.io/managed-by"
	LabelInstance  = "berth.dev/instance"
	LabelSandbox   = "berth.dev/sandbox"
	LabelOwnerKind = "berth.dev/owner-kind"
	LabelOwnerName = "berth.dev/owner-name"
	managedBy      = "berth"
)

// Options configure the driver. Client, Namespace and AgentImage are
// required; zero values of the others mean their defaults.
type Options struct {
	Client    kubernetes.Interface
	Namespace string
	// Instance names this Berth's objects (label berth.dev/instance,
	// default "berth"): Cleanup removes the instance's and no other's.
	Instance string
	// AgentImage is Berth's own image; AgentBinary the path of the berth
	// binary in it (default "/berth-agent").
	AgentImage  string
	AgentBinary string
	// Image runs sandboxes whose Spec names none (a pool's default
	// image, with bash and python3).
	Image string
	// RuntimeClass is the Pods' RuntimeClassName ("": the cluster's
	// default, usually runc; "gvisor" for gVisor).
	RuntimeClass string
	// AgentPort is the agent's TCP port in the Pod (default 7070).
	AgentPort int
	// UID and GID run the sandbox's code (default 1000:1000), unless the
	// Spec's Root names a non-root image user. Root never runs code.
	UID, GID int64
	// Defaults fill zero limits (default DefaultLimits).
	Defaults sandbox.Limits
	// Requests are what each Pod asks the scheduler for, at most its
	// limits (default DefaultRequests: 50m CPU, 32 MiB, 64 MiB of disk).
	Requests sandbox.Limits
	// AgentFrom are the CIDRs Berth reaches agents from, AgentFromPods
	// the labels of Berth's own Pods in the namespace; the NetworkPolicy
	// admits only these to the agent's port. Both empty: Pods labelled
	// app.kubernetes.io/name=berth.
	AgentFrom     []string
	AgentFromPods map[string]string
	// DenyCIDRs are the cluster's and the node's networks (Pods,
	// Services, nodes): a sandbox with egress reaches anything but these
	// and 169.254.0.0/16.
	DenyCIDRs []string
	// PullSecrets name Secrets of the namespace used to pull images.
	PullSecrets []string
	// Credentials, if set, give the login for the registry of a Spec's
	// image when the Spec brings none (PullAuth): the sandbox's Pod gets a
	// pull Secret of its own.
	Credentials Credentials
	// StorageClass makes the named volumes' claims ("": the cluster's
	// default class); VolumeBytes is what each claim asks for (default
	// 1 GiB), VolumeAccessMode its access mode (default ReadWriteOnce: the
	// sandboxes of a group share a volume on one node; ReadWriteMany where
	// the class offers it and they spread over nodes).
	StorageClass     string
	VolumeBytes      int64
	VolumeAccessMode corev1.PersistentVolumeAccessMode
	// DeleteGrace is the Pods' termination grace (default 1s).
	DeleteGrace time.Duration
	// UnschedulableWait is how long Start waits for a Pod the scheduler
	// cannot place before it fails with sandbox.ErrNoCapacity (default
	// DefaultUnschedulableWait).
	UnschedulableWait time.Duration
	// Shared says that several Berth replicas use the instance's
	// sandboxes (with --state kube): each may Attach to the others', and
	// Cleanup deletes nothing a live replica may use.
	Shared bool
}

// DefaultLimits fill a Spec's zero limits.
var DefaultLimits = sandbox.Limits{MemoryBytes: 512 << 20, CPU: 1, Pids: 256, DiskBytes: sandbox.DefaultDiskBytes}

// DefaultRequests are a Pod's requests (capped by its limits).
var DefaultRequests = sandbox.Limits{MemoryBytes: 32 << 20, CPU: 0.05, DiskBytes: 64 << 20}

// metadataCIDR is never reached, egress or not: the link-local range with
// clouds' metadata service (169.254.169.254).
const metadataCIDR = "169.254.0.0/16"

// Runtime is the kube driver. Close stops it.
type Runtime struct {
	o        Options
	cs       kubernetes.Interface
	selector string
	informer cache.SharedIndexInformer
	stop     context.CancelFunc
	stopped  chan struct{}

	mu    sync.Mutex
	boxes map[string]*box // by Pod name
	creds Credentials     // SetCredentials'
}

// New checks o and starts watching the instance's Pods; it returns once
// the watch has synced (or ctx ends).
func New(ctx context.Context, o Options) (*Runtime, error) {
	if err := o.defaults(); err != nil {
		return nil, err
	}
	r := &Runtime{o: o, cs: o.Client, boxes: map[string]*box{}, stopped: make(chan struct{})}
	r.selector = LabelManagedBy + "=" + managedBy + "," + LabelInstance + "=" + o.Instance
	r.informer = r.podInformer()
	if _, err := r.informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { r.observe(obj, false) },
		UpdateFunc: func(_, obj any) { r.observe(obj, false) },
		DeleteFunc: func(obj any) { r.observe(obj, true) },
	}); err != nil {
		return nil, err
	}
	runCtx, stop := context.WithCancel(context.Background())
	r.stop = stop
	go func() {
		defer close(r.stopped)
		r.informer.RunWithContext(runCtx)
	}()
	if !cache.WaitForCacheSync(ctx.Done(), r.informer.HasSynced) {
		r.Close()
		return nil, fmt.Errorf("kube: watching Pods in namespace %q: %w", o.Namespace, context.Cause(ctx))
	}
	return r, nil
}

var idRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]*[a-z0-9])?$`)

func (o *Options) defaults() error {
	if o.Client == nil {
		return errors.New("kube: no Kubernetes client")
	}
	return o.defaultsNoClient()
}

func (o *Options) defaultsNoClient() error {
	switch {
	case o.Namespace == "":
		return errors.New("kube: no namespace")
	case o.AgentImage == "":
		return errors.New("kube: no agent image (Berth's own image)")
	}
	if o.Instance == "" {
		o.Instance = "berth"
	}
	if len(validation.IsValidLabelValue(o.Instance)) > 0 {
		return fmt.Errorf("kube: instance %q is not a label value", o.Instance)
	}
	if o.AgentBinary == "" {
		o.AgentBinary = "/berth-agent"
	}
	if o.AgentPort == 0 {
		o.AgentPort = 7070
	}
	if o.UID == 0 {
		o.UID = 1000
	}
	if o.GID == 0 {
		o.GID = o.UID
	}
	o.Defaults = o.Defaults.WithDefaults(DefaultLimits)
	o.Requests = o.Requests.WithDefaults(DefaultRequests)
	if len(o.AgentFrom) == 0 && len(o.AgentFromPods) == 0 {
		o.AgentFromPods = map[string]string{"app.kubernetes.io/name": "berth"}
	}
	if o.VolumeBytes == 0 {
		o.VolumeBytes = 1 << 30
	}
	if o.VolumeAccessMode == "" {
		o.VolumeAccessMode = corev1.ReadWriteOnce
	}
	if o.DeleteGrace == 0 {
		o.DeleteGrace = time.Second
	}
	if o.UnschedulableWait == 0 {
		o.UnschedulableWait = DefaultUnschedulableWait
	}
	for _, c := range append(append([]string{}, o.AgentFrom...), o.DenyCIDRs...) {
		if _, err := netip.ParsePrefix(c); err != nil {
			return fmt.Errorf("kube: %q is not a CIDR", c)
		}
	}
	return nil
}

func (r *Runtime) podInformer() cache.SharedIndexInformer {
	pods := r.cs.CoreV1().Pods(r.o.Namespace)
	lw := &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, opts metav1.ListOptions) (runtime.Object, error) {
			opts.LabelSelector = r.selector
			return pods.List(ctx, opts)
		},
		WatchFuncWithContext: func(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
			opts.LabelSelector = r.selector
			return pods.Watch(ctx, opts)
		},
	}
	return cache.NewSharedIndexInformer(lw, &corev1.Pod{}, 0, cache.Indexers{})
}

// Options are the runtime's options, defaults filled in.
func (r *Runtime) Options() Options { return r.o }

// Close stops watching. Sandboxes keep running (Destroy them first).
func (r *Runtime) Close() {
	r.stop()
	<-r.stopped
}

// Name implements sandbox.Runtime.
func (r *Runtime) Name() string { return "kube" }

// Cleanup implements sandbox.Runtime: it deletes the instance's Pods,
// Secrets and NetworkPolicies that no sandbox of this Runtime holds (what
// an earlier Berth left), and waits for the Pods to go. With
// Options.Shared, other replicas' sandboxes stay: it deletes only Pods that
// ended and Secrets and NetworkPolicies left without their Pod.
func (r *Runtime) Cleanup(ctx context.Context) error {
	if r.o.Shared {
		return r.cleanupShared(ctx)
	}
	ns := r.o.Namespace
	list := metav1.ListOptions{LabelSelector: r.selector}
	pods, err := r.cs.CoreV1().Pods(ns).List(ctx, list)
	if err != nil {
		return fmt.Errorf("kube: cleanup: %w", err)
	}
	var errs []error
	for _, p := range pods.Items {
		if !r.holds(p.Name) {
			errs = append(errs, r.deletePod(ctx, p.Name))
		}
	}
	errs = append(errs, r.sweep(ctx, func(m metav1.ObjectMeta) bool { return !r.holds(m.Labels[LabelSandbox]) })...)
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("kube: cleanup: %w", err)
	}
	return r.waitGone(ctx)
}

// sweep deletes the instance's Secrets and NetworkPolicies for which
// stale says yes, and returns what went wrong.
func (r *Runtime) sweep(ctx context.Context, stale func(metav1.ObjectMeta) bool) []error {
	ns := r.o.Namespace
	list := metav1.ListOptions{LabelSelector: r.selector}
	var errs []error
	secrets, err := r.cs.CoreV1().Secrets(ns).List(ctx, list)
	errs = append(errs, err)
	if err == nil {
		for _, s := range secrets.Items {
			if stale(s.ObjectMeta) {
				errs = append(errs, ignoreNotFound(r.cs.CoreV1().Secrets(ns).Delete(ctx, s.Name, metav1.DeleteOptions{})))
			}
		}
	}
	nps, err := r.cs.NetworkingV1().NetworkPolicies(ns).List(ctx, list)
	errs = append(errs, err)
	if err == nil {
		for _, np := range nps.Items {
			if stale(np.ObjectMeta) {
				errs = append(errs, ignoreNotFound(r.cs.NetworkingV1().NetworkPolicies(ns).Delete(ctx, np.Name, metav1.DeleteOptions{})))
			}
		}
	}
	return errs
}

// holds reports whether a live sandbox of r is named name (its Pod's
// name, or its ID).
func (r *Runtime) holds(name string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.boxes[name]; ok {
		return true
	}
	_, ok := r.boxes[podName(name)]
	return ok
}

// waitGone waits until the watch sees no Pod of the instance but r's own.
func (r *Runtime) waitGone(ctx context.Context) error {
	for {
		left := 0
		for _, k := range r.informer.GetStore().ListKeys() {
			if _, name, _ := cache.SplitMetaNamespaceKey(k); !r.holds(name) {
				left++
			}
		}
		if left == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("kube: cleanup: %d Pods still terminating: %w", left, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (r *Runtime) deletePod(ctx context.Context, name string) error {
	grace := int64(r.o.DeleteGrace / time.Second)
	return ignoreNotFound(r.cs.CoreV1().Pods(r.o.Namespace).Delete(ctx, name, metav1.DeleteOptions{GracePeriodSeconds: &grace}))
}

func ignoreNotFound(err error) error {
	if apierrors.IsNotFound(err) {
		return nil
	}
	return err
}

// podName is the name of sandbox id's Pod, NetworkPolicy and (with a
// suffix) Secret.
func podName(id string) string { return "berth-" + id }

// Start implements sandbox.Runtime: it creates the sandbox's Secret,
// NetworkPolicy and Pod, and returns once the Pod runs and its agent
// answers. On failure it deletes what it created. A sandbox of that ID
// that exists already (this Runtime's, or another replica's) is an error
// wrapping sandbox.ErrExists, and left as it is.
func (r *Runtime) Start(ctx context.Context, spec sandbox.Spec) (_ sandbox.Sandbox, err error) {
	if err := r.check(spec); err != nil {
		return nil, err
	}
	b := newBox(r, spec.ID, rand.Text()+rand.Text())
	r.mu.Lock()
	if _, dup := r.boxes[b.name]; dup {
		r.mu.Unlock()
		return nil, fmt.Errorf("kube: sandbox %q: %w", spec.ID, sandbox.ErrExists)
	}
	r.boxes[b.name] = b
	r.mu.Unlock()
	defer func() {
		if errors.Is(err, sandbox.ErrExists) {
			r.forget(b) // another's: not ours to delete
		} else if err != nil {
			dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
			_ = b.Destroy(dctx)
			cancel()
		}
	}()
	if err := r.create(ctx, spec, b); err != nil {
		return nil, err
	}
	if err := b.connect(ctx); err != nil {
		return nil, err
	}
	return b, nil
}

// check refuses what the driver cannot do.
func (r *Runtime) check(spec sandbox.Spec) error {
	switch {
	case !idRE.MatchString(spec.ID) || len(spec.ID) > 63-len("berth-")-len("-agent"):
		return fmt.Errorf("kube: sandbox id %q: want [a-z0-9-], at most 51 characters", spec.ID)
	case spec.EgressProxy != nil:
		return errors.New("kube: egress rules (an egress proxy) are not supported on Kubernetes yet; use egress enabled or disabled")
	case spec.Image == "" && r.o.Image == "":
		return errors.New("kube: the sandbox names no image and the driver has no default image")
	}
	if err := checkVolumes(spec); err != nil {
		return err
	}
	return spec.Root.Check()
}

// create makes the sandbox's objects: the Secrets, volume claims and the
// NetworkPolicy first, so that the Pod never runs without them. Any of
// them there already means the sandbox exists (sandbox.ErrExists).
func (r *Runtime) create(ctx context.Context, spec sandbox.Spec, b *box) error {
	ns := r.o.Namespace
	labels := r.labels(spec)
	if _, err := r.cs.CoreV1().Secrets(ns).Create(ctx, r.secret(b, labels), metav1.CreateOptions{}); err != nil {
		return createErr(spec.ID, "the agent's Secret", err)
	}
	ex, err := r.extras(ctx, spec, b, labels)
	if err != nil {
		return err
	}
	if _, err := r.cs.NetworkingV1().NetworkPolicies(ns).Create(ctx, r.networkPolicy(b.name, spec, labels), metav1.CreateOptions{}); err != nil {
		return createErr(spec.ID, "the sandbox's NetworkPolicy", err)
	}
	if _, err := r.cs.CoreV1().Pods(ns).Create(ctx, r.pod(b, spec, labels, ex), metav1.CreateOptions{}); err != nil {
		return createErr(spec.ID, "the sandbox's Pod", err)
	}
	return nil
}

func createErr(id, what string, err error) error {
	if apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("kube: sandbox %q: %s: %w", id, what, sandbox.ErrExists)
	}
	return capacityError(what, err)
}

func (r *Runtime) labels(spec sandbox.Spec) map[string]string {
	l := map[string]string{LabelManagedBy: managedBy, LabelInstance: r.o.Instance, LabelSandbox: spec.ID}
	if spec.Owner.Kind != "" && len(validation.IsValidLabelValue(spec.Owner.Kind)) == 0 {
		l[LabelOwnerKind] = spec.Owner.Kind
	}
	if spec.Owner.Name != "" && len(validation.IsValidLabelValue(spec.Owner.Name)) == 0 {
		l[LabelOwnerName] = spec.Owner.Name
	}
	return l
}

// observe passes a watched Pod's news to its sandbox.
func (r *Runtime) observe(obj any, deleted bool) {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj, deleted = t.Obj, true
	}
	p, ok := obj.(*corev1.Pod)
	if !ok {
		return
	}
	r.mu.Lock()
	b := r.boxes[p.Name]
	r.mu.Unlock()
	if b == nil {
		return
	}
	if deleted {
		b.stopped("its Pod was deleted")
		r.mu.Lock()
		if r.boxes[p.Name] == b {
			delete(r.boxes, p.Name) // another replica's Destroy (or kubectl's): a new Pod may take the name
		}
		r.mu.Unlock()
		return
	}
	if msg, ok := unschedulable(p); ok {
		b.unschedulable(msg, r.o.UnschedulableWait)
	} else if p.Spec.NodeName != "" {
		b.scheduled()
	}
	if ip, ok := runningIP(p); ok {
		b.started(ip)
	}
	if why := podFailure(p); why != "" {
		b.stopped(why)
	}
}

// runningIP is the Pod's IP, once it has one: the agent may not listen
// yet (its init container, its image may still be on their way), but
// Start need not wait for the kubelet to report the container running (it
// does so at its next status sync, up to a second later) to try it; the
// token makes sure that what answers there is the sandbox's agent.
func runningIP(p *corev1.Pod) (string, bool) {
	if p.Status.PodIP == "" || (p.Status.Phase != corev1.PodRunning && p.Status.Phase != corev1.PodPending) {
		return "", false
	}
	return p.Status.PodIP, true
}

// podFailure says why a Pod will never (again) serve, or "".
func podFailure(p *corev1.Pod) string {
	switch {
	case p.DeletionTimestamp != nil:
		return "its Pod is being deleted"
	case p.Status.Phase == corev1.PodFailed || p.Status.Phase == corev1.PodSucceeded:
		return fmt.Sprintf("its Pod ended (%s %s)", p.Status.Reason, p.Status.Message)
	}
	for _, c := range append(append([]corev1.ContainerStatus{}, p.Status.InitContainerStatuses...), p.Status.ContainerStatuses...) {
		if w := c.State.Waiting; w != nil {
			switch w.Reason {
			case "ErrImagePull", "ImagePullBackOff", "InvalidImageName", "CreateContainerConfigError", "CreateContainerError", "RunContainerError", "CrashLoopBackOff":
				return fmt.Sprintf("container %s: %s: %s", c.Name, w.Reason, w.Message)
			}
		}
		if t := c.State.Terminated; t != nil && (c.Name == containerName || t.ExitCode != 0) {
			return fmt.Sprintf("container %s exited (%d %s: %s)", c.Name, t.ExitCode, t.Reason, t.Message)
		}
	}
	return ""
}
