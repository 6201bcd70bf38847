# Ringside tasks. Run them through ./dev (which installs everything first): ./dev <recipe>

set dotenv-load := false

host := env_var_or_default("RINGSIDE_HOST", "127.0.0.1")
port := env_var_or_default("RINGSIDE_PORT", "8000")
workers := env_var_or_default("RINGSIDE_WORKERS", "1")

# List the recipes.
default:
    @just --list

# Install the project and its tools into .venv (./dev does this on first use).
setup:
    python -m pip install --quiet -e '.[dev]'

# Apply pending SQL migrations (the gateway also does this at start-up).
migrate:
    ringside migrate

# Run the gateway: Hypercorn with Trio workers, draining streams for up to 10 s on SIGTERM.
serve:
    exec hypercorn -k trio --bind {{host}}:{{port}} --workers {{workers}} --graceful-timeout 10 ringside:app

# Try it with no provider key: the upstream simulator and the gateway on {{host}}:{{port}}, a
# developer and a ready-to-paste SDK snippet with its key (also in .ringside-demo/api-key, once
# everything is ready). Ctrl-C or SIGTERM stops it all.
demo:
    @exec python -m tests.demo --host {{host}} --port {{port}}

# Run a background worker (python -m workers NAME); lists them without a name.
worker *names:
    python -m workers {{names}}

# Lint and check formatting.
lint:
    ruff check ringside workers tests bench
    ruff format --check ringside workers tests bench

# Static types (strict over ringside/ and workers/).
typecheck:
    mypy

# The whole test suite against real PostgreSQL and Redis (embedded unless DATABASE_URL /
# REDIS_URL are set) and the upstream simulator.
test *args:
    python -m pytest {{args}}

# The benchmark: simulator vs stack floor vs gateway, and memory at 1,000 open streams.
bench *args:
    @command -v wrk >/dev/null || sh bench/install-wrk.sh
    python -m bench {{args}}

# Everything CI runs.
check: lint typecheck test
