# Shared by scripts/*: make .venv (Python 3.11 or 3.12) and install the package with the given
# extras; the install is redone whenever pyproject.toml or the extras change.
ensure_venv() {
    local extras="$1" py stamp want
    if [ ! -x .venv/bin/python ]; then
        py="$(command -v python3.11 || command -v python3.12 || command -v python3)"
        echo "creating .venv with $py" >&2
        "$py" -m venv .venv
    fi
    stamp=.venv/.perpchain-installed
    want="$(sha256sum pyproject.toml | cut -c1-64) $extras"
    if [ ! -f "$stamp" ] || ! grep -qxF "$want" "$stamp"; then
        echo "installing perpchain[$extras] into .venv" >&2
        .venv/bin/python -m pip install -q --upgrade pip >&2
        .venv/bin/python -m pip install -q -e ".[$extras]" >&2
        echo "$want" >> "$stamp"
    fi
}
