package server

import (
	"context"
	"os"

	"github.com/berth-dev/berth/app"
	"github.com/berth-dev/berth/internal/kubeslots"
	"github.com/berth-dev/berth/sandbox"
	"github.com/berth-dev/berth/sandbox/kube"
)

// sharedApps is the app replicas' set shared by the Berth replicas when
// the state and the sandboxes are in the cluster (the kube driver in
// shared mode), else nil: each process then runs replicas of its own.
// $BERTH_APP_BUSY_MARKS=off stops this replica from marking the app Pods
// it sends requests to busy (for tests that show what the marks do).
func sharedApps(ctx context.Context, o Options, rt sandbox.Runtime) (shared app.Shared, noBusyMarks bool, stop func(), err error) {
	stop = func() {}
	if o.State != StateKube {
		return nil, false, stop, nil
	}
	for _, r := range sandbox.Unwrap(rt) {
		k, ok := r.(*kube.Runtime)
		if !ok || !k.Options().Shared {
			continue
		}
		ko := k.Options()
		s, err := kubeslots.New(ctx, kubeslots.Options{Client: ko.Client, Namespace: ko.Namespace, Instance: ko.Instance, Attacher: k})
		if err != nil {
			return nil, false, stop, err
		}
		return s, os.Getenv("BERTH_APP_BUSY_MARKS") == "off", s.Close, nil
	}
	return nil, false, stop, nil
}
