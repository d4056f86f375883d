# Registrar's everyday commands. `just` alone lists them.

# The RustSec advisory database snapshot `deny` reads; CI keeps it beside the checkout.
advisory_db := env_var_or_default("ADVISORY_DB_SNAPSHOT", "../shared/advisory-db")

# List the recipes.
default:
    @just --list

# Run the service: in-memory store, activation codes in the log, on 127.0.0.1:8080.
run *ARGS:
    cargo run -p registrar -- {{ARGS}}

# Run every test (the README's test command).
test:
    cargo test --workspace

# A PostgreSQL on 127.0.0.1:5432 for cargo test and cargo run (user postgres, no password; data in target/dev-postgres).
db:
    #!/usr/bin/env sh
    set -eu
    if pg_isready -q -h 127.0.0.1 -p 5432 -U postgres 2>/dev/null; then
        echo "a PostgreSQL already answers on 127.0.0.1:5432"; exit 0
    fi
    bin=$(dirname "$(command -v initdb || ls -d /usr/lib/postgresql/*/bin/initdb 2>/dev/null | sort -V | tail -n 1)")
    if [ ! -x "$bin/pg_ctl" ]; then
        echo "no PostgreSQL found: install PostgreSQL (apt-get install postgresql)" >&2; exit 1
    fi
    data="{{justfile_directory()}}/target/dev-postgres"
    run=""
    if [ "$(id -u)" = 0 ]; then run="runuser -u postgres --"; fi
    if [ ! -f "$data/PG_VERSION" ]; then
        mkdir -p "$data"
        if [ -n "$run" ]; then chown postgres: "$data"; fi
        (cd /tmp && $run "$bin/initdb" -D "$data" -U postgres -A trust -E UTF8 --locale=C >/dev/null)
    fi
    (cd /tmp && $run "$bin/pg_ctl" start -w -D "$data" -l "$data/server.log" \
        -o "-c listen_addresses=127.0.0.1 -p 5432 -k '$data'")
    # The database of DATABASE_URL=postgres://postgres@127.0.0.1/registrar (cargo run).
    "$bin/createdb" -h 127.0.0.1 -U postgres registrar 2>/dev/null || true
    echo "PostgreSQL on 127.0.0.1:5432 (stop it with: just db-stop)"

# Stop the development PostgreSQL of `just db`.
db-stop:
    #!/usr/bin/env sh
    set -eu
    data="{{justfile_directory()}}/target/dev-postgres"
    run=""
    if [ "$(id -u)" = 0 ]; then run="runuser -u postgres --"; fi
    bin=$(dirname "$(command -v pg_ctl || ls -d /usr/lib/postgresql/*/bin/pg_ctl 2>/dev/null | sort -V | tail -n 1)")
    (cd /tmp && $run "$bin/pg_ctl" stop -D "$data" -m fast)

# Clippy with warnings as errors.
lint:
    cargo clippy --workspace --all-targets -- -D warnings

# Format the code.
fmt:
    cargo fmt --all

# Check the formatting.
fmt-check:
    cargo fmt --all --check

# The four checks: advisories (read offline from the snapshot), banned crates and the layering
# wrappers, licences, sources. `.ci/run` pins the cargo-deny version that reads the snapshot.

# Every cargo-deny check, offline, advisories from the RustSec snapshot.
deny:
    @test -x "{{advisory_db}}/install" || { echo "just deny: no advisory database snapshot at {{advisory_db}}; set ADVISORY_DB_SNAPSHOT to its folder" >&2; exit 1; }
    "{{advisory_db}}/install" target/advisory-dbs
    cargo fetch --locked
    cargo deny --offline check

# Everything CI runs (`.ci/run` installs the tools, then runs this).
ci: fmt-check lint deny deploy-check test (fuzz "10")

# Benchmark: 201 → SMTP acceptance of the activation email over 1,000 registrations (needs PostgreSQL).
bench-mail:
    cargo build --release -p registrar && cargo bench -p registrar-bench --bench mail_latency

# Benchmark: ten times more concurrent registrations than the hashing pool serves (201/503, RSS).
bench-overload:
    cargo build --release -p registrar && cargo bench -p registrar-bench --bench overload

# Capacity against the Argon2 bound, in one run: throughput and latency by clients (server pinned to CPU 0, PostgreSQL and the driver on CPU 1), bursts, RSS, /healthz under load, the whole machine; rewrites docs/benchmarks.md and docs/benchmarks.svg.
bench:
    cargo build --release -p registrar && cargo run --release -p registrar-bench --bin capacity

# The capacity model, measured in one run: database work per registration, activation and email (pg_stat_statements, WAL), the database ceiling with Argon2 made cheap, 1, 2 and 3 replicas on one database, every email exactly once; rewrites docs/capacity.md. ARGS are its flags (`--help`).
bench-replicas *ARGS:
    cargo build --release -p registrar && cargo run --release -p registrar-bench --bin replicas -- {{ARGS}}

# Fuzz every parser for SECONDS each (needs `cargo install --locked cargo-fuzz`).
fuzz SECONDS="60":
    fuzz/run {{SECONDS}}

# Deployment files without a cluster or Docker: render and validate the Kubernetes manifests, lint the Dockerfile and the compose file.
deploy-check:
    deploy/check
