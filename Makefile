# Berth: two commands on a fresh Debian 12 machine (as root).
#   make up     install what is missing, build, and start Berth
#   make test   install what is missing and run the whole test suite
#   make kube-up / kube-down   start / stop the one-node test Kubernetes cluster

.PHONY: up test build bench clean kube-up kube-down

up:
	@scripts/setup.sh
	.bin/berth up --builtin-image python=/var/cache/berth/images/python --builtin-image shell=/var/cache/berth/images/shell \
		--apply examples/pools/python.yaml --apply examples/tasks/berth.yaml $(ARGS)

test:
	@scripts/setup.sh --test
	@scripts/test.sh

build:
	@scripts/setup.sh

# Sandbox start-up and session latency (berth bench), then the gateway next
# to direct and Caddy, and the platform's part of a cold start from zero.
bench:
	@scripts/setup.sh --bench
	.bin/berth bench $(ARGS)
	go test ./e2e -run '^$$' -bench Gateway -benchtime 16000x -timeout 30m
	go test ./e2e -run '^$$' -bench ColdStart -benchtime 20x -timeout 30m
	BERTH_UI_LOAD=1 go test ./e2e -run TestDashboardLoadTime -v -timeout 30m

# The one-node Kubernetes cluster the kube tests run against (scripts/kube/):
# binaries built once and cached in /var/cache/berth/kube, state in
# /var/lib/berth-kube; `source /var/lib/berth-kube/env` for KUBECONFIG.
kube-up:
	@BERTH_SKIP_IMAGES=1 scripts/setup.sh --kube
	@scripts/kube/up.sh

kube-down:
	@scripts/kube/down.sh

clean:
	rm -rf .bin/berth
