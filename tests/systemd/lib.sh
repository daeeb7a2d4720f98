# shellcheck shell=bash
# Container machinery shared by tests/systemd/run and tests/systemd/reload-variants:
# a Debian root file system per suite (cached as a tar), booted with systemd-nspawn as a
# real systemd PID 1, commands run inside with nsenter.
#
# Callers set before sourcing: REPO, WORK (a fresh directory), and may set SUITE, MACHINE.
# Needs root. Facts behind the recipe: /work/shared/notes/real-systemd-here.md.

CACHE_DIR=${BATON_E2E_CACHE:-/var/cache/baton-e2e}
SUITE=${SUITE:-bookworm}
MACHINE=${MACHINE:-baton-e2e}
# rpm: the .rpm is installed for real inside the container (its own database, its scriptlets
# against the running systemd).
ROOTFS_PKGS=systemd,systemd-sysv,dbus,curl,procps,iproute2,ca-certificates,rpm
ROOTFS_FORMAT=2 # bump to invalidate cached rootfs tarballs
# shellcheck disable=SC2034 # read by the scripts that source this
KNOWN_SUITES="bookworm trixie"

NSPAWN_PID=
LEADER=
declare -a CG_DIRS=()

log() { printf '[e2e %(%T)T] %s\n' -1 "$*" >&2; }
die() { log "ERROR: $*"; exit 2; }

# ---------------------------------------------------------------- host tools
ensure_host_tools() {
    local missing=() pair
    for pair in systemd-nspawn:systemd-container debootstrap:debootstrap curl:curl \
                wrk:wrk rpm:rpm jq:jq nsenter:util-linux pgrep:procps lintian:lintian file:file; do
        command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        log "installing host packages: ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq >/dev/null
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
}

# The Debian mirror this machine's apt uses (never a host name written here):
# BATON_E2E_MIRROR, else the first URIs: of /etc/apt/sources.list.d/*.sources that is not
# the security archive, else the first such `deb` line of /etc/apt/sources.list.
debian_mirror() {
    if [ -n "${BATON_E2E_MIRROR:-}" ]; then
        echo "$BATON_E2E_MIRROR"
        return
    fi
    local uri
    uri=$(grep -h '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null \
        | awk '{ for (i = 2; i <= NF; i++) print $i }' | grep -v -- '-security' | head -1 || true)
    if [ -z "$uri" ] && [ -r /etc/apt/sources.list ]; then
        uri=$(awk '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) { print $i; break } }' \
            /etc/apt/sources.list | grep -v -- '-security' | head -1 || true)
    fi
    [ -n "$uri" ] || die "no Debian mirror in /etc/apt/sources.list.d/*.sources or /etc/apt/sources.list; set BATON_E2E_MIRROR"
    echo "${uri%/}"
}

# -------------------------------------------------------------------- rootfs
rootfs_tar() { # rootfs_tar [SUITE]
    local suite=${1:-$SUITE} key
    key=$(printf '%s|%s|%s|%s' "$suite" "$ROOTFS_PKGS" "$ROOTFS_FORMAT" "$(uname -m)" \
        | sha256sum | cut -c1-12)
    printf '%s/rootfs-%s-%s.tar' "$CACHE_DIR" "$suite" "$key"
}

ensure_rootfs() { # ensure_rootfs [SUITE]
    local suite=${1:-$SUITE} tar tmp mirror t0
    tar=$(rootfs_tar "$suite")
    if [ -s "$tar" ]; then
        log "using cached $suite rootfs $tar"
        return
    fi
    mkdir -p "$CACHE_DIR"
    mirror=$(debian_mirror)
    tmp=$(mktemp -d /var/tmp/baton-rootfs.XXXXXX)
    t0=$SECONDS
    log "building the $suite rootfs (debootstrap, about a minute)"
    if ! debootstrap --variant=minbase --include="$ROOTFS_PKGS" "$suite" "$tmp/root" "$mirror" \
            >"$tmp/debootstrap.log" 2>&1; then
        tail -20 "$tmp/debootstrap.log" >&2
        rm -rf "${tmp:?}"
        die "debootstrap $suite failed"
    fi
    echo "$MACHINE" >"$tmp/root/etc/hostname"
    : >"$tmp/root/etc/machine-id"          # systemd-nspawn supplies one
    rm -rf "$tmp/root/var/cache/apt/archives/"*.deb "$tmp/root/var/lib/apt/lists/"*
    # Keep the boot short and quiet: nothing of these is needed here.
    local u
    for u in apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer fstrim.timer \
             systemd-tmpfiles-clean.timer dpkg-db-backup.timer; do
        ln -sf /dev/null "$tmp/root/etc/systemd/system/$u"
    done
    tar -C "$tmp/root" -cf "$tar.tmp" . && mv "$tar.tmp" "$tar"
    rm -rf "${tmp:?}"
    log "cached the $suite rootfs at $tar ($(du -h "$tar" | cut -f1), $((SECONDS - t0)) s)"
}

# --------------------------------------------------------------- container
# Our own cgroup first: with --keep-unit, nspawn creates payload/ and
# supervisor/ below the caller's cgroup, which may be the root here.
enter_own_cgroup() {
    local h
    for h in /sys/fs/cgroup/systemd /sys/fs/cgroup/unified /sys/fs/cgroup; do
        [ -w "$h/cgroup.procs" ] || continue
        case $(stat -fc %T "$h") in cgroup2fs | cgroupfs) ;; *) continue ;; esac
        mkdir -p "$h/baton-e2e-$$" 2>/dev/null || continue
        if echo $$ >"$h/baton-e2e-$$/cgroup.procs" 2>/dev/null; then
            CG_DIRS+=("$h")
        else
            rmdir "$h/baton-e2e-$$" 2>/dev/null || true
        fi
    done
}

leave_own_cgroup() {
    local h
    for h in "${CG_DIRS[@]}"; do
        echo $$ >"$h/cgroup.procs" 2>/dev/null || true
        # nspawn leaves payload/, supervisor/, payload/init.scope… below it
        find "$h/baton-e2e-$$" -depth -type d -exec rmdir {} \; 2>/dev/null || true
    done
    CG_DIRS=()
}

find_leader() { # the child of nspawn that is pid 1 of the container's pid namespace
    local p ppid nspid
    for p in /proc/[0-9]*; do
        ppid=$(awk '/^PPid:/ { print $2 }' "$p/status" 2>/dev/null) || continue
        [ "$ppid" = "$NSPAWN_PID" ] || continue
        nspid=$(awk '/^NSpid:/ { print $NF }' "$p/status" 2>/dev/null) || continue
        if [ "$nspid" = 1 ]; then
            echo "${p#/proc/}"
            return 0
        fi
    done
    return 1
}

# Run a command inside the container (all namespaces, clean environment).
ct() {
    timeout 120 nsenter -t "$LEADER" -a \
        env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 TERM=dumb SYSTEMD_PAGER= "$@"
}
# Run a host tool in the container's network namespace only.
ctnet() { nsenter -t "$LEADER" -n "$@"; }

# unpack_rootfs ROOT: untar the suite's rootfs into ROOT. boot_container ROOT: boot it with a
# private network; sets NSPAWN_PID, LEADER, SYSTEMD_VERSION.
unpack_rootfs() {
    mkdir -p "$1"
    tar -C "$1" -xf "$(rootfs_tar)"
}

boot_container() {
    local root=$1
    [ ${#CG_DIRS[@]} -gt 0 ] || enter_own_cgroup
    SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1 systemd-nspawn -b -D "$root" -M "$MACHINE" \
        --register=no --keep-unit --private-network --console=pipe \
        </dev/null >"$WORK/console.log" 2>&1 &
    NSPAWN_PID=$!
    LEADER=
    local _
    for _ in $(seq 100); do
        LEADER=$(find_leader) && break
        kill -0 "$NSPAWN_PID" 2>/dev/null || { cat "$WORK/console.log" >&2; die "systemd-nspawn exited"; }
        sleep 0.1
    done
    [ -n "$LEADER" ] || die "container init not found"
    local state
    state=$(ct systemctl is-system-running --wait 2>/dev/null) || true
    SYSTEMD_VERSION=$(ct systemctl --version | awk 'NR == 1 { print $2 }')
    log "container up ($SUITE): leader pid $LEADER, system $state, systemd $SYSTEMD_VERSION"
    if [ "$state" != running ]; then
        ct systemctl --failed --no-legend >&2 || true
    fi
}

stop_container() {
    [ -n "$NSPAWN_PID" ] || return 0
    if kill -0 "$NSPAWN_PID" 2>/dev/null; then
        if [ -n "$LEADER" ]; then
            timeout 20 nsenter -t "$LEADER" -a systemctl poweroff >/dev/null 2>&1 || true
        fi
        local _
        for _ in $(seq 300); do
            kill -0 "$NSPAWN_PID" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$NSPAWN_PID" 2>/dev/null; then
            log "container did not power off; killing its init $LEADER, then nspawn $NSPAWN_PID"
            if [ -n "$LEADER" ]; then kill -9 "$LEADER" 2>/dev/null; fi
            sleep 1
            kill -9 "$NSPAWN_PID" 2>/dev/null || true
        fi
    fi
    wait "$NSPAWN_PID" 2>/dev/null || true
    NSPAWN_PID=
    LEADER=
}

now_ms() { local t; t=$(date +%s%N); echo $((t / 1000000)); }

# stats_ms VALUES...: "min A ms, median B ms, max C ms" over integer values
stats_ms() {
    local sorted n
    sorted=$(printf '%s\n' "$@" | grep -E '^[0-9]+$' | sort -n)
    n=$(grep -c . <<<"$sorted" || true)
    if [ "$n" = 0 ]; then
        echo "no values"
        return
    fi
    printf 'min %s ms, median %s ms, max %s ms (n=%s)' "$(head -1 <<<"$sorted")" \
        "$(sed -n "$(((n + 1) / 2))p" <<<"$sorted")" "$(tail -1 <<<"$sorted")" "$n"
}
median_of() {
    local sorted n
    sorted=$(printf '%s\n' "$@" | grep -E '^[0-9]+$' | sort -n)
    n=$(grep -c . <<<"$sorted" || true)
    [ "$n" -gt 0 ] && sed -n "$(((n + 1) / 2))p" <<<"$sorted"
}
