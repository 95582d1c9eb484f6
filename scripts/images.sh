#!/usr/bin/env bash
# Builds the project's images from this checkout's binaries, without a Docker engine, and
# pushes them to a registry (plain HTTP): kaito-webhook, kaito-controller, kaito-runtime and
# kaito-adapter.
#
#   scripts/images.sh REGISTRY [TAG]    # e.g. scripts/images.sh "$(tests/cluster/cluster.sh registry)"
#   scripts/images.sh --describe        # print each image's settings as read from its Dockerfile
#
# One source of truth: each image's entrypoint, user, environment, exposed ports, binary path
# and the directories its Dockerfile makes (`mkdir -p`, owned by the image's user) are read from
# the final stage of the release Dockerfile (webhook/, controller/, runtime/, adapter/). What
# differs from a release image, and why:
#   - the binaries are the workspace's debug build ($CARGO_TARGET_DIR/debug, built by the test
#     command; debug info stripped), linked against glibc, so the image carries the shared
#     libraries `ldd` names instead of the distroless or CUDA base;
#   - the runtime is the CPU build (no CUDA on this machine): on a GPU node it serves on the CPU.
# The base supplies what distroless does: /etc/passwd and /etc/group with the images' users,
# CA certificates, a world-writable /tmp and PATH.
#
# Needs buildah (Debian package) and objcopy; runs as root (buildah's vfs storage in a temp dir).
# Prints one line per image: NAME=REGISTRY/NAME:TAG.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
IMAGES=(kaito-webhook:webhook kaito-controller:controller kaito-runtime:runtime kaito-adapter:adapter)
log() { printf '[images] %s\n' "$*" >&2; }
die() { printf '[images] error: %s\n' "$*" >&2; exit 1; }

# The final stage of a Dockerfile as shell assignments: BIN_SRC, BIN_DEST, USER, ENTRYPOINT
# (JSON), ENV (JSON object), EXPOSE (space-separated), DIRS (space-separated).
describe() { # dockerfile
  python3 - "$1" <<'PY'
import json, re, shlex, sys
lines, cur = [], ""
for raw in open(sys.argv[1]):
    line = raw.rstrip("\n")
    if not cur and (not line.strip() or line.lstrip().startswith("#")):
        continue
    if line.endswith("\\"):
        cur += line[:-1] + " "
        continue
    lines.append(cur + line)
    cur = ""
final = []
for l in lines:
    if l.split(None, 1)[0].upper() == "FROM":
        final = []
    else:
        final.append(l)
out = {"BIN_SRC": "", "BIN_DEST": "", "USER": "", "ENTRYPOINT": "", "ENV": {}, "EXPOSE": [], "DIRS": []}
for l in final:
    word, _, rest = l.strip().partition(" ")
    word, rest = word.upper(), rest.strip()
    if word == "COPY" and "--from=build" in rest:
        args = [a for a in rest.split() if not a.startswith("--")]
        out["BIN_SRC"], out["BIN_DEST"] = args[0], args[1]
    elif word == "USER":
        out["USER"] = rest
    elif word == "ENTRYPOINT":
        out["ENTRYPOINT"] = json.dumps(json.loads(rest))
    elif word == "ENV":
        for tok in shlex.split(rest):
            k, _, v = tok.partition("=")
            out["ENV"][k] = v
    elif word == "EXPOSE":
        out["EXPOSE"] += rest.split()
    elif word == "RUN":
        for m in re.finditer(r"mkdir -p ((?:/[^\s&;]+\s*)+)", rest):
            out["DIRS"] += m.group(1).split()
if not (out["BIN_DEST"] and out["USER"] and out["ENTRYPOINT"]):
    sys.exit(f"{sys.argv[1]}: the final stage needs COPY --from=build, USER and ENTRYPOINT")
for k, v in out.items():
    if k == "ENV":
        v = json.dumps(v)
    elif isinstance(v, list):
        v = " ".join(v)
    print(f"{k}={shlex.quote(v)}")
PY
}

if [ "${1:-}" = --describe ]; then
  for spec in "${IMAGES[@]}"; do
    echo "# ${spec%%:*} (${spec#*:}/Dockerfile)"; describe "$root/${spec#*:}/Dockerfile"
  done
  exit 0
fi

[ $# -ge 1 ] || die "usage: $0 REGISTRY [TAG]"
registry=$1 tag=${2:-local}
[ "$(id -u)" = 0 ] || die "building images with buildah's vfs storage needs root here"
command -v buildah >/dev/null || die "buildah is needed (Debian: apt-get install buildah)"
command -v objcopy >/dev/null || die "objcopy is needed (Debian: apt-get install binutils)"
target=${CARGO_TARGET_DIR:-$root/target}/debug

work=$(mktemp -d "${TMPDIR:-/tmp}/kaito-images-XXXXXX")
trap 'buildah "${storage[@]}" rm --all >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
storage=(--storage-driver vfs --root "$work/storage" --runroot "$work/run")
b() { buildah "${storage[@]}" "$@"; }

# The base rootfs every image shares: users, CA certificates, /tmp.
base="$work/base"
mkdir -p "$base/etc/ssl/certs" "$base/tmp"
chmod 1777 "$base/tmp"
cat >"$base/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/sbin/nologin
nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin
kaito:x:10001:10001:kaito:/nonexistent:/usr/sbin/nologin
EOF
cat >"$base/etc/group" <<'EOF'
root:x:0:
nonroot:x:65532:
kaito:x:10001:
EOF
[ -f /etc/ssl/certs/ca-certificates.crt ] && cp /etc/ssl/certs/ca-certificates.crt "$base/etc/ssl/certs/"

t0=$(date +%s)
for spec in "${IMAGES[@]}"; do
  name=${spec%%:*} dir=${spec#*:}
  BIN_SRC="" BIN_DEST="" USER="" ENTRYPOINT="" ENV="" EXPOSE="" DIRS=""
  eval "$(describe "$root/$dir/Dockerfile")"
  bin="$target/${BIN_SRC##*/}"
  [ -x "$bin" ] || die "$bin is missing: build the workspace first (cargo build --workspace --bins)"
  t=$(date +%s)
  stripped="$work/$name.bin"
  objcopy --strip-debug "$bin" "$stripped"
  c=$(b from scratch)
  b copy "$c" "$base" / >/dev/null
  b copy "$c" "$stripped" "$BIN_DEST" >/dev/null
  # The shared libraries the binary loads (glibc and friends), at the paths ldd names.
  for lib in $(ldd "$bin" | grep -o '/[^ ]*'); do
    b copy "$c" "$(readlink -f "$lib")" "$lib" >/dev/null
  done
  for d in $DIRS; do
    mkdir -p "$work/empty"
    b copy --chown "$USER" "$c" "$work/empty" "$d" >/dev/null
  done
  cfg=(--entrypoint "$ENTRYPOINT" --user "$USER" --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
       --label "org.opencontainers.image.source=kaito-rs local build ($dir/Dockerfile)")
  while IFS= read -r kv; do [ -n "$kv" ] && cfg+=(--env "$kv"); done < <(python3 -c 'import json,sys
for k, v in json.loads(sys.argv[1]).items(): print(f"{k}={v}")' "$ENV")
  for p in $EXPOSE; do cfg+=(--port "$p"); done
  b config "${cfg[@]}" "$c"
  b commit -q "$c" "localhost/$name:$tag" >/dev/null
  b rm "$c" >/dev/null
  b push -q --tls-verify=false "localhost/$name:$tag" "docker://$registry/$name:$tag"
  log "$name: $(du -m "$stripped" | cut -f1) MiB binary, built and pushed in $(( $(date +%s) - t ))s"
  echo "$name=$registry/$name:$tag"
done
log "all images pushed to $registry in $(( $(date +%s) - t0 ))s"
