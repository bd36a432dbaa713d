# Berth: two commands on a fresh Debian 12 machine (as root).
#   make up     install what is missing, build, and start Berth
#   make test   install what is missing and run the whole test suite

.PHONY: up test build bench clean

up:
	@scripts/setup.sh
	.bin/berth up --apply examples/tasks/berth.yaml $(ARGS)

test:
	@scripts/setup.sh --test
	@scripts/test.sh

build:
	@scripts/setup.sh

bench:
	@scripts/setup.sh
	.bin/berth bench $(ARGS)

clean:
	rm -rf .bin/berth
