#!/bin/bash
# Entrypoint of localhost/circuitstore-neo4j: runs Neo4j Community in the foreground and honours
# the environment contract of the official `neo4j` image, so that tools written for that image
# (testcontainers' Neo4jContainer, compose files) work unchanged:
#
#   NEO4J_AUTH=neo4j/<password>   sets the initial password before the first start
#   NEO4J_AUTH=none               turns authentication off
#   NEO4J_<setting>               becomes a neo4j.conf setting: the prefix is dropped, `_`
#                                 becomes `.` and `__` becomes `_`
#                                 (NEO4J_server_memory_pagecache_size -> server.memory.pagecache.size)
#                                 Only names with a lower-case letter are settings (every setting
#                                 name is lower case), so NEO4J_AUTH, NEO4J_HOME... are not.
#
# Inside the container the server listens on 0.0.0.0; the log line "Remote interface available
# at" goes to stdout (testcontainers waits for it). Data lives in /data, logs in /logs.
#
# Neo4j's own launcher script is not in the image, so this script does its job: the server is
# started with `java ... org.neo4j.server.CommunityEntryPoint`. Started that way, Neo4j ignores the
# heap settings and server.jvm.additional in neo4j.conf, so both are turned into JVM flags here.
#
# CIRCUITSTORE_ENTRYPOINT_DRY_RUN=1 writes neo4j.conf and prints the java command instead of
# running anything (the unit tests use it).
set -euo pipefail

NEO4J_HOME="${NEO4J_HOME:-/var/lib/neo4j}"
CONF_DIR="$NEO4J_HOME/conf"
DATA_DIR="${CIRCUITSTORE_DATA_DIR:-/data}"
LOGS_DIR="${CIRCUITSTORE_LOGS_DIR:-/logs}"

# The flags Neo4j 5.26's launcher puts on every server JVM (from its default neo4j.conf).
JVM_FLAGS=(
  -XX:+UseG1GC
  -XX:-OmitStackTraceInFastThrow
  -XX:+UnlockExperimentalVMOptions
  -XX:+TrustFinalNonStaticFields
  -XX:+DisableExplicitGC
  -Djdk.nio.maxCachedBufferSize=1024
  -Dio.netty.tryReflectionSetAccessible=true
  -Djdk.tls.ephemeralDHKeySize=2048
  -Djdk.tls.rejectClientInitiatedRenegotiation=true
  --add-opens=java.base/java.nio=ALL-UNNAMED
  --add-opens=java.base/java.io=ALL-UNNAMED
  --add-opens=java.base/sun.nio.ch=ALL-UNNAMED
  --enable-native-access=ALL-UNNAMED
  -Dlog4j2.disable.jmx=true
  -Dfile.encoding=UTF-8
)

die() { echo "docker-entrypoint: error: $*" >&2; exit 1; }

# env_to_setting NAME: prints the neo4j.conf key of a NEO4J_* variable, or nothing.
env_to_setting() {
  local rest="${1#NEO4J_}"
  [[ "$rest" =~ [a-z] ]] || return 0
  rest="${rest//__/$'\x01'}"
  rest="${rest//_/.}"
  echo "${rest//$'\x01'/_}"
}

declare -A SETTINGS=()
declare -a ORDER=()
set_setting() {
  [[ -v "SETTINGS[$1]" ]] || ORDER+=("$1")
  SETTINGS[$1]="$2"
}

defaults() {
  # Reachable through published ports, so every interface inside the container.
  set_setting server.default_listen_address 0.0.0.0
  set_setting server.directories.data "$DATA_DIR"
  set_setting server.directories.logs "$LOGS_DIR"
  set_setting server.directories.import "$NEO4J_HOME/import"
  set_setting server.directories.plugins "$NEO4J_HOME/plugins"
  set_setting server.directories.run "$NEO4J_HOME/run"
  # No network traffic leaves the container on its own.
  set_setting dbms.usage_report.enabled false
  set_setting client.allow_telemetry false
  set_setting server.http.enabled true
  set_setting server.https.enabled false
  set_setting server.bolt.enabled true
  # Netty's default quiet period makes every stop wait 10 s doing nothing.
  set_setting internal.dbms.bolt.netty_server_shutdown_quiet_period 0
  set_setting internal.dbms.bolt.netty_server_shutdown_timeout 2
}

EXTRA_JVM=()
from_environment() {
  local name key
  while IFS= read -r name; do
    key="$(env_to_setting "$name")"
    [ -n "$key" ] || continue
    if [ "$key" = server.jvm.additional ]; then
      # One flag per line, as in neo4j.conf.
      while IFS= read -r flag; do [ -n "$flag" ] && EXTRA_JVM+=("$flag"); done <<<"${!name}"
      continue
    fi
    set_setting "$key" "${!name}"
  done < <(compgen -e | grep '^NEO4J_' | sort)
}

auth() {
  local value="${NEO4J_AUTH:-}"
  PASSWORD=""
  case "$value" in
    "") ;;  # Neo4j's own default: neo4j/neo4j, to be changed at first login.
    none) set_setting dbms.security.auth_enabled false ;;
    neo4j/*)
      PASSWORD="${value#neo4j/}"
      [ "${#PASSWORD}" -ge 8 ] || die "NEO4J_AUTH: the password must be at least 8 characters"
      set_setting dbms.security.auth_enabled true
      ;;
    *) die "NEO4J_AUTH must be 'neo4j/<password>' or 'none' (the user name must be neo4j)" ;;
  esac
}

write_conf() {
  mkdir -p "$CONF_DIR"
  {
    echo "# Written by docker-entrypoint.sh from the image defaults and NEO4J_* variables."
    for key in "${ORDER[@]}"; do echo "$key=${SETTINGS[$key]}"; done
  } >"$CONF_DIR/neo4j.conf"
}

heap_flags() {
  local initial="${SETTINGS[server.memory.heap.initial_size]:-}"
  local max="${SETTINGS[server.memory.heap.max_size]:-}"
  # JVM sizes take k/m/g without a trailing b; Neo4j accepts "512m" and "512MB" alike.
  [ -n "$initial" ] && JVM_FLAGS+=("-Xms$(jvm_size "$initial")")
  [ -n "$max" ] && JVM_FLAGS+=("-Xmx$(jvm_size "$max")")
  return 0
}

jvm_size() {
  local s="${1,,}"
  s="${s%b}"
  s="${s%i}"
  echo "$s"
}

# The password goes to the admin tool in a Java argument file readable by its owner only, never
# on a command line (which any process can read in /proc).
set_initial_password() {
  local dir quoted
  dir=$(umask 077 && mktemp -d)
  # Escaped as Java's argument files want: backslash, quote, and line breaks and tabs.
  quoted=${PASSWORD//\\/\\\\}
  quoted=${quoted//\"/\\\"}
  quoted=${quoted//$'\n'/\\n}
  quoted=${quoted//$'\r'/\\r}
  quoted=${quoted//$'\t'/\\t}
  # `--` ends the options: a password may start with "-".
  printf '"%s"\n' -cp "$NEO4J_HOME/lib/*" org.neo4j.cli.AdminTool dbms set-initial-password -- \
    >"$dir/args"
  printf '"%s"\n' "$quoted" >>"$dir/args"
  local status=0
  # Its output could quote the password: it goes nowhere.
  NEO4J_HOME="$NEO4J_HOME" NEO4J_CONF="$CONF_DIR" java "@$dir/args" >/dev/null 2>&1 || status=$?
  rm -rf "$dir"
  [ "$status" = 0 ] || die "could not set the initial password"
}

# `neo4j-admin ARGS`, as the official image runs it (e.g. `neo4j-admin @/import/neo4j-admin.args`
# for `circuitstore load --import-files`): the admin tool on this image's data folder.
admin() {
  local conf
  conf=$(mktemp -d)
  printf 'server.directories.data=%s\n' "$DATA_DIR" >"$conf/neo4j.conf"
  NEO4J_HOME="$NEO4J_HOME" NEO4J_CONF="$conf" exec java -cp "$NEO4J_HOME/lib/*" \
    org.neo4j.cli.AdminTool "$@"
}

main() {
  if [ "${1:-neo4j}" = neo4j-admin ]; then shift; admin "$@"; fi
  if [ "${1:-neo4j}" != neo4j ]; then exec "$@"; fi
  defaults
  from_environment
  auth
  write_conf
  heap_flags
  JVM_FLAGS+=("${EXTRA_JVM[@]}")
  local cmd=(java "${JVM_FLAGS[@]}" -cp "$NEO4J_HOME/lib/*:$CONF_DIR/*"
    org.neo4j.server.CommunityEntryPoint
    "--home-dir=$NEO4J_HOME" "--config-dir=$CONF_DIR" --console-mode)
  if [ -n "${CIRCUITSTORE_ENTRYPOINT_DRY_RUN:-}" ]; then
    printf '%s\n' "${cmd[@]}"
    return 0
  fi
  mkdir -p "$DATA_DIR" "$LOGS_DIR" "$NEO4J_HOME/run" "$NEO4J_HOME/import" "$NEO4J_HOME/plugins"
  if [ -n "$PASSWORD" ] && [ ! -d "$DATA_DIR/databases/system" ]; then
    # Only before the first start; afterwards the password lives in the system database.
    set_initial_password
  fi
  unset PASSWORD NEO4J_AUTH
  exec "${cmd[@]}"
}

main "$@"
