# lethe: the two commands that matter are `make demo` and `make test`.
SHELL := bash
GO ?= go
ROOT := $(abspath .)
export LETHE_VERSITYGW := $(ROOT)/bin/versitygw
export LETHE_AGE := $(ROOT)/bin/age
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2

.PHONY: help build tools test test-short lint fmt s3 s3-stop demo demo-stop bench bench-stop clean FORCE

help: ## list the targets
	@grep -E '^[a-zA-Z/_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

build: bin/lethe bin/s3dev ## build lethe and the local S3 helper into bin/

bin/lethe: FORCE
	$(GO) build -buildvcs=auto -o $@ ./cmd/lethe

bin/s3dev: FORCE
	$(GO) build -o $@ ./cmd/s3dev

tools: bin/versitygw bin/age bin/age-keygen ## build (or take from cache) versitygw and the age CLI

bin/versitygw: tools/go.mod tools/go.sum
	scripts/build-tool versitygw github.com/versity/versitygw/cmd/versitygw

bin/age: tools/go.mod tools/go.sum
	scripts/build-tool age filippo.io/age/cmd/age

bin/age-keygen: tools/go.mod tools/go.sum
	scripts/build-tool age-keygen filippo.io/age/cmd/age-keygen

test: tools ## run every test against the local PostgreSQL and versitygw
	$(GO) test -count=1 -timeout 25m ./...

test-short: tools ## the tests without the slow end-to-end ones
	$(GO) test -count=1 -short ./...

lint: ## gofmt, go vet and staticcheck
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) run $(STATICCHECK) ./...

fmt: ## format the code
	gofmt -w $$(git ls-files '*.go')

s3: bin/s3dev tools ## start a local versitygw for your own schema on 127.0.0.1:7071 (bucket lethe-archive); credentials in .s3/env
	bin/s3dev start --dir .s3 --addr 127.0.0.1:7071 --prefix v1/ --bucket lethe-archive
	@echo "endpoint and credentials: .s3/env (load them with: set -a; . .s3/env; set +a)"

s3-stop: bin/s3dev ## stop the local versitygw of make s3
	bin/s3dev stop --dir .s3

demo: build tools ## run the whole pipeline on 10,000 synthetic customers, locally
	scripts/demo

demo-stop: bin/s3dev ## stop the demo's S3 server
	bin/s3dev stop --dir .demo/s3

bench: build tools ## lethe bench at 100,000 subjects on local PostgreSQL and versitygw; report in bench/results/
	scripts/bench

bench-stop: bin/s3dev ## stop the bench's S3 server
	bin/s3dev stop --dir .bench/s3

clean: ## remove bin/, the local S3 server's and the demo's state
	-bin/s3dev stop --dir .s3 2>/dev/null
	-bin/s3dev stop --dir .demo/s3 2>/dev/null
	-bin/s3dev stop --dir .bench/s3 2>/dev/null
	rm -rf bin .s3 .demo .bench
