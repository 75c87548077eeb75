# syntax=docker/dockerfile:1
# The controller image: one static (musl) binary on distroless/static, running as a non-root user.
#   docker build -t ghcr.io/nodesmith/nodesmith:$(cargo pkgid | cut -d'#' -f2) .
# Multi-arch: docker buildx build --platform linux/amd64,linux/arm64 ... (Alpine's Rust targets the build
# platform's musl, so each platform builds natively or under emulation).

FROM rust:1.95-alpine AS build
# aws-lc-rs (TLS) compiles C: a C toolchain, cmake and perl.
RUN apk add --no-cache musl-dev build-base cmake perl
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin nodesmith && cp target/release/nodesmith /nodesmith

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /nodesmith /nodesmith
# distroless's nonroot user; the chart runs the pod as the same uid with a read-only root filesystem.
USER 65532:65532
ENTRYPOINT ["/nodesmith"]
CMD ["controller"]
