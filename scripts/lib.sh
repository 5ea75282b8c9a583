# Shared by setup.sh and test.sh: source it, do not run it.

say() { printf '\033[1m==>\033[0m %s\n' "$*"; }

# Packages for building Stasis and running its tests on Debian 12.
STASIS_PACKAGES=(
	build-essential gcc pkg-config python3 criu busybox-static iproute2
	nftables procps curl ca-certificates nginx redis-server redis-tools hyperfine
	runc podman netavark iptables
)

need_root() {
	if [[ $(id -u) -ne 0 ]]; then
		echo "$(basename "$0"): run as root" >&2
		exit 1
	fi
}

# Install missing packages (quiet) and make sure cargo is on PATH.
install_deps() {
	local missing=()
	for p in "${STASIS_PACKAGES[@]}"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
	done
	if ((${#missing[@]})); then
		say "installing ${missing[*]}"
		export DEBIAN_FRONTEND=noninteractive
		apt-get update -qq
		apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
		# Services are only used by tests, which start their own instances.
		for s in nginx redis-server; do
			systemctl disable --now "$s" >/dev/null 2>&1 || true
		done
	else
		say "packages already installed"
	fi
	ensure_cargo
}

ensure_cargo() {
	[[ -d $HOME/.cargo/bin ]] && export PATH="$HOME/.cargo/bin:$PATH"
	if ! command -v cargo >/dev/null; then
		say "installing the Rust toolchain (rustup, stable)"
		curl -sSf https://sh.rustup.rs | sh -s -- -y -q --profile minimal >/dev/null
		export PATH="$HOME/.cargo/bin:$PATH"
	fi
}
