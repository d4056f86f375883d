# syntax=docker/dockerfile:1
# Multi-stage build: compile with the full Rust toolchain, ship only the binary on a small
# runtime image that runs as a non-root user.

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY crates ./crates
COPY migrations ./migrations
# There is no separate dependency layer: the sources are copied before the build, so any change
# invalidates this step. What saves the rebuild is BuildKit's cache mounts: the crates.io
# downloads and `target/` persist between builds on the same builder, so cargo recompiles only
# the crates that changed. A builder without that cache (a fresh CI runner) compiles everything.
# `target/` is a mount, so the binary is copied out of it within this step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p registrar \
    && cp target/release/registrar /usr/local/bin/registrar

# distroless/cc: glibc, libgcc and CA certificates; no shell, no package manager, no curl.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /usr/local/bin/registrar /usr/local/bin/registrar
ENV REGISTRAR_LISTEN=0.0.0.0:8080 \
    REGISTRAR_LOG_FORMAT=json
EXPOSE 8080
# distroless's `nonroot` user, by number so that runtimes can tell it is not root without
# reading the image's /etc/passwd (Kubernetes' runAsNonRoot needs a numeric user).
USER 65532:65532
# The binary is its own probe (there is no curl): it asks /readyz on REGISTRAR_LISTEN and exits
# 0 when it answers 200 within 3 s. The start period covers start-up waiting for PostgreSQL
# (REGISTRAR_DATABASE_STARTUP_TIMEOUT, 30 s) and applying migrations.
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
    CMD ["/usr/local/bin/registrar", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/registrar"]
CMD ["serve"]
