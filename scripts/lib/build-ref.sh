# Sourced by the bench scripts: builds one git revision of mota for an A/B ("before/after" of a
# change, in the same run). `build_ref REF BUILD_PREFIX TARGET...` exports REF's tree (git archive:
# committed files only) to BUILD_PREFIX-src-LABEL, builds TARGETs there (Release, benchmarks on,
# tests off) in BUILD_PREFIX-LABEL, and prints that build directory. REF "." is the working tree
# as it is (no export). LABEL is REF's short commit hash ("." for the working tree: "work").

ref_label() {
  if [ "$1" = . ]; then echo work; else git rev-parse --short "$1^{commit}"; fi
}

build_ref() {
  local ref="$1" prefix="$2"
  shift 2
  local label src dir
  label="$(ref_label "$ref")"
  if [ "$ref" = . ]; then
    src="$root"
  else
    src="$root/$prefix-src-$label"
    if [ ! -f "$src/.exported" ]; then
      rm -rf "$src"
      mkdir -p "$src"
      git -C "$root" archive "$label" | tar -x -C "$src"
      touch "$src/.exported"
    fi
  fi
  dir="$root/$prefix-$label"
  cmake -S "$src" -B "$dir" -DCMAKE_BUILD_TYPE=Release -DMOTA_BUILD_TESTS=OFF \
    -DMOTA_BUILD_BENCH=ON >/dev/null
  cmake --build "$dir" -j "$(nproc)" --target "$@" >/dev/null
  echo "$dir"
}
