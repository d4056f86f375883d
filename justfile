# Registrar's everyday commands. `just` alone lists them.

# List the recipes.
default:
    @just --list

# Run the service: in-memory store, activation codes in the log, on 127.0.0.1:8080.
run *ARGS:
    cargo run -p registrar -- {{ARGS}}

# Run every test (the README's test command).
test:
    cargo test --workspace

# Clippy with warnings as errors.
lint:
    cargo clippy --workspace --all-targets -- -D warnings

# Format the code.
fmt:
    cargo fmt --all

# Check the formatting.
fmt-check:
    cargo fmt --all --check

# Licences, sources and banned crates (including the layering wrappers).
deny:
    cargo deny check bans licenses sources

# Everything CI runs.
ci: fmt-check lint deny test (fuzz "10")

# Benchmark: 201 → SMTP acceptance of the activation email over 1,000 registrations (needs PostgreSQL).
bench-mail:
    cargo build --release -p registrar && cargo bench -p registrar --bench mail_latency

# Benchmark: ten times more concurrent registrations than the hashing pool serves (201/503, RSS).
bench-overload:
    cargo build --release -p registrar && cargo bench -p registrar --bench overload

# Capacity against the Argon2 bound, in one run: throughput and latency by clients (server pinned to CPU 0, PostgreSQL and the driver on CPU 1), bursts, RSS, /healthz under load, the whole machine; rewrites docs/benchmarks.md and docs/benchmarks.svg.
bench:
    cargo build --release -p registrar && cargo run --release -p registrar-bench --bin capacity

# Fuzz every parser for SECONDS each (needs `cargo install --locked cargo-fuzz`).
fuzz SECONDS="60":
    fuzz/run {{SECONDS}}

# Deployment files without a cluster or Docker: render and validate the Kubernetes manifests, lint the Dockerfile and the compose file.
deploy-check:
    deploy/check
