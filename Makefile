# jobworker: `make serve` and `make test` set up everything they need on a fresh machine.
SHELL := /bin/bash
DENO_VERSION := 2.8.3
TOOLS := $(CURDIR)/.tools
export DENO_DIR := $(CURDIR)/.cache/deno
export DENO_NO_UPDATE_CHECK := 1

# Use a deno on PATH only when it is exactly the pinned version (2.9.x crashes in nghttp2).
SYSTEM_DENO := $(shell d=$$(command -v deno 2>/dev/null) && "$$d" --version 2>/dev/null | head -1 | grep -q "^deno $(DENO_VERSION) " && echo "$$d")
DENO := $(if $(SYSTEM_DENO),$(SYSTEM_DENO),$(TOOLS)/node_modules/.bin/deno)
SHIM := build/libjwshim.so
JWINIT := build/jwinit
JWSTART := build/jwstart

.PHONY: all tools deps shim proto build install-client serve test test-tools test-cgroup-v2 bench bench-tools bench-record fuzz fmt lint check ok clean certs \
  install uninstall deploy deploy-status deploy-logs deploy-certs

all: build

$(TOOLS)/node_modules/.bin/deno:
	@command -v npm >/dev/null || (apt-get update -qq && apt-get install -y -qq nodejs npm)
	mkdir -p $(TOOLS) && cd $(TOOLS) && npm install --no-audit --no-fund --loglevel=error deno@$(DENO_VERSION)

tools: $(DENO)
	@command -v gcc >/dev/null || (apt-get update -qq && apt-get install -y -qq gcc libc6-dev)

deps: tools
	$(DENO) install --allow-scripts --quiet

$(SHIM): init/shim/jwshim.c init/shim/jwshim.h init/shim/forwarded_signals.h init/shim/jw_report.h | tools
	mkdir -p build
	gcc -O2 -Wall -Wextra -Werror -shared -fPIC -o $@ init/shim/jwshim.c

# The minimal init of `init: true` jobs: static, so it needs nothing from the job's filesystem.
$(JWINIT): init/shim/jwinit.c init/shim/forwarded_signals.h init/shim/jw_report.h | tools
	mkdir -p build
	gcc -Os -Wall -Wextra -Werror -static -s -o $@ $<

# The direct start's program (the first program of a job, before its command): static as jwinit.
$(JWSTART): init/shim/jwdirect.c init/shim/jwshim.c init/shim/jwshim.h init/shim/forwarded_signals.h init/shim/jw_report.h | tools
	mkdir -p build
	gcc -O2 -Wall -Wextra -Werror -static -s -o $@ init/shim/jwdirect.c init/shim/jwshim.c

shim: $(SHIM) $(JWINIT) $(JWSTART)

proto: deps
	$(DENO) task proto

certs/ca-cert.pem: | deps
	$(DENO) run -A main.ts certs --out certs

certs: certs/ca-cert.pem

build: deps shim
	bash scripts/build.sh "$(DENO)"

# Puts `jobworker` on PATH (PREFIX=/usr/local by default): a link to this checkout's bin/jobworker.
PREFIX ?= /usr/local
install-client: build
	mkdir -p $(PREFIX)/bin && ln -sf $(CURDIR)/bin/jobworker $(PREFIX)/bin/jobworker

# Serves in the foreground (Ctrl-C stops it and its jobs); bin/jobworker is ready for a second terminal.
serve: build certs
	@echo "jobworker: serving in the foreground; Ctrl-C stops it. Client: $(CURDIR)/bin/jobworker (e.g. bin/jobworker list)"
	JOB_WORKER_STATE_DIR=$${JOB_WORKER_STATE_DIR:-$(CURDIR)/state} JOB_WORKER_CERT_PATH=$${JOB_WORKER_CERT_PATH:-$(CURDIR)/certs} \
	  $(DENO) run -A main.ts serve

# `make install [DESTDIR=...] [PREFIX=/usr/local]`: the compiled binary when `make build` made
# one, else a self-contained directory; plus the systemd unit. `make uninstall [PURGE=1]`.
PREFIX ?= /usr/local
install: deps shim
	@[ -f bin/jobworker ] || $(MAKE) --no-print-directory build
	DESTDIR="$(DESTDIR)" PREFIX="$(PREFIX)" bash scripts/install.sh install "$(DENO)"

uninstall: tools
	DESTDIR="$(DESTDIR)" PREFIX="$(PREFIX)" PURGE="$(PURGE)" bash scripts/install.sh uninstall "$(DENO)"

# `make deploy REMOTE_HOST=host REMOTE_USER=user [REMOTE_PORT=22]`, and deploy-status,
# deploy-logs (live), deploy-certs: see scripts/deploy.sh.
deploy: deps shim certs
	@[ -f bin/jobworker ] || $(MAKE) --no-print-directory build
	bash scripts/deploy.sh deploy "$(DENO)"

deploy-status deploy-logs deploy-certs: tools
	bash scripts/deploy.sh $(@:deploy-%=%) "$(DENO)"

# Programs the tests run inside jobs or beside them.
test-tools:
	@for c in python3 ps openssl unshare hostname timeout strace gcc ping insmod losetup mkfs.ext4 zsh fish promtool sshd ssh ssh-keygen systemd-analyze systemd-nspawn update-ca-certificates; do command -v $$c >/dev/null || missing=1; done; \
	  [ -z "$${missing:-}" ] || (apt-get update -qq && apt-get install -y -qq --no-install-recommends python3 procps openssl ca-certificates util-linux e2fsprogs hostname coreutils strace gcc libc6-dev iputils-ping kmod zsh fish \
	    prometheus openssh-server openssh-client systemd systemd-container)

test: deps shim test-tools bench-tools
	bash tests/run_all.sh "$(DENO)"

test-cgroup-v2: deps shim test-tools
	bash tests/run_cgroup_v2.sh "$(DENO)"

# The peers `make bench` runs beside jobworker: bubblewrap, runc and a static busybox for its bundle.
bench-tools:
	@for c in unshare bwrap runc busybox; do command -v $$c >/dev/null || missing=1; done; /usr/bin/python3 -c "import grpc" 2>/dev/null || missing=1; \
	  [ -z "$${missing:-}" ] || (apt-get update -qq && apt-get install -y -qq --no-install-recommends util-linux bubblewrap runc busybox-static python3-grpcio)

# `make bench [QUICK=1]`: the table, JSON under bench/results/; fails when a ratio is worse than 2x
# its recorded value (bench/recorded.json, per kind of machine). `make bench-record [QUICK=1]`
# rewrites this machine's record from the median of three runs.
BENCH_ARGS = $(if $(filter 1 yes true,$(QUICK)),--quick)
bench: deps shim bench-tools
	$(DENO) run -A bench/main.ts $(BENCH_ARGS)

bench-record: deps shim bench-tools
	$(DENO) run -A bench/main.ts --record $(BENCH_ARGS)

# The suite's fuzz test (tests/fuzz_test.ts) at ten times its size; FUZZ_SEED=N replays a run.
fuzz: deps shim test-tools
	FUZZ_REQUESTS=$${FUZZ_REQUESTS:-100000} $(DENO) test -A --no-prompt tests/fuzz_test.ts

fmt:
	$(DENO) fmt

lint:
	$(DENO) lint

check:
	$(DENO) check main.ts tests/ bench/

ok: deps
	$(DENO) fmt --check && $(DENO) lint && $(DENO) check main.ts tests/ && $(DENO) run -A proto/generate.ts --check

clean:
	rm -rf build bin
