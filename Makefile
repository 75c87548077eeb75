# Entry points. `make test` is what CI runs (.ci/run); it installs and starts what it needs by itself.
.PHONY: all build lint unit test sandbox-up sandbox-down sandbox-status demo clean

CARGO ?= cargo

all: build

build:
	$(CARGO) build --workspace --all-targets

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

unit:
	$(CARGO) test --workspace

# Lint, unit tests, then the sandbox tests against a sandbox it starts and always stops.
test:
	scripts/test

sandbox-up:
	scripts/sandbox up

sandbox-down:
	scripts/sandbox down

sandbox-status:
	scripts/sandbox status

demo:
	scripts/demo

clean: sandbox-down
	$(CARGO) clean
