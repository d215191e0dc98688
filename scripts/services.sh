#!/usr/bin/env bash
# Makes sure a PostgreSQL and a Redis that leadorch can use are reachable.
#
#   source scripts/services.sh   # exports LEADORCH_DATABASE_URL and LEADORCH_REDIS_URL
#   scripts/services.sh          # only sets things up; prints `export ...` lines on
#                                # stdout, so `eval "$(scripts/services.sh)"` also works
#
# PostgreSQL, first that works:
#   a) $LEADORCH_DATABASE_URL, if its host:port accepts connections;
#   b) 127.0.0.1:$LEADORCH_DEV_PG_DEFAULT_PORT (5432), if a passwordless login as
#      `postgres` works there (an open port is enough when psql is not installed);
#   c) a Debian cluster /etc/postgresql/<ver>/main configured for that port, started with
#      pg_ctlcluster, if it then allows a passwordless TCP login (stock Debian does not);
#   d) a private trust-auth cluster in $LEADORCH_DEV_DIR/pg on 127.0.0.1:$LEADORCH_DEV_PG_PORT
#      (55432), created with initdb on first use (PostgreSQL is apt-get installed if missing).
# Redis, first that works:
#   a) $LEADORCH_REDIS_URL, if reachable;
#   b) 127.0.0.1:$LEADORCH_DEV_REDIS_DEFAULT_PORT (6379), if it answers PING;
#   c) a private redis-server on 127.0.0.1:$LEADORCH_DEV_REDIS_PORT (56379), data and log
#      in $LEADORCH_DEV_DIR/redis (redis-server is apt-get installed if missing).
# LEADORCH_DEV_DIR defaults to <repo>/.dev-services. Everything is idempotent: a second run
# finds what the first one started. Each step prints one line on stderr.
#
# Stop the private services:
#   runuser -u postgres -- /usr/lib/postgresql/<ver>/bin/pg_ctl stop -D <dev dir>/pg
#   redis-cli -p 56379 shutdown
#
# The work runs in a subshell, so sourcing this file leaks no shell options, traps,
# functions or variables besides the two exported URLs.

if [ -z "${BASH_VERSION:-}" ]; then
    echo "services.sh: needs bash" >&2
    # shellcheck disable=SC2317 # reached when executed rather than sourced
    return 1 2>/dev/null || exit 1
fi

__leadorch_services() (
    # Callers run this inside `if`, where bash ignores errexit even when it is set again
    # here, so every step checks its own status instead of relying on `set -e`.
    set -uo pipefail
    repo=$1
    PATH=$PATH:/usr/sbin:/sbin

    log() { printf '%s\n' "$*" >&2; }
    die() {
        log "$*"
        exit 1
    }
    have() { command -v "$1" >/dev/null 2>&1; }

    have timeout || die "services: \`timeout\` (coreutils) is required"

    devdir=${LEADORCH_DEV_DIR:-$repo/.dev-services}
    [[ $devdir == /* ]] || devdir=$PWD/$devdir
    # Created only when something is put there.
    ensure_devdir() { mkdir -p "$devdir" || die "services: cannot create $devdir"; }
    scratch=$(mktemp) || die "services: mktemp failed"
    trap 'rm -f "$scratch"' EXIT

    # Prints the last lines of the scratch file (output of the last external command).
    scratch_tail() { tail -n "${1:-15}" "$scratch" | sed 's/^/    /' >&2; }

    # `wait_until SECONDS cmd...`: retries cmd every 0.5 s until it succeeds or time is up.
    wait_until() {
        local deadline=$((SECONDS + $1))
        shift
        until "$@"; do
            ((SECONDS < deadline)) || return 1
            sleep 0.5
        done
    }

    # `tcp_open HOST PORT`: does HOST:PORT accept a TCP connection (within 2 s)?
    tcp_open() {
        # shellcheck disable=SC2016 # expanded by the inner bash
        timeout 2 "$BASH" -c 'exec 3<>"/dev/tcp/$1/$2"' _ "$1" "$2" </dev/null >/dev/null 2>&1
    }

    # `endpoint_open HOST PORT KIND`: TCP check, or socket-file check if HOST is a directory.
    endpoint_open() {
        if [[ $1 == /* ]]; then
            if [[ $3 == postgres ]]; then [[ -S $1/.s.PGSQL.$2 ]]; else [[ -S $1 ]]; fi
        else
            tcp_open "$1" "$2"
        fi
    }

    redis_pong() {
        # shellcheck disable=SC2016 # expanded by the inner bash
        timeout 3 "$BASH" -c '
            exec 3<>"/dev/tcp/$1/$2" || exit 1
            printf "PING\r\n" >&3
            IFS= read -r -t 2 reply <&3 || exit 1
            [[ $reply == "+PONG"* ]]' _ "$1" "$2" </dev/null >/dev/null 2>&1
    }

    # `parse_endpoint URL DEFAULT_PORT`: sets ep_host and ep_port. Understands
    # scheme://[user[:pw]@]host[:port][,host2...][/db][?host=...&port=...], [v6] hosts,
    # unix sockets (host is a directory, unix:// or redis+unix://) and libpq key=value strings.
    parse_endpoint() {
        local url=$1 rest hp
        ep_host='' ep_port='' ep_label=''
        if [[ $url == *://* ]]; then
            rest=${url#*://}
            case ${url%%://*} in
            unix | redis+unix)
                ep_host=${rest%%\?*}
                ep_port=0
                ep_label="$ep_host (socket)"
                return 0
                ;;
            esac
            hp=${rest%%[/?#]*}
            hp=${hp##*@}
            hp=${hp%%,*}
            if [[ $hp == \[* ]]; then
                ep_host=${hp#\[}
                ep_host=${ep_host%%]*}
                ep_port=${hp##*]}
                ep_port=${ep_port#:}
            else
                ep_host=${hp%%:*}
                [[ $hp == *:* ]] && ep_port=${hp#*:}
            fi
            if [[ $rest == *\?* ]]; then
                local query="&${rest#*\?}"
                [[ -z $ep_host && $query =~ \&host=([^\&]*) ]] && ep_host=${BASH_REMATCH[1]%%,*}
                [[ -z $ep_port && $query =~ \&port=([0-9]+) ]] && ep_port=${BASH_REMATCH[1]}
            fi
            ep_host=${ep_host//%2[Ff]//}
        else
            [[ " $url" =~ [[:space:]]host=([^[:space:],]*) ]] && ep_host=${BASH_REMATCH[1]}
            [[ " $url" =~ [[:space:]]port=([0-9]+) ]] && ep_port=${BASH_REMATCH[1]}
        fi
        ep_host=${ep_host:-127.0.0.1}
        ep_port=${ep_port:-$2}
        case $ep_host in
        /*) ep_label="$ep_host (socket)" ;;
        *:*) ep_label="[$ep_host]:$ep_port" ;;
        *) ep_label="$ep_host:$ep_port" ;;
        esac
    }

    # ------------------------------------------------------------------ installing

    # `apt_install WHAT PACKAGE...` (needs root or password-less sudo).
    apt_install() {
        local what=$1 aptlog=$devdir/apt.log
        shift
        ensure_devdir
        local -a sudo=()
        have apt-get || {
            log "$what: apt-get is not available; install $* yourself"
            return 1
        }
        if ((EUID != 0)); then
            if have sudo && timeout 10 sudo -n true </dev/null >/dev/null 2>&1; then
                sudo=(sudo -n)
            else
                log "$what: need root (or password-less sudo) to apt-get install $*"
                return 1
            fi
        fi
        log "$what: installing $* with apt-get (output in $aptlog)"
        # Output goes to a file: services started by the packages' scripts must not hold
        # on to our stdout/stderr, which may be a pipe someone waits on.
        if ! "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive timeout 900 \
            apt-get -o DPkg::Lock::Timeout=120 update </dev/null >"$aptlog" 2>&1; then
            log "$what: apt-get update failed:"
            tail -n 15 "$aptlog" | sed 's/^/    /' >&2
            return 1
        fi
        if ! "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive timeout 1800 \
            apt-get -o DPkg::Lock::Timeout=120 install -y --no-install-recommends "$@" \
            </dev/null >>"$aptlog" 2>&1; then
            log "$what: apt-get install $* failed:"
            tail -n 15 "$aptlog" | sed 's/^/    /' >&2
            return 1
        fi
    }

    # ------------------------------------------------------------------ PostgreSQL

    psql_bin() {
        local p
        if have psql; then
            command -v psql
            return 0
        fi
        p=$(printf '%s\n' /usr/lib/postgresql/*/bin/psql | sort -V | tail -n 1)
        [[ -x $p ]] && printf '%s\n' "$p"
    }

    # `pg_login_ok HOST PORT`: can we log in as postgres without a password?
    # Sets pg_login_error on failure. Without psql an open port has to do.
    pg_login_ok() {
        local psql
        pg_login_error=
        psql=$(psql_bin) || return 0
        # No password from the environment or ~/.pgpass: the URL we export carries none.
        if ! env -u PGPASSWORD -u PGSERVICE -u PGSERVICEFILE -u PGOPTIONS PGPASSFILE=/dev/null \
            PGCONNECT_TIMEOUT=5 timeout 10 "$psql" -X -w -q -A -t -h "$1" -p "$2" -U postgres \
            -d postgres -c 'select 1' </dev/null >"$scratch" 2>&1; then
            pg_login_error=$(grep -m1 . "$scratch" || echo "psql failed")
            return 1
        fi
    }

    pg_url() { printf 'postgres://postgres@%s:%s/leadorch\n' "$1" "$2"; }

    # Newest server bin dir, or the one of the given major version.
    pg_bindir() {
        local d found='' dirs
        if [[ -n ${1:-} ]]; then dirs=("/usr/lib/postgresql/$1/bin"); else dirs=(/usr/lib/postgresql/*/bin); fi
        while IFS= read -r d; do
            [[ -x $d/initdb && -x $d/pg_ctl && -x $d/postgres ]] && found=$d
        done < <(printf '%s\n' "${dirs[@]}" | sort -V)
        [[ -n $found ]] && printf '%s\n' "$found"
    }

    # PostgreSQL refuses to run as root: as root, run its tools as the postgres user.
    as_pg() {
        if ((EUID == 0)); then
            (cd / && runuser -u postgres -- "$@")
        else
            (cd / && "$@")
        fi
    }

    try_debian_cluster() { # HOST PORT
        local conf ver port
        for conf in /etc/postgresql/*/main/postgresql.conf; do
            [[ -f $conf ]] || continue
            ver=${conf#/etc/postgresql/}
            ver=${ver%%/*}
            port=$(sed -n 's/^[[:space:]]*port[[:space:]]*=[[:space:]]*\([0-9][0-9]*\).*/\1/p' "$conf" | tail -n 1)
            port=${port:-5432}
            if [[ $port != "$2" ]]; then
                log "postgres: skipping Debian cluster $ver/main (it is configured for port $port, not $2)"
                continue
            fi
            if ! have pg_ctlcluster; then
                log "postgres: found Debian cluster $ver/main but no pg_ctlcluster; skipping it"
                continue
            fi
            if ! timeout 90 pg_ctlcluster --skip-systemctl-redirect "$ver" main start \
                </dev/null >"$scratch" 2>&1; then
                log "postgres: could not start Debian cluster $ver/main:"
                scratch_tail 5
                continue
            fi
            if ! wait_until 30 tcp_open "$1" "$2"; then
                log "postgres: started Debian cluster $ver/main but $1:$2 does not accept connections"
                continue
            fi
            if pg_login_ok "$1" "$2"; then
                log "postgres: started Debian cluster $ver/main; using $1:$2"
                db_url=$(pg_url "$1" "$2")
                return 0
            fi
            log "postgres: started Debian cluster $ver/main, but it refuses a passwordless TCP login as postgres ($pg_login_error); using a private cluster instead"
            return 1
        done
        return 1
    }

    start_private_pg() {
        local port=${LEADORCH_DEV_PG_PORT:-55432} host=127.0.0.1
        local bindir pgdir ver running_port sockdir

        bindir=$(pg_bindir)
        if [[ -z $bindir ]]; then
            apt_install postgres postgresql || die "postgres: no PostgreSQL server binaries under /usr/lib/postgresql/*/bin"
            bindir=$(pg_bindir) || die "postgres: installed postgresql but found no server binaries under /usr/lib/postgresql/*/bin"
        fi

        ensure_devdir
        pgdir=$devdir/pg
        if ((EUID == 0)); then
            if ! id -u postgres >/dev/null 2>&1; then
                useradd --system --user-group --no-create-home --home-dir /var/lib/postgresql \
                    --shell /usr/sbin/nologin postgres || die "postgres: could not create the postgres OS user"
                log "postgres: created the postgres OS user"
            fi
            if ! (cd / && runuser -u postgres -- test -x "$devdir") 2>/dev/null; then
                pgdir=/var/tmp/leadorch-dev-pg
                log "postgres: $devdir is not reachable for the postgres OS user; using $pgdir for the private cluster"
            fi
        fi
        [[ $pgdir != *\'* ]] || die "postgres: the data directory path must not contain a single quote: $pgdir"

        if [[ ! -d $pgdir ]]; then
            mkdir -p "$pgdir" || die "postgres: cannot create $pgdir"
        fi
        if ((EUID == 0)) && [[ $(stat -c %U "$pgdir") != postgres ]]; then
            chown -R postgres:postgres "$pgdir" || die "postgres: cannot chown $pgdir to postgres"
        fi
        chmod 700 "$pgdir" 2>/dev/null || true

        if [[ -f $pgdir/PG_VERSION ]]; then
            ver=$(<"$pgdir/PG_VERSION")
            bindir=$(pg_bindir "$ver") ||
                die "postgres: $pgdir was made by PostgreSQL $ver, whose server binaries are missing; install postgresql-$ver or delete $pgdir"
        else
            if [[ -n $(ls -A "$pgdir") ]]; then
                die "postgres: $pgdir is neither empty nor a PostgreSQL data directory (an interrupted initdb?); delete it and retry"
            fi
            if ! as_pg timeout 120 "$bindir/initdb" -D "$pgdir" --auth=trust -U postgres -E UTF8 \
                --no-locale --no-sync </dev/null >"$scratch" 2>&1; then
                log "postgres: initdb failed:"
                scratch_tail
                exit 1
            fi
            # A throwaway dev/test cluster: trade durability for speed.
            cat >>"$pgdir/postgresql.conf" <<'EOF' || die "postgres: cannot write $pgdir/postgresql.conf"

# Added by scripts/services.sh (dev/test cluster; durability traded for speed).
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = 200
EOF
            log "postgres: initialised a private cluster in $pgdir ($("$bindir/postgres" --version))"
        fi

        if as_pg "$bindir/pg_ctl" status -D "$pgdir" </dev/null >/dev/null 2>&1; then
            running_port=$(as_pg sed -n 4p "$pgdir/postmaster.pid" 2>/dev/null)
            running_port=${running_port:-$port}
            if wait_until 30 tcp_open "$host" "$running_port" && pg_login_ok "$host" "$running_port"; then
                log "postgres: using the private cluster on $host:$running_port (already running)"
                db_url=$(pg_url "$host" "$running_port")
                return 0
            fi
            die "postgres: the private cluster in $pgdir is running but $host:$running_port is not usable ${pg_login_error:+($pg_login_error)}; stop it with: pg_ctl stop -D $pgdir"
        fi

        if tcp_open "$host" "$port"; then
            if pg_login_ok "$host" "$port"; then
                log "postgres: using $host:$port (already running; not the cluster in $pgdir)"
                db_url=$(pg_url "$host" "$port")
                return 0
            fi
            die "postgres: port $port is taken by something that is not a usable PostgreSQL; set LEADORCH_DEV_PG_PORT to another port"
        fi

        # Unix socket next to the data, unless the path is too long for a socket address
        # (then TCP only; pg_ctl -w does not need the socket).
        sockdir=$pgdir
        ((${#pgdir} + 18 <= 100)) || sockdir=
        if ! as_pg timeout 90 "$bindir/pg_ctl" start -w -t 60 -D "$pgdir" -l "$pgdir/postgres.log" \
            -o "-c listen_addresses=$host -p $port -k '$sockdir'" </dev/null >"$scratch" 2>&1; then
            log "postgres: could not start the private cluster in $pgdir:"
            scratch_tail 5
            as_pg tail -n 15 "$pgdir/postgres.log" 2>/dev/null | sed 's/^/    /' >&2
            exit 1
        fi
        wait_until 30 tcp_open "$host" "$port" ||
            die "postgres: the private cluster started but $host:$port does not accept connections (log: $pgdir/postgres.log)"
        wait_until 10 pg_login_ok "$host" "$port" ||
            die "postgres: cannot log in to the private cluster on $host:$port: $pg_login_error"
        log "postgres: started a private cluster on $host:$port (data and log in $pgdir)"
        db_url=$(pg_url "$host" "$port")
    }

    ensure_postgres() {
        local host=127.0.0.1 port=${LEADORCH_DEV_PG_DEFAULT_PORT:-5432}
        if [[ -n ${LEADORCH_DATABASE_URL:-} ]]; then
            parse_endpoint "$LEADORCH_DATABASE_URL" 5432
            if endpoint_open "$ep_host" "$ep_port" postgres; then
                log "postgres: using LEADORCH_DATABASE_URL ($ep_label accepts connections)"
                db_url=$LEADORCH_DATABASE_URL
                return 0
            fi
            log "postgres: LEADORCH_DATABASE_URL points at $ep_label, which does not accept connections; ignoring it"
        fi
        if tcp_open "$host" "$port"; then
            if pg_login_ok "$host" "$port"; then
                log "postgres: using $host:$port (already running)"
                db_url=$(pg_url "$host" "$port")
                return 0
            fi
            log "postgres: $host:$port is open but a passwordless login as postgres fails ($pg_login_error); not using it"
        else
            try_debian_cluster "$host" "$port" && return 0
        fi
        start_private_pg
    }

    # ------------------------------------------------------------------ Redis

    redis_server_bin() {
        if have redis-server; then
            command -v redis-server
        elif [[ -x /usr/bin/redis-server ]]; then
            echo /usr/bin/redis-server
        else
            return 1
        fi
    }

    ensure_redis() {
        local host=127.0.0.1 port=${LEADORCH_DEV_REDIS_DEFAULT_PORT:-6379}
        local own_port=${LEADORCH_DEV_REDIS_PORT:-56379} rdir=$devdir/redis server d
        if [[ -n ${LEADORCH_REDIS_URL:-} ]]; then
            parse_endpoint "$LEADORCH_REDIS_URL" 6379
            if endpoint_open "$ep_host" "$ep_port" redis; then
                log "redis: using LEADORCH_REDIS_URL ($ep_label accepts connections)"
                redis_url=$LEADORCH_REDIS_URL
                return 0
            fi
            log "redis: LEADORCH_REDIS_URL points at $ep_label, which does not accept connections; ignoring it"
        fi
        if redis_pong "$host" "$port"; then
            log "redis: using $host:$port (already running)"
            redis_url=redis://$host:$port
            return 0
        fi
        if tcp_open "$host" "$port"; then
            log "redis: $host:$port is open but does not answer PING with +PONG; not using it"
        fi
        if redis_pong "$host" "$own_port"; then
            log "redis: using the private redis on $host:$own_port (already running)"
            redis_url=redis://$host:$own_port
            return 0
        fi
        if tcp_open "$host" "$own_port"; then
            die "redis: port $own_port is taken by something that does not answer PING; set LEADORCH_DEV_REDIS_PORT to another port"
        fi
        if ! server=$(redis_server_bin); then
            apt_install redis redis-server || die "redis: redis-server is not installed"
            server=$(redis_server_bin) || die "redis: installed redis-server but cannot find it"
        fi
        mkdir -p "$rdir" || die "redis: cannot create $rdir"
        # redis joins its arguments into config lines, so paths with blanks would break;
        # then run from the directory and use relative paths.
        d=$rdir
        [[ $d == *[[:space:]\"\']* ]] && d=.
        if ! (cd "$rdir" && timeout 30 "$server" --daemonize yes --bind "$host" --port "$own_port" \
            --save "" --appendonly no --dir "$d" --logfile "$d/redis.log" --pidfile "$d/redis.pid" \
            </dev/null >"$scratch" 2>&1); then
            log "redis: could not start redis-server:"
            scratch_tail 5
            exit 1
        fi
        if ! wait_until 15 redis_pong "$host" "$own_port"; then
            log "redis: started redis-server but $host:$own_port does not answer PING; its log:"
            tail -n 15 "$rdir/redis.log" 2>/dev/null | sed 's/^/    /' >&2
            exit 1
        fi
        log "redis: started a private redis on $host:$own_port (log in $rdir/redis.log)"
        redis_url=redis://$host:$own_port
    }

    db_url='' redis_url=''
    # Only the two URLs may reach stdout (the caller reads them from there).
    {
        ensure_postgres
        ensure_redis
    } >&2
    [[ -n $db_url && -n $redis_url ]] || die "services: internal error: no URL determined"
    printf '%s\n%s\n' "$db_url" "$redis_url"
)

__leadorch_services_repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if __leadorch_services_out=$(__leadorch_services "$__leadorch_services_repo"); then
    {
        IFS= read -r LEADORCH_DATABASE_URL
        IFS= read -r LEADORCH_REDIS_URL
    } <<<"$__leadorch_services_out"
    export LEADORCH_DATABASE_URL LEADORCH_REDIS_URL
    __leadorch_services_rc=0
else
    echo "services: could not provide PostgreSQL and Redis (see above)" >&2
    __leadorch_services_rc=1
fi
unset -f __leadorch_services
unset __leadorch_services_repo __leadorch_services_out

if (return 0 2>/dev/null); then
    # Sourced: hand back the status without leaving helper variables behind.
    eval "unset __leadorch_services_rc; return $__leadorch_services_rc"
else
    if [ "$__leadorch_services_rc" = 0 ]; then
        printf 'export LEADORCH_DATABASE_URL=%q\n' "$LEADORCH_DATABASE_URL"
        printf 'export LEADORCH_REDIS_URL=%q\n' "$LEADORCH_REDIS_URL"
    fi
    exit "$__leadorch_services_rc"
fi
