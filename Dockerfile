# syntax=docker/dockerfile:1
# Multi-stage build: compile with the full Rust toolchain, ship only the binary on a small
# runtime image that runs as a non-root user.

FROM rust:1.95-bookworm AS build
WORKDIR /src
# Manifests first, so the dependency layer is cached until they change.
COPY Cargo.toml Cargo.lock ./
COPY crates ./crates
COPY migrations ./migrations
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p registrar \
    && cp target/release/registrar /usr/local/bin/registrar

# distroless/cc: glibc and libgcc, no shell, no package manager; `nonroot` is uid 65532.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /usr/local/bin/registrar /usr/local/bin/registrar
ENV REGISTRAR_LISTEN=0.0.0.0:8080 \
    REGISTRAR_LOG_FORMAT=json
EXPOSE 8080
USER nonroot:nonroot
ENTRYPOINT ["/usr/local/bin/registrar"]
CMD ["serve"]
