# qtfs build entry points. `make help` lists them.
GO        ?= go
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -X github.com/qtfs/qtfs/pkg/version.Version=$(VERSION)
BIN       := bin
CMDS      := qtfs-server qtfs-client rexec
PROTO     := proto/qtfs/v1/qtfs.proto

.PHONY: help build test e2e lint proto check-proto demo demo-fs bench deps clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

build: ## build the binaries into bin/
	@mkdir -p $(BIN)
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/ $(addprefix ./cmd/,$(CMDS))

deps: ## install the system packages the tests and the demo need (Debian)
	./scripts/deps.sh

test: deps lint check-proto ## everything CI runs: lint, generated code, all tests (unit, contract, FUSE mounts, e2e)
	$(GO) test -race -count=1 -timeout 40m ./...

e2e: deps ## only the end-to-end tests with the real binaries
	$(GO) test -count=1 -v ./test/e2e/...

lint: ## go vet and gofmt
	$(GO) vet ./...
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

proto: ## regenerate the protobuf code with the pinned generators
	protoc -I proto \
	  --plugin=protoc-gen-go="$$(./scripts/tool.sh protoc-gen-go)" \
	  --plugin=protoc-gen-go-grpc="$$(./scripts/tool.sh protoc-gen-go-grpc)" \
	  --go_out=proto --go_opt=paths=source_relative \
	  --go-grpc_out=proto --go-grpc_opt=paths=source_relative $(PROTO)

check-proto: proto ## fail when the committed generated code is not current
	@git diff --exit-code -- proto/ || (echo "generated code is stale: run make proto and commit" && exit 1)

demo: deps build ## the offload on this machine: host and DPU in namespaces, dockerd on the DPU runs a container on the host
	./scripts/demo-offload.sh

demo-fs: deps build ## loopback demo of the filesystem alone: a host directory served and mounted on this machine
	./scripts/demo.sh

bench: build ## measure qtfs against the local disk, go-fuse loopback and sshfs (root; BENCH_QUICK=1: one-minute check)
	./scripts/bench.sh

clean: ## remove build output
	rm -rf $(BIN)
